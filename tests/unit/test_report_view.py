"""RunView: what every report derives from a journal (and the journal builder the report tests share).

``make_journal`` feeds real events through the engine's own ``JournalBuilder``, so the
journals here have exactly the shape ``chaoslab run`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaoslab.engine import events as ev
from chaoslab.engine.journal import JournalBuilder
from chaoslab.model.sections import Runbook, decode_runbook
from chaoslab.report.view import JournalError, RunView, load_journal

T0 = 1_800_000_000.0
RUN = "20270115-080000-abcdef"

SLOS = [
    {"name": "availability", "sli": "availability", "objective": 0.99},
    {"name": "p99", "sli": "latency", "percentile": 99, "threshold": "250ms"},
]


def _series(seconds: int, *, slow: range, errors: range) -> dict[str, Any]:
    """200 req/s; p99 of 400 ms in ``slow`` seconds, 50 errors in ``errors`` seconds."""
    t = [T0 + i for i in range(seconds)]
    n = [200] * seconds
    errs = [50 if i in errors else 0 for i in range(seconds)]
    good = [a - b for a, b in zip(n, errs, strict=True)]
    p50 = [0.002] * seconds
    p95 = [0.004 if i not in slow else 0.300 for i in range(seconds)]
    p99 = [0.006 if i not in slow else 0.400 for i in range(seconds)]
    return {"t": t, "n": n, "good": good, "errors": errs, "p50": p50, "p95": p95, "p99": p99}


def make_journal(
    *,
    verdict: str = "deviated",
    guard: bool = False,
    clean: bool = True,
    runbook: Any = None,
    slo_results: list[dict[str, Any]] | None = None,
    title: str = "slow replica",
    halt: bool = False,
) -> dict[str, Any]:
    """A 20 s run: fault at T0+5.2 reverted at T0+10.1, degraded seconds 5..11, errors at 6..7."""
    exp: dict[str, Any] = {
        "title": title,
        "description": "one replica slows down",
        "slo": SLOS,
        "tags": ["lab"],
        "method": [],
    }
    if runbook is not None:
        exp["runbook"] = runbook
    b = JournalBuilder()

    def emit(e: ev.Event) -> None:
        b(e)

    emit(ev.RunStarted(run_id=RUN, ts=T0, title=title, source="x.yaml", pid=1, experiment=exp))
    emit(ev.PhaseStarted(run_id=RUN, ts=T0 + 5.0, phase=ev.Phase.METHOD))
    emit(
        ev.ActivityFinished(
            run_id=RUN,
            ts=T0 + 5.3,
            phase=ev.Phase.METHOD,
            name="slow-replica-1",
            activity_type="action",
            status="succeeded",
            start=T0 + 5.1,
            end=T0 + 5.3,
            activity={"name": "slow-replica-1", "type": "action"},
        )
    )
    emit(
        ev.FaultInjected(
            run_id=RUN,
            ts=T0 + 5.2,
            fault_id="f1",
            driver="proxy",
            operation="latency",
            target="lab:replica-1",
            lease_s=10.0,
            record={},
        )
    )
    if guard:
        emit(ev.GuardTripped(run_id=RUN, ts=T0 + 7.5, reason="error rate 25% for 2s", breach_ts=T0 + 7.4))
    if halt:  # an operator pressed `chaoslab halt` (the runner sees it as the HALT interruption)
        emit(ev.Interrupted(run_id=RUN, ts=T0 + 8.0, signal="HALT", during="run", pending=("f1",)))
    emit(
        ev.FaultReverted(
            run_id=RUN,
            ts=T0 + 10.1,
            fault_id="f1",
            driver="proxy",
            operation="latency",
            ok=True,
            detail="toxic removed",
            duration_s=0.04,
        )
    )
    emit(
        ev.CleanChecked(
            run_id=RUN,
            ts=T0 + 10.2,
            fault_id="f1",
            driver="proxy",
            clean=clean,
            residue=() if clean else ("toxic chaoslab-f1 still present",),
        )
    )
    emit(ev.PhaseFinished(run_id=RUN, ts=T0 + 10.2, phase=ev.Phase.METHOD, ok=True))
    for r in slo_results if slo_results is not None else default_slo_results():
        emit(ev.SLOEvaluated(run_id=RUN, ts=T0 + 20.0, **r))
    emit(
        ev.SLISeries(
            run_id=RUN, ts=T0 + 20.0, source="load", series=_series(20, slow=range(5, 12), errors=range(6, 8))
        )
    )
    emit(
        ev.RunFinished(
            run_id=RUN,
            ts=T0 + 20.0,
            verdict=verdict,
            exit_code=1,
            reason="p99 failed in during",
            duration_s=20.0,
        )
    )
    doc = b.build(
        experiment=exp,
        extra={
            "breach_to_clean_s": 0.4 if guard else None,
            "windows": {
                "baseline": [T0, T0 + 5.0],
                "during": [T0 + 5.2, T0 + 10.1],
                "after": [T0 + 11, T0 + 20],
            },
            "seed": 7,
        },
    )
    # Through JSON and back: what a reader on another machine gets.
    return dict(json.loads(json.dumps(doc)))


def default_slo_results() -> list[dict[str, Any]]:
    return [
        {
            "window": "baseline",
            "objective": "availability",
            "verdict": "pass",
            "estimate": 1.0,
            "lower": 0.996,
            "upper": 1.0,
            "samples": 1000,
            "detail": {"good": 1000, "slo": "availability ≥ 0.99"},
        },
        {
            "window": "during",
            "objective": "availability",
            "verdict": "fail",
            "estimate": 0.9,
            "lower": 0.88,
            "upper": 0.92,
            "samples": 1000,
            "detail": {"good": 900, "slo": "availability ≥ 0.99"},
        },
        {
            "window": "during",
            "objective": "p99",
            "verdict": "fail",
            "estimate": 400.0,
            "lower": 390.0,
            "upper": 410.0,
            "samples": 1000,
            "detail": {"above": 150, "unit": "ms", "slo": "p99 ≤ 250ms"},
        },
        {
            "window": "after",
            "objective": "p99",
            "verdict": "inconclusive",
            "estimate": 6.0,
            "lower": 5.0,
            "upper": None,
            "samples": 120,
            "detail": {"above": 0, "unit": "ms", "slo": "p99 ≤ 250ms"},
        },
    ]


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
