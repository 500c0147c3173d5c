"""The SLI source contract, and the value types every source returns.

A source measures one service level indicator over time. The engine starts it before the
baseline and stops it after the last window; the SLO judge asks it for windows
``[t0, t1)`` of Unix time. Three sources exist or are planned:

- ``LoadGenerator`` (synthetic requests; exact per-request samples),
- ``ProbeSource`` (any callable sampled at an interval),
- Prometheus (planned): ``counts`` from counter increases over the window, ``latencies``
  from a histogram's ``le`` buckets, ``series`` from a range query at 1 s step. The
  contract avoids anything Prometheus cannot answer: no per-request records, only
  counts, a latency view that may be bucketed (``LatencyView.exact`` is False), and a
  per-second series.

Invariants: every method is safe to call from any thread while the source runs;
``counts``/``latencies`` only include samples whose *scheduled* (or sampled) time lies in
``[t0, t1)``; ``last_sample_at`` is the Unix time of the newest sample, the liveness
signal a guard uses to notice a silent source (``chaoslab.errors.SLIError``).

Latency views count a failed request as slower than any threshold: a request that timed
out or got a 503 was not "served within T". Per-second percentile series (for charts and
the console) are over successful requests only, since a failure has no latency to plot.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslab.errors import SLIError

# Log-bucketed histogram: bucket i holds values in (MIN·γ^(i−1), MIN·γ^i]; reporting the
# bucket's geometric middle bounds the relative error of any quantile by (γ − 1) / 2.
HIST_MIN_S = 1e-6
HIST_GAMMA = 1.01
_LOG_GAMMA = math.log(HIST_GAMMA)


def hist_index(seconds: float) -> int:
    if seconds <= HIST_MIN_S:
        return 0
    return math.ceil(math.log(seconds / HIST_MIN_S) / _LOG_GAMMA)


def hist_value(index: int) -> float:
    """The representative value (geometric middle) of bucket ``index``."""
    if index <= 0:
        return HIST_MIN_S
    return float(HIST_MIN_S * HIST_GAMMA ** (index - 0.5))


def hist_upper(index: int) -> float:
    return float(HIST_MIN_S * HIST_GAMMA**index)


def hist_quantile(hist: Mapping[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for idx in sorted(hist):
        seen += hist[idx]
        if seen >= rank:
            return hist_value(idx)
    return None  # unreachable: ranks never exceed the total


@dataclass(frozen=True, kw_only=True)
class Counts:
    """Outcomes in a window. ``good`` feeds availability, ``errors`` the error rate.

    ``total − good`` may exceed ``errors``: a 404 is not good (not available) and not an
    error of the service (error rate counts 5xx and transport failures only).
    """

    total: int
    good: int
    errors: int


class LatencyView(ABC):
    """The latencies of one window, in seconds; failures count as +infinity."""

    n: int
    exact: bool  # False: bucketed, ``count_le`` is a lower bound

    @abstractmethod
    def count_le(self, threshold_s: float) -> int:
        """How many samples are ≤ ``threshold_s``."""

    @abstractmethod
    def value_at_rank(self, rank: int) -> float:
        """The ``rank``-th smallest sample (1-based)."""


class ExactLatencies(LatencyView):
    def __init__(self, values: Iterable[float]) -> None:
        self.values = sorted(values)
        self.n = len(self.values)
        self.exact = True

    def count_le(self, threshold_s: float) -> int:
        return bisect.bisect_right(self.values, threshold_s)

    def value_at_rank(self, rank: int) -> float:
        return self.values[min(max(rank, 1), self.n) - 1]


class HistogramLatencies(LatencyView):
    """A view over log-histogram buckets plus a count of failures (at +infinity)."""

    def __init__(self, hist: Mapping[int, int], failures: int = 0) -> None:
        self.keys = sorted(k for k, v in hist.items() if v)
        self.cum: list[int] = []
        seen = 0
        for k in self.keys:
            seen += hist[k]
            self.cum.append(seen)
        self.failures = failures
        self.n = seen + failures
        self.exact = False

    def count_le(self, threshold_s: float) -> int:
        # Only buckets entirely below the threshold: a lower bound on the true count.
        i = bisect.bisect_right([hist_upper(k) for k in self.keys], threshold_s)
        return self.cum[i - 1] if i else 0

    def value_at_rank(self, rank: int) -> float:
        i = bisect.bisect_left(self.cum, rank)
        return hist_value(self.keys[i]) if i < len(self.keys) else math.inf


@dataclass(frozen=True, kw_only=True)
class SecondStats:
    """One second of an SLI: counts and percentiles of successful requests' latency."""

    t: float  # Unix time at which this second starts
    n: int
    good: int
    errors: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    hist: Mapping[int, int] = field(default_factory=dict)  # good requests' latency buckets
    complete: bool = True  # False: requests scheduled in this second may still be in flight

    def to_dict(self, *, with_hist: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": round(self.t, 6),
            "n": self.n,
            "good": self.good,
            "errors": self.errors,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "complete": self.complete,
        }
        if with_hist:
            out["hist"] = {str(k): v for k, v in self.hist.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SecondStats:
        return cls(
            t=float(raw["t"]),
            n=int(raw["n"]),
            good=int(raw["good"]),
            errors=int(raw["errors"]),
            p50=raw.get("p50"),
            p95=raw.get("p95"),
            p99=raw.get("p99"),
            hist={int(k): int(v) for k, v in (raw.get("hist") or {}).items()},
            complete=bool(raw.get("complete", True)),
        )


def series_to_dict(series: Sequence[SecondStats]) -> dict[str, Any]:
    """Column form of a series for the journal (compact, chart-ready, JSON-able)."""
    return {
        "t": [round(s.t, 3) for s in series],
        "n": [s.n for s in series],
        "good": [s.good for s in series],
        "errors": [s.errors for s in series],
        "p50": [s.p50 for s in series],
        "p95": [s.p95 for s in series],
        "p99": [s.p99 for s in series],
    }


class SLISource(ABC):
    """A running measurement of one SLI. See the module docstring for the invariants."""

    name: str

    @abstractmethod
    def start(self) -> None:
        """Begin sampling. Returns once sampling has started."""

    @abstractmethod
    def stop(self) -> None:
        """Stop sampling; idempotent. Samples stay readable afterwards."""

    @abstractmethod
    def last_sample_at(self) -> float | None:
        """Unix time of the newest sample, None before the first one."""

    @abstractmethod
    def counts(self, t0: float, t1: float) -> Counts:
        """Outcomes of the samples taken in ``[t0, t1)``."""

    def overdue(self, t0: float, t1: float) -> int:
        """Requests sent in [t0, t1) that are still unanswered and already too slow to be
        good (the guard counts them as bad before they time out). Default: none known."""
        return 0

    @abstractmethod
    def latencies(self, t0: float, t1: float) -> LatencyView | None:
        """Latencies of the samples taken in ``[t0, t1)``; None if the source has none."""

    @abstractmethod
    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        """Per-second statistics, oldest first."""

    def route(self, name: str) -> SLISource:
        """The same SLI restricted to one named route (a view, sharing the samples).
        Default: this source has no routes."""
        raise SLIError(f"SLI source {self.name!r} has no route {name!r} (only a load with routes has)")
