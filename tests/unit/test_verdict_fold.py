"""The verdict as a pure fold over a run's events (chaoslab.engine.fold)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chaoslab.engine import events as ev
from chaoslab.engine.fold import VerdictFold, fold_verdict
from chaoslab.engine.journal import verdict_of_log
from chaoslab.verdict import SEVERITY, Verdict

RUN = "r1"


def injected(fid: str) -> ev.FaultInjected:
    return ev.FaultInjected(
        run_id=RUN, fault_id=fid, driver="process", operation="suspend", target="pid:1", lease_s=5, record={}
    )


def test_no_findings_is_a_pass_that_says_whether_anything_was_judged() -> None:
    assert fold_verdict([], ended=True) == (
        Verdict.PASSED,
        "the method ran; no steady state was checked (no hypothesis probes)",
    )
    checked = [ev.HypothesisChecked(run_id=RUN, phase=ev.Phase.AFTER, met=True)]
    assert fold_verdict(checked, ended=True) == (Verdict.PASSED, "the steady state held")


@given(st.lists(st.tuples(st.sampled_from(list(Verdict)), st.sampled_from(["a", "b", "c"])), min_size=1))
def test_the_worst_finding_wins_and_its_reasons_are_joined(notes: list[tuple[Verdict, str]]) -> None:
    events = [ev.VerdictNoted(run_id=RUN, verdict=v, reason=r) for v, r in notes]
    verdict, reason = fold_verdict(events, ended=True)
    assert verdict is max((v for v, _ in notes), key=SEVERITY.index)
    assert reason.split("; ") == list(dict.fromkeys(r for v, r in notes if v is verdict))


def test_a_killed_run_with_a_fault_never_verified_clean_is_not_clean() -> None:
    log = [ev.RunStarted(run_id=RUN, title="t", source="x", pid=1, experiment={}), injected("f1")]
    verdict, reason = fold_verdict(log)
    assert verdict is Verdict.NOT_CLEAN and "process.suspend on pid:1" in reason
    log += [ev.CleanChecked(run_id=RUN, fault_id="f1", driver="process", clean=True)]
    assert fold_verdict(log)[0] is Verdict.INTERRUPTED


def test_run_finished_is_the_last_word() -> None:
    log = [
        ev.VerdictNoted(run_id=RUN, verdict=Verdict.DEVIATED, reason="SLO x failed"),
        ev.RunFinished(run_id=RUN, verdict="deviated", exit_code=1, reason="SLO x failed", duration_s=1.0),
    ]
    assert fold_verdict(log) == (Verdict.DEVIATED, "SLO x failed")


def test_a_log_round_trips_through_ndjson(tmp_path: Path) -> None:
    log: list[ev.Event] = [
        ev.RunStarted(run_id=RUN, title="t", source="x", pid=1, experiment={"title": "t"}),
        ev.PhaseStarted(run_id=RUN, phase=ev.Phase.METHOD),
        injected("f1"),
        ev.VerdictNoted(run_id=RUN, verdict=Verdict.ABORTED, reason="guard"),
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in log) + '{"kind": "torn')
    assert [ev.decode_event(e.to_dict()) for e in log] == log
    assert verdict_of_log(path) == fold_verdict(log)
    assert verdict_of_log(path)[0] is Verdict.NOT_CLEAN


def test_unknown_or_malformed_events_are_skipped() -> None:
    assert ev.decode_event({"kind": "from-the-future", "run_id": RUN}) is None
    assert ev.decode_event({"kind": "fault-injected", "run_id": RUN}) is None  # fields missing


def test_the_fold_is_a_bus_consumer() -> None:
    bus = ev.EventBus()
    fold = VerdictFold()
    bus.subscribe(fold)
    bus.emit(ev.VerdictNoted(run_id=RUN, verdict=Verdict.INCONCLUSIVE, reason="few samples"))
    assert fold.result(ended=True) == (Verdict.INCONCLUSIVE, "few samples")
