"""Every hand-written statistic of ``chaoslab.sli.stats`` against scipy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.sli.stats import binom_cdf, judge_ratio, max_exceedances, min_samples

scipy_stats = pytest.importorskip("scipy.stats")


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 3000), frac=st.floats(0, 1), p=st.floats(1e-4, 1 - 1e-4))
def test_binomial_cdf_matches_scipy(n: int, frac: float, p: float) -> None:
    k = round(frac * n)
    assert binom_cdf(k, n, p) == pytest.approx(float(scipy_stats.binom.cdf(k, n, p)), rel=1e-9, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5000),
    quantile=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]),
    confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_max_exceedances_is_scipys_binomial_quantile(n: int, quantile: float, confidence: float) -> None:
    """The most samples above T that still pass: the largest k with
    P(Bin(n, 1 − q) ≤ k) ≤ 1 − c, found with scipy's CDF."""
    alpha = 1 - confidence
    k = max_exceedances(n, quantile, confidence)
    p = 1 - quantile
    if k >= 0:
        assert scipy_stats.binom.cdf(k, n, p) <= alpha * (1 + 1e-9)
    if k + 1 <= n:
        assert scipy_stats.binom.cdf(k + 1, n, p) > alpha * (1 - 1e-9)


@pytest.mark.parametrize(
    ("quantile", "confidence", "n"), [(0.99, 0.95, 299), (0.95, 0.95, 59), (0.9, 0.9, 22)]
)
def test_min_samples_known_cases(quantile: float, confidence: float, n: int) -> None:
    """The classic table: p99 at 95% needs 299 samples with none above T."""
    assert min_samples(quantile, confidence) == n
    assert quantile**n <= 1 - confidence < quantile ** (n - 1)
    assert math.isclose(scipy_stats.binom.cdf(0, n, 1 - quantile), quantile**n)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 2000), frac=st.floats(0, 1), confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_ratio_bounds_are_scipys_one_sided_wilson_bounds(n: int, frac: float, confidence: float) -> None:
    good = round(frac * n)
    j = judge_ratio(good, n, objective=0.5, at_least=True, confidence=confidence)
    # One-sided bounds at c are the two-sided Wilson interval at 2c − 1.
    ci = scipy_stats.binomtest(good, n).proportion_ci(confidence_level=2 * confidence - 1, method="wilson")
    assert j.lower == pytest.approx(ci.low, abs=1e-9)
    assert j.upper == pytest.approx(ci.high, abs=1e-9)
