"""The guard's sequential test: known cases, scipy, and a simulation over many streams.

The simulation is the suite's measurement of the false-abort rate (healthy streams at
the tolerated rate, the worst case the risk is stated for) and of the detection delay by
outage severity; ``benchmarks/bench_guard.py`` runs a larger one beside the lab runs.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.sli.sequential import MixtureSPRT, alternatives, epoch_risk

scipy_stats = pytest.importorskip("scipy.stats")


def feed(test: MixtureSPRT, outcomes: Iterable[bool]) -> int | None:
    """Requests until the test trips (1-based), or None."""
    for i, bad in enumerate(outcomes):
        if test.add(bad) is not None:
            return i + 1
    return None


def test_alternatives_lie_above_the_tolerated_rate_and_below_099() -> None:
    grid = alternatives(0.1)
    assert len(grid) == 8
    assert all(0.1 < p <= 0.99 + 1e-12 for p in grid)
    assert list(grid) == sorted(grid)
    assert grid[-1] == pytest.approx(0.99)
    with pytest.raises(ValueError):
        alternatives(0.995)


def test_risk_spending_sums_to_at_most_the_risk() -> None:
    """Two families (periodic, after each bad request), each spending at most risk/2."""
    assert 2 * sum(epoch_risk(0.01, i) for i in range(1, 100_000)) <= 0.01
    assert epoch_risk(0.01, 1) == pytest.approx(0.01 / 2 * 6 / math.pi**2)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0, 1), p0=st.floats(0.001, 0.5))
def test_log_evidence_matches_scipy_binomial_likelihoods(n: int, frac: float, p0: float) -> None:
    k = round(frac * n)
    test = MixtureSPRT(p0=p0, risk=0.01)
    ratios = [scipy_stats.binom.logpmf(k, n, p) - scipy_stats.binom.logpmf(k, n, p0) for p in test.rates]
    top = max(ratios)
    expected = top + math.log(sum(math.exp(r - top) for r in ratios) / len(ratios))
    assert test.log_evidence(n, k) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_known_case_three_bad_requests() -> None:
    """p0 = 0.1: after 4 bad of 4, M = mean_j (p_j / 0.1)^4, computed by hand; the first
    test trips at the third bad request."""
    test = MixtureSPRT(p0=0.1, risk=0.01)
    by_hand = sum((p / 0.1) ** 4 for p in test.rates) / len(test.rates)
    assert math.exp(test.log_evidence(4, 4)) == pytest.approx(by_hand, rel=1e-12)
    # 1/α₁ = 2π²/(6·0.01) ≈ 329: M(2 of 2) ≈ 51 is not enough, M(3 of 3) ≈ 521 is.
    assert math.exp(test.log_evidence(2, 2)) < 2 * math.pi**2 / 6 / 0.01 < math.exp(test.log_evidence(3, 3))
    assert feed(test, [True] * 10) == 3
    assert test.decision is not None
    assert test.decision.family == "periodic"
    assert test.decision.log_threshold == pytest.approx(math.log(2 * math.pi**2 / 6 / 0.01))
    assert test.decision.rate == pytest.approx(0.99)


def test_good_requests_never_trip_it() -> None:
    test = MixtureSPRT(p0=0.01, risk=0.2)
    assert feed(test, [False] * 5000) is None


def test_a_late_total_outage_still_trips_within_a_handful() -> None:
    """After 3999 good requests the test started after the outage's first bad request
    has seen nothing good: it trips within a handful."""
    test = MixtureSPRT(p0=0.1, risk=0.01, epoch=400)
    trip = feed(test, [False] * 3999 + [True] * 100)
    assert trip is not None
    assert trip - 3999 <= 6, trip - 3999
    assert test.decision is not None and test.decision.family == "after-bad"


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MixtureSPRT(p0=0.1, risk=0.0)
    with pytest.raises(ValueError):
        MixtureSPRT(p0=0.1, risk=0.01, epoch=0)


# --- simulation ---------------------------------------------------------------------------


def false_aborts(p: float, p0: float, risk: float, streams: int, length: int, seed: int) -> int:
    trips = 0
    for s in range(streams):
        rng = random.Random(seed * 7919 + s)
        test = MixtureSPRT(p0=p0, risk=risk, epoch=200)
        trips += feed(test, (rng.random() < p for _ in range(length))) is not None
    return trips


@pytest.mark.parametrize(("p0", "risk", "streams", "length"), [(0.1, 0.01, 1000, 500), (0.3, 0.2, 200, 500)])
def test_simulated_false_abort_rate_stays_within_the_risk(
    p0: float, risk: float, streams: int, length: int
) -> None:
    """Healthy streams at exactly the tolerated rate (the worst case of 'within
    tolerance'): the share the test aborts is at most the risk."""
    trips = false_aborts(p0, p0, risk, streams, length, seed=1)
    rate = trips / streams
    print(f"\nfalse aborts at p = p0 = {p0}: {trips}/{streams} = {rate:.4f} (risk {risk})")
    assert rate <= risk


def test_simulated_detection_delay_by_outage_severity() -> None:
    """Requests from onset to trip, by the outage's bad-request rate (p0 = 0.1, risk
    0.01): a total outage within a handful, milder burns as soon as evidence suffices."""
    p0, risk, runs = 0.1, 0.01, 100
    table: dict[float, tuple[int, int]] = {}
    for severity in (1.0, 0.8, 0.5, 0.3):
        delays: list[int] = []
        for s in range(runs):
            rng = random.Random(10_000 + s)
            test = MixtureSPRT(p0=p0, risk=risk, epoch=400)
            # 200 healthy requests first (1 s at 200 req/s), then the outage.
            healthy = (rng.random() < 0.001 for _ in range(200))
            outage = (rng.random() < severity for _ in range(20_000))
            trip = feed(test, itertools.chain(healthy, outage))
            assert trip is not None and trip > 200, (severity, trip)
            delays.append(trip - 200)
        delays.sort()
        table[severity] = (delays[len(delays) // 2], delays[int(0.95 * len(delays)) - 1])
    print("\nseverity  median  p95 (requests from onset to trip; at 200 req/s, 5 ms each)")
    for severity, (med, p95) in table.items():
        print(f"{severity:8.1f}  {med:6d}  {p95:4d}")
    assert table[1.0][1] <= 5
    assert table[0.5][1] <= 60
    medians = [table[s][0] for s in (1.0, 0.8, 0.5, 0.3)]
    assert medians == sorted(medians)
