"""Statistics for SLO verdicts: Wilson score intervals and the binomial test for quantiles.

Every judgement answers pass, fail or inconclusive, and both pass and fail need evidence
at the requested confidence ``c``:

- **Ratios** ("success ratio ≥ x", "error ratio ≤ x"): the Wilson score interval. The
  reported ``lower``/``upper`` are the one-sided bounds at ``c`` (together, the two-sided
  interval at ``2c − 1``). "≥ x" passes when ``lower ≥ x`` and fails when ``upper < x``;
  anything between — including every judgement on zero samples — is inconclusive.
- **Quantiles** ("pXX ≤ T"): distribution-free. If the claim were false, each sample
  would exceed T with probability at least ``p = 1 − XX/100``, so the number above T
  would be at least Binomial(n, p). The claim passes when the observed count ``k`` is so
  small that ``P(Bin(n, p) ≤ k) ≤ 1 − c`` and fails when it is so large that
  ``P(Bin(n, p) ≥ k) ≤ 1 − c``. With ``k = 0`` this gives the classic table: p99 at 95%
  needs n ≥ 299. Bounds are order statistics, the matching distribution-free confidence
  bounds for the quantile itself.

Hand-written with the standard library (``math``, ``statistics.NormalDist``) rather than
scipy: these are ~60 lines, scipy would be a 40 MB dependency for the core, and the
binomial sums are exact in log space (``lgamma`` terms, log-sum-exp), so they do not
underflow for millions of samples where naive ``comb(n, k) p^k`` products do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any


class SLOVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """One statistical verdict. ``lower``/``upper`` are None when no bound exists."""

    outcome: SLOVerdict
    estimate: float | None
    lower: float | None
    upper: float | None
    n: int
    detail: Mapping[str, Any] = field(default_factory=dict)


def _check_confidence(confidence: float) -> None:
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")


def z_one_sided(confidence: float) -> float:
    _check_confidence(confidence)
    return NormalDist().inv_cdf(confidence)


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval ``(lower, upper)`` for ``successes``/``n`` at normal quantile ``z``.

    For a two-sided interval at level L use ``z = NormalDist().inv_cdf((1 + L) / 2)``.
    ``n == 0`` gives ``(0, 1)``: no information.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp rounding noise (at p = 0 or 1 the exact bound is 0 or 1).
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def judge_ratio(good: int, n: int, *, objective: float, at_least: bool, confidence: float) -> Judgement:
    """Is the true ratio ``good/n`` ≥ ``objective`` (``at_least``) or ≤ it (otherwise)?"""
    z = z_one_sided(confidence)
    lower, upper = wilson(good, n, z)
    estimate = good / n if n else None
    if n == 0:
        outcome = SLOVerdict.INCONCLUSIVE
    elif at_least:
        outcome = (
            SLOVerdict.PASS
            if lower >= objective
            else SLOVerdict.FAIL
            if upper < objective
            else SLOVerdict.INCONCLUSIVE
        )
    else:
        outcome = (
            SLOVerdict.PASS
            if upper <= objective
            else SLOVerdict.FAIL
            if lower > objective
            else SLOVerdict.INCONCLUSIVE
        )
    return Judgement(
        outcome=outcome,
        estimate=estimate,
        lower=lower,
        upper=upper,
        n=n,
        detail={"good": good, "objective": objective, "confidence": confidence, "method": "wilson"},
    )


# --- binomial tail, exact in log space ----------------------------------------------------


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _cdf_walk(n: int, p: float) -> Iterator[tuple[int, float]]:
    """Yield ``(k, log P(Bin(n, p) ≤ k))`` for k = 0, 1, ..., n (0 < p < 1)."""
    log_ratio = math.log(p) - math.log1p(-p)
    log_term = n * math.log1p(-p)
    log_cdf = log_term
    yield 0, min(log_cdf, 0.0)
    for k in range(1, n + 1):
        log_term += math.log(n - k + 1) - math.log(k) + log_ratio
        log_cdf = _logaddexp(log_cdf, log_term)
        yield k, min(log_cdf, 0.0)


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) ≤ k)``, exact up to floating-point rounding."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    for i, log_cdf in _cdf_walk(n, p):
        if i == k:
            return math.exp(log_cdf)
    return 1.0


def _first_k_reaching(n: int, p: float, level: float) -> int:
    """Smallest k in [0, n] with ``P(Bin(n, p) ≤ k) ≥ level``."""
    if p <= 0.0:
        return 0
    log_level = math.log(level)
    for k, log_cdf in _cdf_walk(n, p):
        # The relative tolerance absorbs rounding when the CDF sits exactly on the level.
        if log_cdf >= log_level - 1e-12:
            return k
    return n


def max_exceedances(n: int, quantile: float, confidence: float) -> int:
    """Most samples above T that still let "the ``quantile`` is ≤ T" pass; −1 if none can.

    ``max k`` with ``P(Bin(n, 1 − quantile) ≤ k) ≤ 1 − confidence``.
    """
    _check_confidence(confidence)
    if n <= 0:
        return -1
    log_alpha = math.log(1.0 - confidence)
    for k, log_cdf in _cdf_walk(n, 1.0 - quantile):
        # The small tolerance keeps a CDF sitting exactly on alpha inside the region.
        if log_cdf > log_alpha + 1e-12:
            return k - 1
    return n


def min_samples(quantile: float, confidence: float) -> int:
    """Fewest samples for which "pXX ≤ T" can pass at all (0 above T): ``q^n ≤ 1 − c``."""
    _check_confidence(confidence)
    log_alpha = math.log(1.0 - confidence)
    log_q = math.log(quantile)
    n = max(1, math.ceil(log_alpha / log_q))
    # Guard the rounding of the ratio of logs, in both directions.
    while n > 1 and (n - 1) * log_q <= log_alpha:
        n -= 1
    while n * log_q > log_alpha:
        n += 1
    return n


def judge_quantile(
    *,
    n: int,
    above: int,
    quantile: float,
    threshold: float,
    confidence: float,
    rank_value: Callable[[int], float] | None = None,
) -> Judgement:
    """Is the ``quantile`` (e.g. 0.99) of the distribution ≤ ``threshold``?

    ``above`` is how many of the ``n`` samples exceed the threshold. ``rank_value(r)``
    returns the r-th smallest sample (1-based); with it the judgement carries the point
    estimate and the distribution-free confidence bounds of the quantile.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    _check_confidence(confidence)
    if not 0 <= above <= n:
        raise ValueError(f"need 0 <= above <= n, got {above}/{n}")
    alpha = 1.0 - confidence
    p = 1.0 - quantile
    allowed = max_exceedances(n, quantile, confidence)
    # m = smallest count whose lower tail reaches the confidence: above > m is evidence
    # that more than a fraction p of samples exceed T, i.e. the claim is false.
    m = _first_k_reaching(n, p, confidence) if n else 0
    if n == 0:
        outcome = SLOVerdict.INCONCLUSIVE
    elif above <= allowed:
        outcome = SLOVerdict.PASS
    elif above > m:  # P(Bin(n, p) ≥ above) = 1 − CDF(above − 1) ≤ 1 − confidence
        outcome = SLOVerdict.FAIL
    else:
        outcome = SLOVerdict.INCONCLUSIVE
    estimate = lower = upper = None
    if rank_value is not None and n:
        estimate = rank_value(max(1, math.ceil(quantile * n)))
        upper_rank = n - allowed  # order statistic x_(u), u = n − k_max
        upper = rank_value(upper_rank) if allowed >= 0 and upper_rank >= 1 else None
        lower_rank = n - m
        lower = rank_value(lower_rank) if 1 <= lower_rank <= n else None
    return Judgement(
        outcome=outcome,
        estimate=estimate,
        lower=lower,
        upper=upper,
        n=n,
        detail={
            "above": above,
            "allowed_above": allowed,
            "min_samples": min_samples(quantile, confidence),
            "quantile": quantile,
            "threshold": threshold,
            "confidence": confidence,
            "alpha": alpha,
            "method": "binomial",
        },
    )
