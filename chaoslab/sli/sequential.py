"""A sequential test on the bad-event rate, with a stated false-abort probability.

The guard asks, after every request: is the rate of bad requests since the first fault
above the rate the experiment tolerates (``p0``)? It answers with a **mixture sequential
probability ratio test** (a mixture SPRT, also called a mixture likelihood-ratio
martingale), which may be looked at after every request, forever, and still keeps its
error probability:

- For one alternative rate ``p1 > p0`` the likelihood ratio after ``n`` requests with
  ``k`` bad is ``L(p1) = (p1/p0)^k · ((1 − p1)/(1 − p0))^(n − k)``. When the true rate is
  ``p ≤ p0`` its expected factor per request is ``p·p1/p0 + (1 − p)(1 − p1)/(1 − p0) ≤ 1``,
  so ``L`` is a non-negative supermartingale starting at 1.
- ``M = Σ_j w_j · L(p1_j)`` over a grid of alternatives (weights summing to 1) is one too,
  and Ville's inequality bounds ``P(sup_n M_n ≥ 1/α) ≤ α``: **when the bad-event rate is
  within tolerance, the test ever trips with probability at most α** (the ``risk``).
- The grid covers rates from just above ``p0`` to 0.99, spaced evenly in log-odds, so a
  total outage trips within a handful of requests and a mild burn as soon as the evidence
  is there (each alternative is its own SPRT; the mixture pays only ``log(G)`` for not
  knowing which one is true).
- **Late onsets.** A test started at the first fault carries the evidence of every good
  request before the outage, which slows it down when the outage starts late. So fresh
  tests start along the way, in two families that share the risk half and half: one
  every ``epoch`` requests (for slow burns, which need a long stretch of evidence), and
  one right after each bad request (for sudden outages: the first bad request of an
  outage starts a test that has seen nothing good). The ``i``-th test of a family gets
  ``α_i = α/2 · 6/(π² i²)``; since ``Σ α_i ≤ α/2`` per family, the union bound keeps the
  total false-abort probability at most α. A test starts only *after* the request that
  prompted it (its start is a stopping time, so from there on it is a supermartingale
  starting at 1 under the null). Old tests are dropped on a logarithmic schedule: test
  ``i`` of a family is kept while fewer than ``keep · lowbit(i)`` tests of its family
  started after it (``lowbit(i)`` is the largest power of two dividing ``i``), so about
  ``keep · log2(i)`` tests live at once and starting points reach back exponentially far
  (dropping a test can only lower the rejection probability).

The statistic only rises on a bad request, so it is evaluated right after each one: the
request at which it crosses is exact. Every sum is in log space.

Assumptions stated with the result: requests are judged in the order they were sent
(``chaoslab.safety.guard`` does so), and under the null they are independent with a rate
at most ``p0``. Bursty but healthy traffic violates independence; the tolerance ``p0`` is
the knob for that.

Hand-written (about 80 lines of standard-library ``math``) because no well-kept library
offers an always-valid binomial mixture test, and the guard runs it in its loop without
importing numpy; ``tests/unit/test_sequential.py`` checks every log-likelihood against
``scipy.stats.binom`` and the false-abort rate by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

GRID_SIZE = 8
TOP_RATE = 0.99
DEFAULT_KEEP = 4


def alternatives(p0: float, size: int = GRID_SIZE, top: float = TOP_RATE) -> tuple[float, ...]:
    """Alternative bad rates above ``p0``, evenly spaced in log-odds up to ``top``."""
    if not 0.0 < p0 < top:
        raise ValueError(f"the tolerated rate must be in (0, {top}), got {p0}")
    lo, hi = math.log(p0 / (1 - p0)), math.log(top / (1 - top))
    step = (hi - lo) / size
    return tuple(1.0 / (1.0 + math.exp(-(lo + step * (j + 1)))) for j in range(size))


def epoch_risk(risk: float, i: int) -> float:
    """The share of ``risk`` spent on the ``i``-th (1-based) test of one family."""
    return risk / 2.0 * 6.0 / (math.pi**2 * i * i)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The moment a test crossed its threshold."""

    index: int  # 0-based position of the deciding request in the stream
    family: str  # "periodic" (every `epoch` requests) or "after-bad" (after a bad request)
    epoch: int  # which test of its family decided (1-based)
    n: int  # requests that test had seen
    bad: int  # bad requests among them
    log_evidence: float  # log M at the crossing
    log_threshold: float  # log(1/α_i)
    rate: float  # the alternative with the largest likelihood ratio


