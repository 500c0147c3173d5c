"""Comparative verdicts: did a window get measurably worse than the baseline?

Canary judges answer this question (Netflix Kayenta's Mann-Whitney classifier, Argo
Rollouts' analysis); here it is asked of a chaos run's "during" and "after" windows
against the baseline window the run just measured. Only "worse" counts: a window that
got better passes. Both pass and fail need evidence at the objective's confidence ``c``:

- **Latency** (``sli: latency, compare: baseline``): the successful requests' latencies
  of the window (``y``) against the baseline's (``x``). The effect size is the ratio by
  which the window's latencies are scaled, estimated distribution-free by Hodges-Lehmann
  on the logs (the median of all ``log y_j − log x_i``) with the confidence bounds that
  invert the Mann-Whitney U test: with ``d_(1) ≤ … ≤ d_(nm)`` the sorted differences,
  ``σ = sqrt(nm(n + m + 1)/12)`` and ``k = floor(nm/2 − z_c·σ)``, the one-sided bounds
  are ``d_(k+1)`` (lower) and ``d_(nm−k)`` (upper). The U test itself (one-sided,
  "greater") is scipy's ``mannwhitneyu``. With ``max_ratio`` the allowed slow-down
  (the effect-size band): **fail** when the lower bound of the ratio is above
  ``max_ratio`` and U is significant, **pass** when the upper bound is at most
  ``max_ratio``, **inconclusive** otherwise.
- **Ratios** (``availability`` / ``error-rate`` with ``compare: baseline``): the bad
  ratio of the window against the baseline's, by Newcombe's hybrid score interval for a
  difference of proportions (Wilson intervals of each side, combined); with
  ``max_increase`` the band: **fail** when the lower bound of the increase is above it,
  **pass** when the upper bound is at most it.
- **No data**: fewer than ``min_samples`` on either side gives the ``no_data`` outcome
  (default inconclusive), with the reason.

Hand-written: the Hodges-Lehmann estimate and bounds (no well-kept library offers them
for two samples; scipy has the U test, which is used) and Newcombe's interval (on top of
``chaoslab.sli.stats.wilson``). ``tests/unit/test_compare.py`` checks the bounds against
scipy's U test by inversion, the estimate against brute force, Wilson against scipy's
``binomtest``, and Newcombe's interval against the worked examples of his 1998 paper.
numpy and scipy are imported only when an experiment has a comparative objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chaoslab.errors import SLIError
from chaoslab.sli.stats import Judgement, SLOVerdict, wilson, z_one_sided

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Above this many pairs the k-th difference is found by bisection instead of sorting all.
MAX_PAIRS_SORTED = 2_000_000
# Larger samples are subsampled (seeded, recorded in the detail) to bound the work.
MAX_SAMPLE = 50_000


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy comes with scipy
        raise SLIError(_HINT) from exc
    return numpy


_HINT = "comparative objectives (compare: baseline) need scipy: pip install 'chaoslab[stats]'"


def require_scipy() -> None:
    """Raise ``SLIError`` with an install hint when scipy is missing."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError as exc:
        raise SLIError(_HINT) from exc


def kth_difference(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], k: int) -> float:
    """The ``k``-th smallest (1-based) of all ``y_j − x_i``; ``x`` and ``y`` sorted."""
    np = _numpy()
    n, m = len(x), len(y)
    if not 1 <= k <= n * m:
        raise ValueError(f"k must be in [1, {n * m}], got {k}")
    if n * m <= MAX_PAIRS_SORTED:
        diffs = np.subtract.outer(y, x).ravel()
        return float(np.partition(diffs, k - 1)[k - 1])

    def count_le(v: float) -> int:
        # y_j − x_i ≤ v  ⇔  x_i ≥ y_j − v
        return int(n * m - np.searchsorted(x, y - v, side="left").sum())

    lo, hi = float(y[0] - x[-1]), float(y[-1] - x[0])
    # count_le(hi) = nm ≥ k; shrink [lo, hi] around the smallest v with count_le(v) ≥ k.
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid <= lo or mid >= hi:
            break
        if count_le(mid) >= k:
            hi = mid
        else:
            lo = mid
    # hi is within rounding of the k-th difference: snap to the nearest actual difference.
    idx = np.searchsorted(x, y - hi, side="left")
    cand = [float(y[j] - x[i]) for j, i in enumerate(idx) if i < n]
    return min(cand, key=lambda d: abs(d - hi)) if cand else hi


