"""The resilience score and its classification (rules in chaoslab.report.score's docstring)."""

from __future__ import annotations

import pytest

from chaoslab.report.score import Class, Scored, Thresholds, credit, score

TH = Thresholds(pass_at=90, warn_at=70)


def s(*pairs: tuple[str, float]) -> list[Scored]:
    return [Scored(name=f"e{i}", weight=w, verdict=v) for i, (v, w) in enumerate(pairs)]


def test_all_passed_is_100_and_passes() -> None:
    sc = score(s(("passed", 1), ("passed", 3)))
    assert (sc.value, sc.low, sc.high) == (100.0, 100.0, 100.0)
    assert sc.classify(TH) is Class.PASS


def test_weights_count() -> None:
    sc = score(s(("passed", 3), ("deviated", 1)))
    assert sc.value == 75.0
    assert sc.classify(TH) is Class.WARN


@pytest.mark.parametrize(
    "verdict", ["deviated", "aborted", "not-clean", "error", "interrupted", "invalid-input"]
)
def test_non_passing_verdicts_earn_nothing(verdict: str) -> None:
    assert credit(verdict) == 0.0
    assert score(s((verdict, 1))).value == 0.0


def test_unknown_verdict_earns_nothing() -> None:
    assert credit("something-new") == 0.0


def test_inconclusive_is_half_credit_with_a_range() -> None:
    sc = score(s(("passed", 1), ("inconclusive", 1)))
    assert (sc.value, sc.low, sc.high) == (75.0, 50.0, 100.0)
    # Between fail and pass depending on the inconclusive run: the gate cannot tell.
    assert sc.classify(TH) is Class.INCONCLUSIVE


def test_inconclusive_that_cannot_change_the_class_does_not_blur_it() -> None:
    sc = score(s(("passed", 19), ("inconclusive", 1)))
    assert sc.low == 95.0
    assert sc.classify(TH) is Class.PASS
    sc = score(s(("deviated", 9), ("inconclusive", 1)))
    assert sc.high == 10.0
    assert sc.classify(TH) is Class.FAIL


def test_thresholds_are_inclusive() -> None:
    assert score(s(("passed", 9), ("deviated", 1))).classify(TH) is Class.PASS  # exactly 90
    assert score(s(("passed", 7), ("deviated", 3))).classify(TH) is Class.WARN  # exactly 70
    assert score(s(("passed", 6), ("deviated", 4))).classify(TH) is Class.FAIL


def test_empty_suite_and_bad_weights_are_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        score([])
    with pytest.raises(ValueError, match="positive"):
        score(s(("passed", 0)))
    with pytest.raises(ValueError, match="warn"):
        Thresholds(pass_at=50, warn_at=60)
