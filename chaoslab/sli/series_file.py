"""An SLI source that reads a per-second series file (NDJSON, one ``SecondStats`` a line).

The load generator appends one line per completed second when given ``series_path``;
this source lets another thread or process (a Chaos Toolkit probe, a second runner)
judge objectives on it. Resolution is one second: a window ``[t0, t1)`` includes the
seconds that *start* inside it. Latencies come from the log histogram (±0.5% per value),
so ``latencies`` is a bucketed view (``exact`` False): ``count_le`` is a lower bound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from chaoslab.errors import SLIError
from chaoslab.sli.base import Counts, HistogramLatencies, LatencyView, SecondStats, SLISource


class SeriesFileSource(SLISource):
    def __init__(self, path: Path, name: str = "load") -> None:
        self.path = Path(path)
        self.name = name

    def start(self) -> None:
        """Nothing to start: the writer owns the measurement."""

    def stop(self) -> None:
        """Nothing to stop."""

    def _rows(self) -> list[SecondStats]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError as exc:
            raise SLIError(f"no SLI series at {self.path}: is the load generator running?") from exc
        rows = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(SecondStats.from_dict(json.loads(line)))
            except (ValueError, KeyError):
                continue  # a line being appended right now; the next read sees it whole
        return rows

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        lo = -math.inf if t0 is None else t0
        hi = math.inf if t1 is None else t1
        return [r for r in self._rows() if lo <= r.t < hi]

    def last_sample_at(self) -> float | None:
        rows = self._rows()
        return rows[-1].t + 1.0 if rows else None

    def counts(self, t0: float, t1: float) -> Counts:
        rows = self.series(t0, t1)
        return Counts(
            total=sum(r.n for r in rows),
            good=sum(r.good for r in rows),
            errors=sum(r.errors for r in rows),
        )

    def latencies(self, t0: float, t1: float) -> LatencyView:
        hist: dict[int, int] = {}
        failures = 0
        for r in self.series(t0, t1):
            failures += r.n - r.good
            for k, v in r.hist.items():
                hist[k] = hist.get(k, 0) + v
        return HistogramLatencies(hist, failures=failures)
