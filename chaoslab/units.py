"""The one duration grammar every file kind and CLI option shares.

A duration is a finite, non-negative number of seconds, written as a number (``3``,
``0.5``) or a number with a unit: ``ms``, ``s``, ``m``, ``h`` or ``d`` (``500ms``,
``2m``, ``1.5h``, ``2d``). ``nan``, ``inf``, booleans, negatives and anything else are
refused, so no deadline, lease or window can be lost to a non-finite value. Callers give
the bounds their field needs (``positive``, ``max_s``).
"""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
HINT = "use e.g. 500ms, 10s, 2m, 1h"
# No field of chaoslab waits longer than a year; a larger value is a typo.
MAX_DURATION_S = 366 * 86400.0


def parse_duration(value: Any, *, positive: bool = False, max_s: float | None = MAX_DURATION_S) -> float:
    """``"500ms"`` → 0.5, ``"2m"`` → 120.0, ``3`` → 3.0. Raises ValueError otherwise.

    The result is always finite and ``>= 0`` (``> 0`` when ``positive``) and at most
    ``max_s`` seconds when given.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} ({HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"not a finite duration: {value!r} ({HINT})")
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} ({HINT})")
    if seconds < 0:
        raise ValueError(f"negative duration: {value!r}")
    if positive and seconds <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    if max_s is not None and seconds > max_s:
        raise ValueError(f"duration {value!r} is longer than the limit of {human(max_s)}")
    return seconds


def human(seconds: float) -> str:
    """``90`` → ``1m30s``; ``0.25`` → ``250ms``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = []
    rest = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    if rest or not out:
        out.append(f"{rest}s")
    return "".join(out)


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (for scores and JSON output)."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def finite_tree(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples) with every non-finite float as None:
    what goes into a JSON file is always valid JSON (``json.dumps`` would write ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_tree(v) for v in value]
    return value
