"""RunView: what every report derives from a journal (journals from ``tests.journals``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaoslab.model.sections import Runbook, decode_runbook
from chaoslab.report.view import JournalError, RunView, load_journal
from tests.journals import SLOS, T0, default_slo_results, make_journal


def test_faults_pair_injection_revert_and_clean_check() -> None:
    view = RunView.from_journal(make_journal(clean=False))
    (f,) = view.faults
    assert (f.start, f.end) == (T0 + 5.2, T0 + 10.1)
    assert f.reverted_ok is True and f.clean is False
    assert f.residue == ("toxic chaoslab-f1 still present",)
    assert view.not_clean == (f,)


def test_series_converted_to_ms_and_error_rate() -> None:
    view = RunView.from_journal(make_journal())
    s = view.main_series
    assert s is not None and len(s) == 20
    assert s.p99_ms[5] == pytest.approx(400.0)
    assert s.p50_ms[0] == pytest.approx(2.0)
    assert s.error_rate[6] == pytest.approx(0.25)
    assert s.rps[0] == 200


def test_time_to_detect_is_end_of_first_degraded_second_after_injection() -> None:
    view = RunView.from_journal(make_journal())
    # Second 5 ([T0+5, T0+6)) is the first to miss p99 ≤ 250ms; it is known at T0+6.
    assert view.time_to_detect_s == pytest.approx(6.0 - 5.2)


def test_time_to_detect_is_guard_breach_when_the_guard_tripped() -> None:
    view = RunView.from_journal(make_journal(guard=True, verdict="aborted"))
    assert view.aborted and view.guard_ts == T0 + 7.4
    assert view.time_to_detect_s == pytest.approx(7.4 - 5.2)
    assert view.breach_to_clean_s == 0.4


def test_time_to_recover_from_series_after_last_revert() -> None:
    view = RunView.from_journal(make_journal())
    # Revert at T0+10.1; second 11 still degraded and ends at T0+12.
    assert view.time_to_recover_s == pytest.approx(12.0 - 10.1)


def test_time_to_recover_prefers_a_ttr_objective() -> None:
    results = default_slo_results() + [
        {
            "window": "during",
            "objective": "heal",
            "verdict": "pass",
            "estimate": 3.5,
            "lower": None,
            "upper": None,
            "samples": 900,
            "detail": {"unit": "s"},
        }
    ]
    doc = make_journal(slo_results=results)
    doc["experiment"]["slo"] = SLOS + [
        {"name": "heal", "sli": "time-to-recover", "threshold": "10s", "of": "availability"}
    ]
    assert RunView.from_journal(doc).time_to_recover_s == 3.5


def test_error_budget_consumed_per_objective() -> None:
    view = RunView.from_journal(make_journal())
    by = {r.key: r for r in view.slo}
    # availability 0.9 against 0.99: 10% bad of a 1% budget.
    assert by["availability[during]"].budget_consumed == pytest.approx(10.0)
    assert by["availability[baseline]"].budget_consumed == pytest.approx(0.0)
    # p99 ≤ 250ms: 150 of 1000 above, 1% allowed.
    assert by["p99[during]"].budget_consumed == pytest.approx(15.0)
    assert by["p99[during]"].better == "lower" and by["availability[during]"].better == "higher"
    assert view.budget_consumed == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://runbooks/x", Runbook(url="https://runbooks/x")),
        (["drain", "restart"], Runbook(steps=("drain", "restart"))),
        ({"url": "https://r", "steps": ["a"]}, Runbook(url="https://r", steps=("a",))),
        (None, None),
        ([], None),
    ],
)
def test_runbook_forms(raw: Any, expected: Runbook | None) -> None:
    assert decode_runbook(raw) == expected


def test_load_journal_rejects_what_is_not_a_journal(tmp_path: Path) -> None:
    bad = tmp_path / "j.json"
    bad.write_text('{"status": "completed"}')
    with pytest.raises(JournalError, match="no 'chaoslab' section"):
        load_journal(bad)
    with pytest.raises(JournalError, match="journal not found"):
        load_journal(tmp_path / "missing.json")
    bad.write_text("{torn")
    with pytest.raises(JournalError, match="not valid JSON"):
        load_journal(bad)


def test_interrupted_journal_without_optional_parts_still_renders_a_view() -> None:
    doc = {"start": "2027-01-15T08:00:00+00:00", "chaoslab": {"verdict": "interrupted"}}
    view = RunView.from_journal(doc)
    assert view.verdict == "interrupted"
    assert view.series == () and view.faults == () and view.time_to_detect_s is None