def hodges_lehmann(
    x: Sequence[float], y: Sequence[float], confidence: float
) -> tuple[float, float | None, float | None]:
    """Hodges-Lehmann shift of ``y`` over ``x`` with its one-sided bounds at ``confidence``
    (from the Mann-Whitney U distribution, normal approximation); None where the samples
    are too small for a bound."""
    np = _numpy()
    xs = np.sort(np.asarray(x, dtype=float))
    ys = np.sort(np.asarray(y, dtype=float))
    n, m = len(xs), len(ys)
    if not n or not m:
        raise ValueError("both samples need at least one value")
    nm = n * m
    if nm % 2:
        estimate = kth_difference(xs, ys, (nm + 1) // 2)
    else:
        estimate = (kth_difference(xs, ys, nm // 2) + kth_difference(xs, ys, nm // 2 + 1)) / 2.0
    z = z_one_sided(confidence)
    sigma = math.sqrt(nm * (n + m + 1) / 12.0)
    k = math.floor(nm / 2.0 - z * sigma)
    if k < 0:
        return estimate, None, None
    return estimate, kth_difference(xs, ys, k + 1), kth_difference(xs, ys, nm - k)


def newcombe(bad_w: int, n_w: int, bad_b: int, n_b: int, z: float) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval (his method 10) for ``bad_w/n_w − bad_b/n_b``:
    ``(estimate, lower, upper)`` at normal quantile ``z`` for each bound."""
    if n_w <= 0 or n_b <= 0:
        raise ValueError("both sides need at least one sample")
    p1, p2 = bad_w / n_w, bad_b / n_b
    l1, u1 = wilson(bad_w, n_w, z)
    l2, u2 = wilson(bad_b, n_b, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lower), min(1.0, upper)


def _no_data(policy: SLOVerdict, n: int, detail: dict[str, Any]) -> Judgement:
    return Judgement(outcome=policy, estimate=None, lower=None, upper=None, n=n, detail=detail)


def judge_latency_vs_baseline(
    baseline: Sequence[float],
    window: Sequence[float],
    *,
    max_ratio: float,
    confidence: float,
    min_samples: int,
    no_data: SLOVerdict,
) -> Judgement:
    """Are the window's latencies slower than the baseline's by more than ``max_ratio``?

    ``estimate``/``lower``/``upper`` are the latency ratio (window over baseline) and its
    one-sided bounds at ``confidence``. Latencies in seconds, successful requests only.
    """
    x = [v for v in baseline if v > 0 and math.isfinite(v)]
    y = [v for v in window if v > 0 and math.isfinite(v)]
    detail: dict[str, Any] = {
        "method": "mann-whitney + hodges-lehmann",
        "compare": "baseline",
        "unit": "×",
        "baseline_samples": len(x),
        "max_ratio": max_ratio,
        "confidence": confidence,
        "min_samples": min_samples,
    }
    if len(x) < min_samples or len(y) < min_samples:
        detail["reason"] = f"fewer than {min_samples} samples (baseline {len(x)}, window {len(y)})"
        return _no_data(no_data, len(y), detail)
    require_scipy()
    import random

    from scipy.stats import mannwhitneyu

    for name, sample in (("baseline", x), ("window", y)):
        if len(sample) > MAX_SAMPLE:
            sample[:] = random.Random(len(sample)).sample(sample, MAX_SAMPLE)
            detail[f"{name}_subsampled_to"] = MAX_SAMPLE
    lx = [math.log(v) for v in x]
    ly = [math.log(v) for v in y]
    hl, lo, hi = hodges_lehmann(lx, ly, confidence)
    test = mannwhitneyu(ly, lx, alternative="greater")
    p_value = float(test.pvalue)
    ratio = math.exp(hl)
    lower = math.exp(lo) if lo is not None else None
    upper = math.exp(hi) if hi is not None else None
    alpha = 1.0 - confidence
    if lower is not None and lower > max_ratio and p_value < alpha:
        outcome = SLOVerdict.FAIL
    elif upper is not None and upper <= max_ratio:
        outcome = SLOVerdict.PASS
    else:
        outcome = SLOVerdict.INCONCLUSIVE
    detail.update(
        {
            "u": float(test.statistic),
            "p_value": p_value,
            "baseline_median_ms": _median(x) * 1000.0,
            "window_median_ms": _median(y) * 1000.0,
        }
    )
    return Judgement(outcome=outcome, estimate=ratio, lower=lower, upper=upper, n=len(y), detail=detail)


def judge_ratio_vs_baseline(
    *,
    bad_baseline: int,
    n_baseline: int,
    bad_window: int,
    n_window: int,
    max_increase: float,
    confidence: float,
    min_samples: int,
    no_data: SLOVerdict,
) -> Judgement:
    """Did the bad ratio rise above the baseline's by more than ``max_increase``?

    ``estimate``/``lower``/``upper``: the increase of the bad ratio (window − baseline)
    and its one-sided bounds at ``confidence``.
    """
    detail: dict[str, Any] = {
        "method": "newcombe",
        "compare": "baseline",
        "unit": "Δ",
        "baseline_samples": n_baseline,
        "baseline_bad": bad_baseline,
        "bad": bad_window,
        "max_increase": max_increase,
        "confidence": confidence,
        "min_samples": min_samples,
    }
    if n_baseline < min_samples or n_window < min_samples:
        detail["reason"] = f"fewer than {min_samples} samples (baseline {n_baseline}, window {n_window})"
        return _no_data(no_data, n_window, detail)
    d, lower, upper = newcombe(bad_window, n_window, bad_baseline, n_baseline, z_one_sided(confidence))
    if lower > max_increase:
        outcome = SLOVerdict.FAIL
    elif upper <= max_increase:
        outcome = SLOVerdict.PASS
    else:
        outcome = SLOVerdict.INCONCLUSIVE
    detail["baseline_ratio"] = bad_baseline / n_baseline
    detail["window_ratio"] = bad_window / n_window
    return Judgement(outcome=outcome, estimate=d, lower=lower, upper=upper, n=n_window, detail=detail)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0
