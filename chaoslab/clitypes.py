"""Click parameter types for every command's numbers and durations: finite only.

``click.FloatRange`` accepts ``nan`` (every comparison with it is false) and ``inf``;
these types refuse both, and durations use the one grammar of ``chaoslab.units``.
A bad value is a usage error: exit code 2, the option named, no traceback.
"""

from __future__ import annotations

import math
from typing import Any

import click

from chaoslab.units import parse_duration


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``10s``, ``500ms``, ``2m`` or a number of seconds; finite, ``>= 0``, bounded."""

    name = "duration"

    def __init__(self, *, positive: bool = False, max_s: float | None = None) -> None:
        self.positive = positive
        self.max_s = max_s

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value) and value >= 0:
            seconds = value  # a default already in seconds
        else:
            try:
                seconds = parse_duration(value, positive=self.positive, max_s=self.max_s)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if self.max_s is not None and seconds > self.max_s:
            self.fail(f"{value!r} is longer than {self.max_s:g}s", param, ctx)
        return seconds


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if rv is not None and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv
