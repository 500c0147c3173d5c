"""The SLO statistics against known cases and against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

import pytest

from chaoslab.sli.stats import (
    SLOVerdict,
    binom_cdf,
    judge_quantile,
    judge_ratio,
    max_exceedances,
    min_samples,
    wilson,
)

Z95_TWO_SIDED = NormalDist().inv_cdf(0.975)


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


def exact_max_exceedances(n: int, p: Fraction, alpha: Fraction) -> int:
    k, cdf = -1, Fraction(0)
    while k < n:
        nxt = cdf + math.comb(n, k + 1) * p ** (k + 1) * (1 - p) ** (n - k - 1)
        if nxt > alpha:
            return k
        k, cdf = k + 1, nxt
    return n


def test_wilson_zero_errors_in_1000() -> None:
    lower, upper = wilson(1000, 1000, Z95_TWO_SIDED)
    # At p̂ = 1 the Wilson lower bound is n / (n + z²) exactly.
    assert lower == pytest.approx(1000 / (1000 + Z95_TWO_SIDED**2), rel=1e-12)
    assert lower == pytest.approx(0.996173, abs=1e-6)
    assert upper == 1.0


def test_wilson_3_errors_in_5000() -> None:
    # Published Wilson 95% interval for 3/5000 (no continuity correction): 0.0204%–0.1763%.
    lower, upper = wilson(3, 5000, Z95_TWO_SIDED)
    assert lower == pytest.approx(0.000204075, abs=1e-8)
    assert upper == pytest.approx(0.00176271, abs=1e-7)
    good_lower, good_upper = wilson(4997, 5000, Z95_TWO_SIDED)
    assert good_lower == pytest.approx(1 - upper, abs=1e-12)
    assert good_upper == pytest.approx(1 - lower, abs=1e-12)


def test_wilson_no_samples_is_no_information() -> None:
    assert wilson(0, 0, Z95_TWO_SIDED) == (0.0, 1.0)


def test_availability_zero_errors_in_1000() -> None:
    j = judge_ratio(1000, 1000, objective=0.99, at_least=True, confidence=0.95)
    assert j.outcome is SLOVerdict.PASS
    assert j.estimate == 1.0 and j.n == 1000
    assert j.lower == pytest.approx(1000 / (1000 + NormalDist().inv_cdf(0.95) ** 2))
    # 99.9% cannot be claimed from 1,000 requests, even with none failing.
    assert (
        judge_ratio(1000, 1000, objective=0.999, at_least=True, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )


def test_too_few_samples_never_pass() -> None:
    assert judge_ratio(0, 0, objective=0.5, at_least=True, confidence=0.95).outcome is SLOVerdict.INCONCLUSIVE
    assert (
        judge_ratio(10, 10, objective=0.9, at_least=True, confidence=0.95).outcome is SLOVerdict.INCONCLUSIVE
    )
    assert (
        judge_ratio(0, 0, objective=0.01, at_least=False, confidence=0.95).outcome is SLOVerdict.INCONCLUSIVE
    )


def test_fail_needs_evidence_too() -> None:
    # 98.5% observed against a 99% objective: not enough evidence either way at n=1000.
    assert (
        judge_ratio(985, 1000, objective=0.99, at_least=True, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )
    j = judge_ratio(980, 1000, objective=0.99, at_least=True, confidence=0.95)
    assert j.outcome is SLOVerdict.FAIL and j.upper is not None and j.upper < 0.99


def test_error_rate_3_in_5000() -> None:
    j = judge_ratio(3, 5000, objective=0.01, at_least=False, confidence=0.95)
    assert j.outcome is SLOVerdict.PASS and j.estimate == pytest.approx(0.0006)
    assert (
        judge_ratio(3, 5000, objective=0.0005, at_least=False, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )
    assert judge_ratio(100, 5000, objective=0.01, at_least=False, confidence=0.95).outcome is SLOVerdict.FAIL


@pytest.mark.parametrize(
    ("quantile", "confidence", "n"),
    [
        (0.99, 0.95, 299),
        (0.95, 0.95, 59),
        (0.90, 0.95, 29),
        (0.99, 0.99, 459),
        (0.999, 0.95, 2995),
        (0.5, 0.95, 5),
    ],
)
def test_sample_count_table(quantile: float, confidence: float, n: int) -> None:
    assert min_samples(quantile, confidence) == n
    assert max_exceedances(n, quantile, confidence) == 0
    assert max_exceedances(n - 1, quantile, confidence) == -1


@pytest.mark.parametrize("n", [299, 500, 1000, 2500])
def test_allowed_exceedances_match_exact_arithmetic(n: int) -> None:
    assert max_exceedances(n, 0.99, 0.95) == exact_max_exceedances(n, Fraction(1, 100), Fraction(1, 20))
    assert max_exceedances(n, 0.95, 0.99) == exact_max_exceedances(n, Fraction(1, 20), Fraction(1, 100))


def test_binomial_cdf_is_exact() -> None:
    for k in (0, 4, 5, 10, 20):
        assert binom_cdf(k, 1000, 0.01) == pytest.approx(
            float(exact_cdf(k, 1000, Fraction(1, 100))), rel=1e-9
        )
    assert max_exceedances(1000, 0.99, 0.95) == 4


def test_large_n_does_not_underflow() -> None:
    n = 2_000_000
    k = max_exceedances(n, 0.99, 0.95)
    assert 19_000 < k < 20_000
    assert binom_cdf(k, n, 0.01) <= 0.05 < binom_cdf(k + 1, n, 0.01)


def test_p99_quantile_judgement() -> None:
    assert (
        judge_quantile(n=299, above=0, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.PASS
    )
    # One sample short of the table: never a pass, however good the samples look.
    assert (
        judge_quantile(n=298, above=0, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )
    assert (
        judge_quantile(n=1000, above=4, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.PASS
    )
    assert (
        judge_quantile(n=1000, above=5, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )
    # 20 of 1000 above T: P(Bin(1000, 1%) ≥ 20) ≈ 0.003, evidence that p99 > T.
    assert (
        judge_quantile(n=1000, above=20, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.FAIL
    )
    assert (
        judge_quantile(n=0, above=0, quantile=0.99, threshold=0.25, confidence=0.95).outcome
        is SLOVerdict.INCONCLUSIVE
    )


def test_quantile_bounds_are_order_statistics() -> None:
    values = [float(i) for i in range(1, 1001)]  # the r-th smallest is r
    j = judge_quantile(
        n=1000, above=10, quantile=0.99, threshold=990.0, confidence=0.95, rank_value=lambda r: values[r - 1]
    )
    assert j.estimate == 990.0
    assert j.upper == 1000 - max_exceedances(1000, 0.99, 0.95)  # x_(996)
    # Lower bound x_(l), l = n − m with m the first k where P(Bin(n, 1%) ≤ k) ≥ 95%.
    m = next(k for k in range(1000) if exact_cdf(k, 1000, Fraction(1, 100)) >= Fraction(95, 100))
    assert j.lower == 1000 - m
    assert j.lower is not None and j.upper is not None and j.lower <= j.estimate <= j.upper