class _Test:
    __slots__ = ("bad", "family", "i", "log_threshold", "n")

    def __init__(self, family: str, i: int, log_threshold: float) -> None:
        self.family = family
        self.i = i
        self.log_threshold = log_threshold
        self.n = 0
        self.bad = 0


class MixtureSPRT:
    """Feed outcomes in order with ``add(bad)``; ``decision`` is set once it trips."""

    def __init__(
        self, *, p0: float, risk: float, epoch: int = 400, keep: int = DEFAULT_KEEP, grid: int = GRID_SIZE
    ) -> None:
        if not 0.0 < risk < 1.0:
            raise ValueError(f"risk must be in (0, 1), got {risk}")
        if epoch < 1 or keep < 1:
            raise ValueError("epoch and keep must be positive")
        self.p0 = p0
        self.risk = risk
        self.epoch = epoch
        self.keep = keep
        self.rates = alternatives(p0, grid)
        self._log_w = -math.log(len(self.rates))
        self._a = tuple(math.log(p / p0) for p in self.rates)  # a bad request
        self._b = tuple(math.log1p(-p) - math.log1p(-p0) for p in self.rates)  # a good one
        self._periodic: list[_Test] = []
        self._after_bad: list[_Test] = []
        self.seen = 0
        self.bad = 0
        self.decision: Decision | None = None

    def log_evidence(self, n: int, bad: int) -> float:
        """``log M`` for one test that saw ``n`` requests, ``bad`` of them bad."""
        terms = [self._log_w + bad * a + (n - bad) * b for a, b in zip(self._a, self._b, strict=True)]
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    def _start(self, family: list[_Test], name: str, i: int) -> None:
        family.append(_Test(name, i, -math.log(epoch_risk(self.risk, i))))
        family[:] = [t for t in family if i - t.i < self.keep * (t.i & -t.i)]

    def add(self, bad: bool) -> Decision | None:
        """One more request, in send order. Returns the decision when this one trips it."""
        if self.decision is not None:
            return self.decision
        if self.seen % self.epoch == 0:
            self._start(self._periodic, "periodic", self.seen // self.epoch + 1)
        self.seen += 1
        self.bad += bad
        tests = self._periodic + self._after_bad
        for t in tests:
            t.n += 1
            t.bad += bad
        if not bad:
            return None  # the statistic only rises on a bad request
        for t in tests:
            log_m = self.log_evidence(t.n, t.bad)
            if log_m >= t.log_threshold:
                best = max(
                    range(len(self.rates)),
                    key=lambda j: t.bad * self._a[j] + (t.n - t.bad) * self._b[j],
                )
                self.decision = Decision(
                    index=self.seen - 1,
                    family=t.family,
                    epoch=t.i,
                    n=t.n,
                    bad=t.bad,
                    log_evidence=log_m,
                    log_threshold=t.log_threshold,
                    rate=self.rates[best],
                )
                return self.decision
        # This bad request may be an outage's first: a fresh test starts after it.
        self._start(self._after_bad, "after-bad", self.bad)
        return None

    def describe(self) -> Mapping[str, Any]:
        """What the journal records about the test."""
        return {
            "test": "mixture SPRT on the bad-request rate",
            "risk": self.risk,
            "tolerated_rate": self.p0,
            "alternatives": [round(p, 6) for p in self.rates],
            "restart_every": self.epoch,
            "restarts_kept": f"{self.keep}·lowbit(i)",
            "risk_spending": "risk/2 · 6/(π²·i²) for the i-th test of each family "
            "(every restart_every requests; after each bad request)",
        }
