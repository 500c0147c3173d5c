"""The failure matrix: every fault operation of the local drivers under every failure.

Each cell runs ``chaoslab run`` in a subprocess (what a user runs) on an experiment that
injects the operation's fault on a real target, holds it while the test looks at the
target, then meets its scenario: success, a guard abort, an exception in an action, a
crashing probe, an activity timeout, SIGINT, SIGTERM, a second SIGINT while reverting,
SIGKILL then ``chaoslab recover``, SIGKILL and nothing else (the lease, or for a kill
the supervisor, must end it).

Every cell asserts:

1. the fault took effect on the target (observed there, not through the driver) while
   the run held it, and its ledger entry was open;
2. afterwards the target is clean, observed independently of the driver AND by the
   driver's ``check_clean`` on the record taken from the journal (or, for SIGKILL cells,
   from the ledger);
3. the journal (for SIGKILL cells: the event log and the ledger) says what happened;
4. the exit code is the scenario's (``matrix_support.EXPECTED_EXIT``);
5. outside SIGKILL cells, the runner's own revert verified the target clean *before*
   the fault's lease would have ended it, and closed the ledger entry.

Targets are the contract suite's (tests/contract/cases_*.py) and, for proxy faults, a
proxy server process + echo service of the cell's own (tests/integration/proxykit.py
``own_proxy``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.registry import DriverRegistry
from tests.conftest import poll, require, wait_until
from tests.contract.cases import Target
from tests.contract.targets import adopting_orphans
from tests.integration.matrix_support import (
    EXPECTED_EXIT,
    SCENARIOS,
    OpCase,
    Run,
    by_kind,
    experiment,
    flip_server,
    ledger_record,
    ledger_state,
    op_cases,
    recover_cli,
    start_run,
)
from tests.statepaths import env_state

pytestmark = [pytest.mark.root, pytest.mark.slow]

OPS = op_cases()
# Cells the grown matrix found failing and nobody has fixed yet: listed, never hidden.
KNOWN_FINDINGS: dict[tuple[str, str], str] = {}
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


@contextlib.contextmanager
def _target(case: OpCase, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    if case.make_target is None:
        ref = request.getfixturevalue("proxy")
        yield Target(selector=ref.target, handle=ref)
        return
    with case.make_target(tmp_path / "target") as target:
        yield target


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("case", OPS, ids=[c.id for c in OPS])
def test_cell(case: OpCase, scenario: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if (case.id, scenario) in KNOWN_FINDINGS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_FINDINGS[case.id, scenario], strict=False))
    ok, reason = case.available()
    require(ok, f"{case.id}: {reason}")
    (tmp_path / "target").mkdir()
    driver = DriverRegistry().get(case.driver)
    ctx = DriverContext(run_id="matrix-check", state_dir=tmp_path / "check", lab_dir=env_state().lab)
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(_target(case, tmp_path, request))
        flip = stack.enter_context(flip_server()) if scenario == "guard-abort" else None
        run = start_run(
            experiment(case, target, scenario, tmp_path / "cell" / "gate", flip=flip), tmp_path / "cell"
        )
        record: RevertRecord | None = None
        try:
            run.wait_gate("held")
            injected = run.wait_event("fault-injected")
            record = RevertRecord.from_dict(injected["record"])
            assert ledger_state(record.fault_id) == "open", "an active fault must have an open ledger entry"
            wait_until(
                lambda: case.effect(target, record),
                timeout_s=5.0,
                interval_s=0.05,
                what=f"{case.id}'s fault to show",
            )
            _SCENARIO[scenario](case, target, run, record, driver, ctx)
        finally:
            if run.proc.poll() is None:
                run.kill()
            if record is not None:
                driver.revert(ctx, record)  # a failed cell must not leave its fault behind


# --- scenario bodies -------------------------------------------------------------------


def _clean(
    case: OpCase, target: Target, record: RevertRecord, driver: Any, ctx: DriverContext, within_s: float = 3.0
) -> None:
    """Clean on the target (independently) and by the driver's check on ``record``."""
    last: dict[str, Any] = {}

    def clean() -> bool:
        last["seen"] = case.observe(target, record)
        last["report"] = driver.check_clean(ctx, record)
        return not last["seen"] and bool(last["report"].clean)

    poll(clean, timeout_s=within_s, interval_s=0.05)
    assert not last["seen"], f"{case.id}: the fault still shows on the target"
    assert last["report"].clean, last["report"].residue


