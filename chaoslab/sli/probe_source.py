"""Any probe as an SLI: a callable sampled at a fixed interval in a background thread.

Each sample records its Unix time, how long the call took, whether it passed, and its
value (kept only if JSON-able, else its ``repr``). A sample passes when ``check(value)``
is true (default: ``bool(value)``); a probe that raises fails that sample and keeps the
error text. As an SLI, passing samples are ``good`` and failing ones are ``errors``, so
availability and error-rate objectives apply; the call durations form the latency view.

Samples are taken on a fixed schedule (``start + i·interval``); a probe slower than the
interval skips the missed slots instead of queueing calls. Bounded by ``max_samples``
and ``max_duration_s``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaoslab.sli.base import (
    Counts,
    ExactLatencies,
    LatencyView,
    SecondStats,
    SLISource,
    hist_index,
    hist_quantile,
)


@dataclass(frozen=True, kw_only=True)
class ProbeSample:
    t: float
    duration_s: float
    ok: bool
    value: Any = None
    error: str | None = None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class ProbeSource(SLISource):
    def __init__(
        self,
        probe: Callable[[], Any],
        *,
        interval_s: float = 1.0,
        check: Callable[[Any], bool] | None = None,
        name: str = "probe",
        max_samples: int = 100_000,
        max_duration_s: float = 3600.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.name = name
        self.probe = probe
        self.check = check or bool
        self.interval_s = interval_s
        self.max_samples = max_samples
        self.max_duration_s = max_duration_s
        self._samples: list[ProbeSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"chaoslab-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set() and i < self.max_samples:
            slot = start + i * self.interval_s
            if slot - start >= self.max_duration_s:
                break
            if self._stop.wait(max(0.0, slot - time.monotonic())):
                break
            self._take()
            # Skip the slots a slow probe overran rather than firing them in a burst.
            i = max(i + 1, math.ceil((time.monotonic() - start) / self.interval_s))

    def _take(self) -> None:
        t = time.time()
        t_mono = time.monotonic()
        try:
            value = self.probe()
            ok, error = bool(self.check(value)), None
        except Exception as exc:  # a failing probe is a failed sample, not a crash
            value, ok, error = None, False, f"{type(exc).__name__}: {exc}"
        sample = ProbeSample(
            t=t, duration_s=time.monotonic() - t_mono, ok=ok, value=_jsonable(value), error=error
        )
        with self._lock:
            self._samples.append(sample)

    def samples(self, t0: float = -math.inf, t1: float = math.inf) -> list[ProbeSample]:
        with self._lock:
            return [s for s in self._samples if t0 <= s.t < t1]

    def last_sample_at(self) -> float | None:
        with self._lock:
            return self._samples[-1].t if self._samples else None

    def counts(self, t0: float, t1: float) -> Counts:
        window = self.samples(t0, t1)
        good = sum(1 for s in window if s.ok)
        return Counts(total=len(window), good=good, errors=len(window) - good)

    def latencies(self, t0: float, t1: float) -> LatencyView:
        return ExactLatencies(s.duration_s if s.ok else math.inf for s in self.samples(t0, t1))

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        window = self.samples(-math.inf if t0 is None else t0, math.inf if t1 is None else t1)
        by_second: dict[int, list[ProbeSample]] = {}
        for s in window:
            by_second.setdefault(int(s.t), []).append(s)
        rows = []
        for sec in sorted(by_second):
            group = by_second[sec]
            hist: dict[int, int] = {}
            for s in group:
                if s.ok:
                    idx = hist_index(s.duration_s)
                    hist[idx] = hist.get(idx, 0) + 1
            good = sum(1 for s in group if s.ok)
            rows.append(
                SecondStats(
                    t=float(sec),
                    n=len(group),
                    good=good,
                    errors=len(group) - good,
                    p50=hist_quantile(hist, 0.5),
                    p95=hist_quantile(hist, 0.95),
                    p99=hist_quantile(hist, 0.99),
                    hist=hist,
                )
            )
        return rows
