"""The resilience score: 0–100 from the verdicts of a suite's experiments.

Rules (also printed by ``chaoslab gate --help``)::

    credit per experiment, by verdict
      passed        1.0   the steady state held, with confidence
      inconclusive  0.5   could not tell: half credit in the score, and the score's
                          range [low, high] counts it as 0 and as 1
      deviated      0     an SLO failed
      aborted       0     the guard stopped the run: the error-budget allowance burned
      not-clean     0     a fault was left behind (also an infrastructure error)
      error         0     the run could not be completed (also an infrastructure error)
      interrupted   0
      invalid-input 0

    score = 100 × Σ(weight × credit) / Σ(weight), rounded to 0.1
    low   = the same with inconclusive credited 0; high = with inconclusive credited 1

    classification with thresholds pass P and warn W (defaults 90 and 70):
      pass          low ≥ P                   (holds whatever the inconclusive runs hide)
      fail          high < W                  (fails even if every inconclusive run held)
      warn          low ≥ W and high < P
      inconclusive  otherwise: the inconclusive runs decide between two classes

Why a range and not only a number: an inconclusive run is not evidence either way. The
point score (0.5 credit) is what people read; the range keeps the gate from claiming a
pass or a fail the evidence cannot support.

Invariants: weights are positive; ``0 ≤ low ≤ value ≤ high ≤ 100``; an empty suite is
invalid input (there is nothing to score), not a score of 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from chaoslab.verdict import Verdict

CREDIT: dict[Verdict, float] = {
    Verdict.PASSED: 1.0,
    Verdict.INCONCLUSIVE: 0.5,
    Verdict.DEVIATED: 0.0,
    Verdict.ABORTED: 0.0,
    Verdict.NOT_CLEAN: 0.0,
    Verdict.ERROR: 0.0,
    Verdict.INTERRUPTED: 0.0,
    Verdict.INVALID_INPUT: 0.0,
}

# Verdicts that mean the experiment's result is about the tooling or the environment,
# not about the system under test.
INFRASTRUCTURE = frozenset({Verdict.ERROR, Verdict.NOT_CLEAN, Verdict.INVALID_INPUT, Verdict.INTERRUPTED})
# Verdicts that mean the system under test did not hold.
FAILED = frozenset({Verdict.DEVIATED, Verdict.ABORTED})


class Class(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """``pass_at`` and ``warn_at`` are scores in [0, 100], ``warn_at ≤ pass_at``."""

    pass_at: float = 90.0
    warn_at: float = 70.0

    def __post_init__(self) -> None:
        if not 0 <= self.warn_at <= self.pass_at <= 100:
            raise ValueError(f"need 0 ≤ warn ≤ pass ≤ 100, got warn={self.warn_at} pass={self.pass_at}")


@dataclass(frozen=True, kw_only=True)
class Scored:
    """One experiment as the score sees it."""

    name: str
    weight: float
    verdict: Verdict


@dataclass(frozen=True, kw_only=True)
class Score:
    value: float
    low: float
    high: float

    def classify(self, thresholds: Thresholds) -> Class:
        if self.low >= thresholds.pass_at:
            return Class.PASS
        if self.high < thresholds.warn_at:
            return Class.FAIL
        if self.low >= thresholds.warn_at and self.high < thresholds.pass_at:
            return Class.WARN
        return Class.INCONCLUSIVE


def credit(verdict: Verdict | str) -> float:
    """Credit of one verdict; an unknown verdict earns nothing (never a silent pass)."""
    try:
        return CREDIT[Verdict(verdict)]
    except ValueError:
        return 0.0


def score(entries: Sequence[Scored]) -> Score:
    if not entries:
        raise ValueError("cannot score an empty suite")
    if any(e.weight <= 0 for e in entries):
        raise ValueError("weights must be positive")
    total = sum(e.weight for e in entries)

    def pct(inconclusive_credit: float) -> float:
        earned = sum(
            e.weight * (inconclusive_credit if e.verdict == Verdict.INCONCLUSIVE else credit(e.verdict))
            for e in entries
        )
        return round(100.0 * earned / total, 1)

    return Score(value=pct(0.5), low=pct(0.0), high=pct(1.0))
