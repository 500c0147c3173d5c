"""Comparative verdicts: Hodges-Lehmann bounds, Newcombe's interval, against scipy and
published worked examples."""

from __future__ import annotations

import random
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.sli import compare
from chaoslab.sli.compare import (
    hodges_lehmann,
    judge_latency_vs_baseline,
    judge_ratio_vs_baseline,
    kth_difference,
    newcombe,
)
from chaoslab.sli.stats import SLOVerdict, wilson

np = pytest.importorskip("numpy")
scipy_stats = pytest.importorskip("scipy.stats")


def test_hodges_lehmann_estimate_is_the_median_of_all_differences() -> None:
    rng = random.Random(3)
    for n, m in ((1, 1), (3, 4), (7, 5), (20, 31)):
        x = [rng.gauss(0, 1) for _ in range(n)]
        y = [rng.gauss(1, 2) for _ in range(m)]
        diffs = sorted(b - a for a in x for b in y)
        est, _, _ = hodges_lehmann(x, y, 0.95)
        assert est == pytest.approx(float(np.median(diffs)), abs=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_hodges_lehmann_bounds_invert_scipys_mann_whitney_test(confidence: float) -> None:
    """Just below the lower bound scipy's one-sided U test rejects a shift; just above it
    does not (and mirrored for the upper bound): the bounds are the test's inversion."""
    rng = random.Random(int(confidence * 100))
    x = np.array([rng.lognormvariate(0, 0.5) for _ in range(40)])
    y = np.array([rng.lognormvariate(0.3, 0.5) for _ in range(55)])
    _, lo, hi = hodges_lehmann(x, y, confidence)
    assert lo is not None and hi is not None and lo < hi
    alpha, eps = 1 - confidence, 1e-9

    def p(shift: float, alternative: str) -> float:
        return float(
            scipy_stats.mannwhitneyu(
                y - shift, x, alternative=alternative, method="asymptotic", use_continuity=False
            ).pvalue
        )

    assert p(lo - eps, "greater") <= alpha < p(lo + eps, "greater")
    assert p(hi + eps, "less") <= alpha < p(hi - eps, "less")


def test_kth_difference_by_bisection_matches_sorting(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    x, y = np.sort(rng.exponential(size=300)), np.sort(rng.exponential(size=250))
    ks = [1, 17, 300 * 250 // 2, 300 * 250 - 3, 300 * 250]
    sorted_way = [kth_difference(x, y, k) for k in ks]
    monkeypatch.setattr(compare, "MAX_PAIRS_SORTED", 0)
    assert [kth_difference(x, y, k) for k in ks] == pytest.approx(sorted_way, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 500), frac=st.floats(0, 1), level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_scipy_binomtest(n: int, frac: float, level: float) -> None:
    k = round(frac * n)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = wilson(k, n, NormalDist().inv_cdf((1 + level) / 2))
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


# Newcombe (1998), "Interval estimation for the difference between independent
# proportions", Statistics in Medicine 17:873-890, Table II, method 10 (95%).
NEWCOMBE_EXAMPLES = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_EXAMPLES)
def test_newcombe_interval_reproduces_the_papers_worked_examples(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    a, m, b, n = counts
    _, lo, hi = newcombe(a, m, b, n, NormalDist().inv_cdf(0.975))
    assert (round(lo, 4), round(hi, 4)) == expected


def test_latency_same_distribution_passes_slower_fails_few_samples_follow_the_policy() -> None:
    rng = random.Random(11)
    base = [rng.lognormvariate(-5, 0.3) for _ in range(800)]
    same = [rng.lognormvariate(-5, 0.3) for _ in range(800)]
    slow = [v * 2.0 for v in (rng.lognormvariate(-5, 0.3) for _ in range(800))]
    kw = {"max_ratio": 1.2, "confidence": 0.95, "min_samples": 20, "no_data": SLOVerdict.INCONCLUSIVE}
    ok = judge_latency_vs_baseline(base, same, **kw)  # type: ignore[arg-type]
    assert ok.outcome is SLOVerdict.PASS and ok.upper is not None and ok.upper <= 1.2
    bad = judge_latency_vs_baseline(base, slow, **kw)  # type: ignore[arg-type]
    assert bad.outcome is SLOVerdict.FAIL
    assert bad.estimate == pytest.approx(2.0, rel=0.1) and bad.lower is not None and bad.lower > 1.2
    assert bad.detail["p_value"] < 0.05
    faster = judge_latency_vs_baseline(base, [v / 2 for v in slow], **kw)  # type: ignore[arg-type]
    assert faster.outcome is SLOVerdict.PASS  # direction-aware: only "worse" fails
    few = judge_latency_vs_baseline(base, slow[:5], **kw)  # type: ignore[arg-type]
    assert few.outcome is SLOVerdict.INCONCLUSIVE and "fewer than 20" in few.detail["reason"]
    strict = judge_latency_vs_baseline(base, slow[:5], **{**kw, "no_data": SLOVerdict.FAIL})  # type: ignore[arg-type]
    assert strict.outcome is SLOVerdict.FAIL


def test_ratio_against_baseline() -> None:
    kw = {"max_increase": 0.01, "confidence": 0.95, "min_samples": 20, "no_data": SLOVerdict.INCONCLUSIVE}
    same = judge_ratio_vs_baseline(bad_baseline=2, n_baseline=2000, bad_window=3, n_window=2000, **kw)  # type: ignore[arg-type]
    assert same.outcome is SLOVerdict.PASS
    worse = judge_ratio_vs_baseline(bad_baseline=2, n_baseline=2000, bad_window=200, n_window=2000, **kw)  # type: ignore[arg-type]
    assert worse.outcome is SLOVerdict.FAIL and worse.estimate == pytest.approx(0.099)
    unsure = judge_ratio_vs_baseline(bad_baseline=0, n_baseline=30, bad_window=1, n_window=30, **kw)  # type: ignore[arg-type]
    assert unsure.outcome is SLOVerdict.INCONCLUSIVE
    empty = judge_ratio_vs_baseline(bad_baseline=0, n_baseline=0, bad_window=0, n_window=100, **kw)  # type: ignore[arg-type]
    assert empty.outcome is SLOVerdict.INCONCLUSIVE and "fewer than" in empty.detail["reason"]
