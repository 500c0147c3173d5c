"""SLO checks callable from a Chaos Toolkit python provider.

So that CTK-format experiments get SLO verdicts too, a steady-state probe can call::

    - type: probe
      name: availability-holds
      tolerance: true
      provider:
        type: python
        module: chaoslab.sli.ctk
        func: slo_ok
        arguments:
          slo: {sli: availability, objective: 0.99}
          last: 10s

``slo_ok`` returns a bool (tolerance ``true``); ``slo_check`` returns the result dict
(``verdict``, ``estimate``, ``lower``, ``upper``, ``samples``, ``detail``) for jsonpath or
range tolerances. Both judge the last ``last`` seconds of *complete* seconds.

Where the samples come from: the run's load generator appends its per-second series to
a file (``LoadGenerator(series_path=...)``); the runner puts that path in the run's
configuration under ``chaoslab_sli_series`` (chaostoolkit-lib hands the configuration
to a python provider whose function takes a ``configuration`` argument), or the probe
passes ``series_file``. Nothing goes through the environment, so two runs in one
process never read each other's series. A file works across threads (CTK runs
activities in a thread pool, where context variables do not follow) and survives a
runner crash.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaoslab.errors import InvalidInput, Problem, SLIError
from chaoslab.model.sections import decode_slos
from chaoslab.sli.series_file import SeriesFileSource
from chaoslab.sli.slo import SLIKind, judge
from chaoslab.units import parse_duration

SERIES_KEY = "chaoslab_sli_series"  # in the run's configuration


def slo_check(
    slo: Mapping[str, Any],
    last: str | float = "10s",
    series_file: str | None = None,
    configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Judge one objective over the last ``last`` seconds; return the result as a dict."""
    raw = {"name": "check", **slo}
    parsed = decode_slos([raw], path="arguments.slo")
    if isinstance(parsed, list):
        raise InvalidInput(parsed)
    (objective,) = parsed
    if objective.sli is SLIKind.TIME_TO_RECOVER:
        # Needs the run's fault windows, which only the engine knows.
        raise InvalidInput(
            [
                Problem(
                    path="arguments.slo.sli",
                    message="time-to-recover cannot be checked from a probe",
                    hint="declare it in the experiment's slo: list",
                )
            ]
        )
    path = series_file or (configuration or {}).get(SERIES_KEY)
    if not path:
        raise SLIError(f"no SLI series: pass series_file, or run under chaoslab (configuration {SERIES_KEY})")
    source = SeriesFileSource(Path(path))
    last_s = parse_duration(last)
    rows = [r for r in source.series() if r.complete]
    if not rows:
        raise SLIError(f"the SLI series {path} has no complete second yet")
    end = rows[-1].t + 1.0
    if time.time() - end > max(5.0, last_s):
        raise SLIError(f"the SLI series {path} is stale (last second ended {time.time() - end:.0f}s ago)")
    (result,) = judge([objective], source, {"baseline": (end - last_s, end)})
    out = result.to_dict()
    out.pop("window")
    return out


def slo_ok(
    slo: Mapping[str, Any],
    last: str | float = "10s",
    series_file: str | None = None,
    configuration: Mapping[str, Any] | None = None,
) -> bool:
    """True iff the objective passes (with confidence) over the last ``last`` seconds."""
    return bool(slo_check(slo, last, series_file, configuration)["verdict"] == "pass")