def _finished(
    case: OpCase,
    target: Target,
    run: Run,
    record: RevertRecord,
    driver: Any,
    ctx: DriverContext,
    expected: int,
) -> dict[str, Any]:
    """Common checks of every cell the runner lived through; returns the journal."""
    code = run.finish()
    assert "Traceback" not in run.out + run.err, run.err
    assert code == expected, f"exit {code}, expected {expected}:\n{run.out}\n{run.err}"
    journal = run.journal()
    assert journal["chaoslab"]["exit_code"] == expected
    faults = journal["chaoslab"]["faults"]
    fid = record.fault_id
    journal_record = RevertRecord.from_dict(by_kind(faults, "fault-injected", fid)[0]["record"])
    _clean(case, target, journal_record, driver, ctx)
    reverted = by_kind(faults, "fault-reverted", fid)
    checked = by_kind(faults, "clean-checked", fid)
    assert len(reverted) == 1 and reverted[0]["ok"], reverted
    assert len(checked) == 1 and checked[0]["clean"], checked
    if journal_record.lease_expires_at is not None:
        # The runner's revert, not the lease, is what made it clean.
        assert checked[0]["ts"] < journal_record.lease_expires_at, (
            "the lease, not the runner, ended the fault"
        )
    else:
        assert reverted[0]["time_to_recover_s"] is not None  # a kill: revert waited for the heal
    assert ledger_state(fid) == "closed"
    return journal


def _run_entry(journal: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in journal["run"] if r["activity"]["name"] == name)


def _success(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    run.release("held")
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["success"])
    assert journal["chaoslab"]["verdict"] == "passed" and journal["status"] == "completed"
    assert [r["status"] for r in journal["run"]] == ["succeeded", "succeeded"]


def _guard_abort(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    run.release("held")  # the method now flips the service to 500s and blocks again
    run.wait_gate("breach")
    tripped = run.wait_event("guard-tripped", timeout_s=15)
    # The sequential test sees an all-500 service within a handful of requests, before
    # the hard limit's 1 s window is full.
    assert tripped["reason"].startswith("sequential test"), tripped
    # The brake reverts at once, and the runner abandons the still-blocked activity
    # instead of waiting for it: the run ends without the gate being released.
    _clean(case, target, record, driver, ctx, within_s=5.0)
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["guard-abort"])
    run.release("breach")  # the abandoned activity's thread may still be waiting on it
    extra = journal["chaoslab"]
    assert extra["verdict"] == "aborted" and journal["status"] == "aborted"
    assert "aborted by the guard" in extra["reason"]
    assert [g["reason"] for g in extra["guard"]] == [tripped["reason"]]
    assert isinstance(extra["breach_to_clean_s"], float) and 0 < extra["breach_to_clean_s"] < 5.0
    assert [s["verdict"] for s in extra["slo"] if s["window"] == "baseline"] == ["pass"]


def _action_exception(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    run.release("held")
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["action-exception"])
    boom = _run_entry(journal, "boom")
    assert boom["status"] == "failed" and "boom from the action" in boom["exception"][0], boom
    assert journal["chaoslab"]["verdict"] == "passed" and not journal["deviated"]


def _probe_crash(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    run.release("held")
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["probe-crash"])
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    after = journal["steady_states"]["after"]
    assert after["steady_state_met"] is False
    assert after["probes"][0]["status"] == "failed" and "probe crashed" in after["probes"][0]["exception"][0]
    assert journal["deviated"] is True and journal["chaoslab"]["verdict"] == "deviated"


def _activity_timeout(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    released = time.monotonic()
    run.release("held")
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["activity-timeout"])
    # The 30 s action was abandoned at its 1 s deadline, not waited for.
    assert time.monotonic() - released < 20
    slow = _run_entry(journal, "slow")
    assert slow["status"] == "failed" and slow["chaoslab"] == {"timed_out": True}, slow
    assert "deadline" in slow["exception"][0]
    assert journal["chaoslab"]["verdict"] == "passed"


def _signalled(
    case: OpCase,
    target: Target,
    run: Run,
    record: RevertRecord,
    driver: Any,
    ctx: DriverContext,
    scenario: str,
) -> None:
    run.signal(SIGNALS[scenario])
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT[scenario])
    extra = journal["chaoslab"]
    assert extra["verdict"] == "interrupted" and journal["status"] == "interrupted"
    assert [(i["signal"], i["during"]) for i in extra["interruptions"]] == [(SIGNALS[scenario].name, "run")]
    held = _run_entry(journal, "hold")  # the activity the signal cut short says so
    assert held["status"] == "failed" and held["exception"] == [f"interrupted by {SIGNALS[scenario].name}"]


def _second_sigint(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    run.signal(signal.SIGINT)
    run.wait_gate("rollback")  # inside the shielded wind-down
    run.signal(signal.SIGINT)
    # The run acknowledges the second Ctrl-C on stderr before the rollback may go on.
    wait_until(
        lambda: "reverts are never skipped" in run.err_so_far(), timeout_s=10, what="the second SIGINT"
    )
    run.release("rollback")
    journal = _finished(case, target, run, record, driver, ctx, EXPECTED_EXIT["second-sigint"])
    assert "reverts are never skipped" in run.err, run.err
    extra = journal["chaoslab"]
    assert [(i["signal"], i["during"]) for i in extra["interruptions"]] == [
        ("SIGINT", "run"),
        ("SIGINT", "revert"),
    ]
    assert [(r["activity"]["name"], r["status"]) for r in journal["rollbacks"]] == [
        ("slow-rollback", "succeeded")
    ]
    assert extra["verdict"] == "interrupted"


def _killed_runner(case: OpCase, target: Target, run: Run, record: RevertRecord) -> RevertRecord:
    """SIGKILL the runner mid-method; check what it left: an event log and a ledger entry."""
    run.kill()
    assert run.proc.returncode == -signal.SIGKILL
    assert not run.journal_path.exists(), "a SIGKILLed runner cannot have finished its journal"
    events = run.events()
    assert by_kind(events, "fault-injected", record.fault_id)
    assert not by_kind(events, "fault-reverted") and not by_kind(events, "run-finished")
    assert ledger_state(record.fault_id) == "open"
    return ledger_record(record.fault_id)


def _sigkill_recover(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    ledgered = _killed_runner(case, target, run, record)
    assert ledgered.to_dict() == record.to_dict(), "the ledger must hold the record inject returned"
    if case.lease:
        assert case.observe(target, ledgered), "the fault must outlive the runner until recovered"
    done = recover_cli()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    outcomes = {o["fault_id"]: o for o in report["outcomes"]}
    assert outcomes[record.fault_id]["status"] == "closed", report
    assert outcomes[record.fault_id]["clean"] is True
    if ledgered.lease_expires_at is not None:
        assert time.time() < ledgered.lease_expires_at, (
            "recover must beat the lease for this cell to mean anything"
        )
    _clean(case, target, ledgered, driver, ctx)
    assert ledger_state(record.fault_id) == "closed"


def _sigkill_lease(
    case: OpCase, target: Target, run: Run, record: RevertRecord, driver: Any, ctx: DriverContext
) -> None:
    ledgered = _killed_runner(case, target, run, record)
    if ledgered.lease_expires_at is None:
        # No lease (a kill): the system heals by itself — the supervisor restarts it.
        _clean(case, target, ledgered, driver, ctx, within_s=case.heal_s)
    else:
        assert case.observe(target, ledgered), "the fault must outlive the runner until its lease"
        _clean(
            case,
            target,
            ledgered,
            driver,
            ctx,
            within_s=max(0.0, ledgered.lease_expires_at - time.time()) + 1.5,
        )
    # Nobody verified it: the entry stays open for `chaoslab recover` to confirm and close.
    assert ledger_state(record.fault_id) == "open"


_SCENARIO: dict[str, Any] = {
    "success": _success,
    "guard-abort": _guard_abort,
    "action-exception": _action_exception,
    "probe-crash": _probe_crash,
    "activity-timeout": _activity_timeout,
    "sigint": functools.partial(_signalled, scenario="sigint"),
    "sigterm": functools.partial(_signalled, scenario="sigterm"),
    "second-sigint": _second_sigint,
    "sigkill-recover": _sigkill_recover,
    "sigkill-lease": _sigkill_lease,
}


# --- edge cells: interruptions at the worst moments ---------------------------------------


def _sleeper_cell(tmp_path: Path) -> tuple[OpCase, contextlib.AbstractContextManager[Target]]:
    case = next(c for c in OPS if c.id == "process.suspend")
    assert case.make_target is not None
    return case, case.make_target(tmp_path / "target")


def test_ctrl_c_hammered_until_exit(tmp_path: Path) -> None:
    """A user pressing Ctrl-C again and again: every fault reverted, journal written, exit 130."""
    case, make_target = _sleeper_cell(tmp_path)
    driver = DriverRegistry().get(case.driver)
    ctx = DriverContext(run_id="matrix-check", state_dir=tmp_path / "check", lab_dir=env_state().lab)
    (tmp_path / "target").mkdir()
    with make_target as target:
        run = start_run(experiment(case, target, "sigint", tmp_path / "cell" / "gate"), tmp_path / "cell")
        record: RevertRecord | None = None
        try:
            run.wait_gate("held")
            record = RevertRecord.from_dict(run.wait_event("fault-injected")["record"])

            def hammer() -> bool:
                """One more Ctrl-C, every 2 ms (the pace is the test), until the run has exited."""
                if run.proc.poll() is not None:
                    return True
                with contextlib.suppress(ProcessLookupError):
                    run.signal(signal.SIGINT)
                return False

            poll(
                hammer, timeout_s=10, interval_s=0.002
            )  # a run that needs longer to revert one fault is hung
            code = run.finish(timeout_s=10)
            _clean(case, target, record, driver, ctx)
            assert "Aborted!" not in run.out + run.err and "Traceback" not in run.err, run.err
            assert run.journal_path.exists(), "the journal was lost"
            assert code == 130, f"exit {code}:\n{run.out}\n{run.err}"
            assert run.journal()["chaoslab"]["verdict"] == "interrupted"
        finally:
            if run.proc.poll() is None:
                run.kill()
            if record is not None:
                driver.revert(ctx, record)


def test_sigint_while_a_timed_fault_is_reverted(tmp_path: Path) -> None:
    """SIGINT lands while the runner waits for a killed component to heal (its revert)."""
    from chaoslab import paths
    from tests.contract.targets import lab_replica

    # The supervisor restarts the component 2 s after the kill: the revert waits that long.
    with lab_replica(paths.lab_dir(env_state().home), restart_delay_s=2.0) as replica:
        doc = {
            "title": "SIGINT during a revert",
            "description": "a timed kill whose revert waits for the heal",
            "method": [
                {
                    "do": "process.kill",
                    "target": f"lab:{replica.name}",
                    "name": "fault",
                    "duration": "0.2s",
                    "with": {"timeout": "10s"},
                }
            ],
        }
        run = start_run(doc, tmp_path / "cell")
        try:
            injected = run.wait_event("fault-injected")
            # Not a barrier: the revert starts on a clock (the 0.2 s duration) and no event
            # marks it; +1 s lands the SIGINT mid-wait in [0.2 s, 2 s], as the test intends.
            time.sleep(max(0.0, injected["ts"] + 1.0 - time.time()))
            assert not by_kind(run.events(), "fault-reverted"), "the revert should still be waiting"
            run.signal(signal.SIGINT)
            code = run.finish()
            wait_until(replica.live, timeout_s=10, interval_s=0.05, what="the supervisor to restart it")
            journal = run.journal()
            checked = by_kind(journal["chaoslab"]["faults"], "clean-checked", injected["fault_id"])
            assert [c["clean"] for c in checked] == [True], checked
            assert code == 130, f"exit {code}: {journal['chaoslab']['reason']}"
            assert journal["chaoslab"]["verdict"] == "interrupted"
            assert ledger_state(injected["fault_id"]) == "closed"
        finally:
            if run.proc.poll() is None:
                run.kill()


def test_duration_is_honoured_while_an_activity_runs(tmp_path: Path) -> None:
    case, make_target = _sleeper_cell(tmp_path)
    (tmp_path / "target").mkdir()
    with make_target as target:
        assert target.selector is not None
        doc = {
            "title": "a timed fault under a long action",
            "description": "duration: 1s, then a 4 s action",
            "method": [
                {"do": "process.suspend", "target": target.selector, "name": "fault", "duration": "1s"},
                {
                    "type": "action",
                    "name": "slow",
                    "provider": {
                        "type": "python",
                        "module": "tests.e2e.ctkfuncs",
                        "func": "sleep_quietly",
                        "arguments": {"seconds": 4},
                    },
                },
            ],
        }
        run = start_run(doc, tmp_path / "cell")
        try:
            assert run.finish() == 0, run.err
        finally:
            if run.proc.poll() is None:
                run.kill()
        faults = run.journal()["chaoslab"]["faults"]
        held_s = by_kind(faults, "fault-reverted")[0]["ts"] - by_kind(faults, "fault-injected")[0]["ts"]
        assert held_s < 1.5, f"duration 1s, held {held_s:.2f}s"


def test_guard_brakes_when_the_service_hangs(tmp_path: Path) -> None:
    """Every request hangs past the load's timeout: an outage the guard must stop."""
    case, make_target = _sleeper_cell(tmp_path)
    (tmp_path / "target").mkdir()
    with make_target as target, flip_server() as flip:
        doc = experiment(case, target, "guard-abort", tmp_path / "cell" / "gate", flip=flip)
        doc["load"]["timeout"] = "2s"
        doc["method"][2]["provider"]["arguments"]["url"] = flip.hang_url
        doc["method"][3]["provider"]["arguments"]["timeout"] = 8.0  # the run ends by itself
        run = start_run(doc, tmp_path / "cell")
        try:
            run.wait_gate("held")
            run.release("held")
            code = run.finish()
        finally:
            if run.proc.poll() is None:
                run.kill()
        journal = run.journal()
        assert journal["chaoslab"]["guard"], "the guard never tripped on a service that stopped answering"
        assert code == 3, journal["chaoslab"]["reason"]
