"""The failure matrix's edge columns, for every fault operation of every driver.

What each column means, and what a driver family supplies to make it real on its
targets, is in tests/integration/matrix_edges.py. The bodies below are the same for
every driver: one situation, one verdict, one exit code, whoever the target is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.lease import LAPSE_S, POLL_S
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.safety.ledger import Ledger
from tests.conftest import poll, require, wait_until
from tests.contract.cases import Target
from tests.contract.targets import adopting_orphans
from tests.integration.matrix_edges import (
    EDGE_COLUMNS,
    EdgeHooks,
    NotApplicable,
    Variant,
    all_hooks,
    hook_for,
    not_applicable,
)
from tests.integration.matrix_support import (
    OpCase,
    Run,
    by_kind,
    experiment,
    ledger_record,
    ledger_state,
    op_cases,
    recover_cli,
    start_run,
)
from tests.statepaths import env_state

pytestmark = [pytest.mark.root, pytest.mark.slow]

OPS = op_cases()
HOOKS = all_hooks()


def _cells() -> list[Any]:
    cells = []
    for case in OPS:
        for column in EDGE_COLUMNS:
            if not isinstance(hook_for(HOOKS.get(case.id), column, case.lease), NotApplicable):
                cells.append(pytest.param(case, column, id=f"{case.id}-{column}"))
    return cells


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


def test_every_fault_has_every_edge_column_or_says_why_not() -> None:
    missing = [c.id for c in OPS if c.id not in HOOKS]
    assert not missing, f"no edge hooks for {missing} (tests/integration/matrix_edges.py FAMILIES)"
    assert set(HOOKS) <= {c.id for c in OPS}, "edge hooks for a case the matrix does not have"
    for (case_id, column), reason in not_applicable(OPS).items():
        assert len(reason) > 20, f"{case_id} / {column}: say why it cannot apply"


@contextlib.contextmanager
def _target(case: OpCase, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    if case.make_target is None:
        ref = request.getfixturevalue("proxy")
        yield Target(selector=ref.target, handle=ref)
        return
    (tmp_path / "target").mkdir()
    with case.make_target(tmp_path / "target") as target:
        yield target


def _varied(doc: dict[str, Any], variant: Variant) -> dict[str, Any]:
    fault = doc["method"][0]
    if variant.selector is not None:
        fault["target"] = variant.selector
    fault["with"] = {**fault["with"], **variant.args}
    return doc


def _fault_only(case: OpCase, target: Target, variant: Variant, title: str) -> dict[str, Any]:
    doc = experiment(case, target, "success", Path("/nonexistent"))
    doc["method"] = doc["method"][:1]
    doc["title"] = title
    return _varied(doc, variant)


def _clean(
    case: OpCase, target: Target, record: RevertRecord, ctx: DriverContext, within_s: float = 3.0
) -> None:
    """Clean on the target (independently) and by the driver's check on ``record``."""
    driver = DriverRegistry().get(case.driver)
    last: dict[str, Any] = {}

    def clean() -> bool:
        last["seen"] = case.observe(target, record)
        last["report"] = driver.check_clean(ctx, record)
        return not last["seen"] and bool(last["report"].clean)

    poll(clean, timeout_s=within_s, interval_s=0.05)
    assert not last["seen"], f"{case.id}: the fault still shows on the target"
    assert last["report"].clean, last["report"].residue


def _reason(run: Run) -> str:
    finished = by_kind(run.events(), "run-finished")
    return str(finished[0]["reason"]) if finished else ""


class Cell(NamedTuple):
    """What a column body works with: the fault, its family's hooks, the live target, a
    scratch directory, a context for the test's own checks, and the records a failed
    cell must still revert."""

    case: OpCase
    hooks: EdgeHooks | None
    target: Target
    tmp: Path
    ctx: DriverContext
    cleanup: list[RevertRecord]


@pytest.mark.parametrize(("case", "column"), _cells())
def test_edge(case: OpCase, column: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ok, reason = case.available()
    require(ok, f"{case.id}: {reason}")
    hooks = HOOKS.get(case.id)
    assert hooks is not None or column == "lease-lapses", f"no edge hooks for {case.id}"
    ctx = DriverContext(run_id="edge-check", state_dir=tmp_path / "check", lab_dir=env_state().lab)
    driver = DriverRegistry().get(case.driver)
    with _target(case, tmp_path, request) as target:
        cleanup: list[RevertRecord] = []
        try:
            _COLUMN[column](Cell(case, hooks, target, tmp_path, ctx, cleanup))
        finally:
            for record in cleanup:
                driver.revert(ctx, record)  # a failed cell must not leave its fault behind


# --- the columns ---------------------------------------------------------------------------


def _held(
    case: OpCase, target: Target, workdir: Path, cleanup: list[RevertRecord], **start: Any
) -> tuple[Run, RevertRecord]:
    """A run holding the fault (the matrix's plain experiment), its effect seen on the target."""
    run = start_run(experiment(case, target, "success", workdir / "gate"), workdir, **start)
    try:
        run.wait_gate("held")
        record = RevertRecord.from_dict(run.wait_event("fault-injected")["record"])
        cleanup.append(record)
        assert ledger_state(record.fault_id) == "open", "an active fault must have an open ledger entry"
        wait_until(
            lambda: case.effect(target, record),
            timeout_s=5.0,
            interval_s=0.05,
            what=f"{case.id}'s fault to show",
        )
    except BaseException:
        run.kill()
        raise
    return run, record


def _lease_lapses(cell: Cell) -> None:
    case, hooks, target, tmp, ctx, cleanup = cell
    run, record = _held(case, target, tmp / "run", cleanup)
    try:
        slack = hooks.lapse_slack_s if hooks is not None else 3.0
        run.signal(signal.SIGSTOP)  # alive, renewing nothing
        try:
            stopped = time.monotonic()
            ended = poll(
                lambda: not case.observe(target, record), timeout_s=LAPSE_S + POLL_S + slack, interval_s=0.05
            )
            took = time.monotonic() - stopped
        finally:
            run.signal(signal.SIGCONT)
        assert ended is not None, (
            f"the lease did not end {case.id} within {LAPSE_S + POLL_S + slack:.1f}s of the last renewal"
        )
        assert took <= LAPSE_S + POLL_S + slack, took
        run.release("held")
        code = run.finish()
    finally:
        run.kill()
    assert "Traceback" not in run.out + run.err, run.err
    lapsed = by_kind(run.events(), "lease-lapsed", record.fault_id)
    assert len(lapsed) == 1, f"{lapsed}\n{run.err}"
    assert code == 4, f"exit {code}: {_reason(run)}\n{run.err}"
    finished = by_kind(run.events(), "run-finished")
    assert finished[0]["verdict"] == "inconclusive" and "ended early by its lease" in finished[0]["reason"], (
        finished
    )
    _clean(case, target, record, ctx)
    assert ledger_state(record.fault_id) == "closed"


def _revert_fails(cell: Cell) -> None:
    case, hooks, target, tmp, ctx, cleanup = cell
    assert hooks is not None and not isinstance(hooks.break_revert, NotApplicable)
    if hooks.revert_fails_args:
        case = _with_args(case, hooks.revert_fails_args)
    run, record = _held(case, target, tmp / "run", cleanup)
    try:
        with hooks.break_revert(target, record):
            run.release("held")
            code = run.finish(timeout_s=120)
            assert "Traceback" not in run.out + run.err, run.err
            assert code == 6, f"exit {code}: {_reason(run)}\n{run.err}"
            # The revert says it failed, or the check after it found the fault still there.
            reverted = by_kind(run.events(), "fault-reverted", record.fault_id)
            checked = by_kind(run.events(), "clean-checked", record.fault_id)
            assert reverted, "the runner never tried to revert"
            assert not all(r["ok"] for r in reverted) or not all(c["clean"] for c in checked), (
                reverted,
                checked,
            )
            assert by_kind(run.events(), "run-finished")[0]["verdict"] == "not-clean"
            assert ledger_state(record.fault_id) == "open", "a failed revert must keep its entry open"
    finally:
        run.kill()
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    done = recover_cli(cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = {o["fault_id"]: o for o in json.loads(done.stdout)["outcomes"]}
    assert outcomes[record.fault_id]["status"] == "closed" and outcomes[record.fault_id]["clean"] is True, (
        outcomes
    )
    _clean(case, target, record, ctx, within_s=case.heal_s)
    assert ledger_state(record.fault_id) == "closed"


def _target_unreachable(cell: Cell) -> None:
    case, hooks, target, tmp, ctx, cleanup = cell
    assert hooks is not None and not isinstance(hooks.unreachable, NotApplicable)
    workdir = tmp / "run"
    workdir.mkdir()
    with hooks.unreachable(target, workdir) as variant:
        run = start_run(
            _fault_only(case, target, variant, f"{case.id}: unreachable"), workdir, extra_env=variant.env
        )
        code = run.finish(timeout_s=120)
    assert "Traceback" not in run.out + run.err, run.err
    events = run.events()
    assert not by_kind(events, "fault-injected"), "an unreachable target cannot have been injected"
    (not_applied,) = by_kind(events, "fault-not-applied")
    assert code == 5, f"exit {code}: {_reason(run)}\n{run.err}"
    assert "could not run" in run.out + run.err or not_applied["reason"], run.out
    assert ledger_state(not_applied["fault_id"]) != "open"
    assert Ledger(env_state().ledger).open_entries() == [], "nothing for recover to chase"


def _named_two_ways(cell: Cell) -> None:
    case, hooks, target, tmp, ctx, cleanup = cell
    assert hooks is not None and not isinstance(hooks.alias, NotApplicable)
    first, record = _held(case, target, tmp / "first", cleanup)
    try:
        second_dir = tmp / "second"
        second_dir.mkdir()
        with hooks.alias(target, second_dir) as variant:
            second = start_run(
                _fault_only(case, target, variant, f"{case.id}: named again"),
                second_dir,
                extra_env=variant.env,
            )
            code = second.finish(timeout_s=60)
        assert "Traceback" not in second.out + second.err, second.err
        assert not by_kind(second.events(), "fault-injected"), (
            "the second name injected the same target again"
        )
        reason = _reason(second)
        assert code == 5, f"exit {code}: {reason}\n{second.err}"
        assert "locked by" in reason and any(key in reason for key in record.keys), (reason, record.keys)
        assert [e.fault_id for e in Ledger(env_state().ledger).open_entries()] == [record.fault_id]
        # A's fault still holds (``effect``: for a kill, what it killed stays killed even
        # after the system healed, which it may have done while B ran).
        assert case.effect(target, record), "the refused run touched the first run's fault"
        first.release("held")
        code = first.finish()
    finally:
        first.kill()
    assert code == 0, f"exit {code}: {_reason(first)}\n{first.err}"
    _clean(case, target, record, ctx)
    assert ledger_state(record.fault_id) == "closed"


def _relpath_recover_elsewhere(cell: Cell) -> None:
    case, hooks, target, tmp, ctx, cleanup = cell
    assert hooks is not None and not isinstance(hooks.relative, NotApplicable)
    here, elsewhere = tmp / "here", tmp / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    with hooks.relative(target, here, elsewhere) as variant:
        doc = _varied(experiment(case, target, "success", here / "gate"), variant)
        run = start_run(doc, here, extra_env=variant.env, relative=True)
        try:
            run.wait_gate("held")
            record = RevertRecord.from_dict(run.wait_event("fault-injected")["record"])
            cleanup.append(record)
            wait_until(
                lambda: case.effect(target, record),
                timeout_s=5.0,
                interval_s=0.05,
                what=f"{case.id}'s fault to show",
            )
        finally:
            run.kill()
        assert run.proc.returncode == -signal.SIGKILL
        ledgered = ledger_record(record.fault_id)
        as_json = json.dumps(ledgered.to_dict())
        leaked = [s for s in variant.relative if json.dumps(s) in as_json]
        assert not leaked, f"the record holds relative paths {leaked}: {as_json}"
        if case.lease:
            assert case.observe(target, ledgered), "the fault must outlive the runner until recovered"
        done = recover_cli(cwd=elsewhere)
        assert done.returncode == 0, done.stdout + done.stderr
        outcomes = {o["fault_id"]: o for o in json.loads(done.stdout)["outcomes"]}
        assert (
            outcomes[record.fault_id]["status"] == "closed" and outcomes[record.fault_id]["clean"] is True
        ), outcomes
        if case.lease:
            # Clean at once. A recover that checked the wrong place and retired the lease
            # would leave the fault on for good, and this sees it; if the lease won the
            # race instead, nothing is left broken either way.
            _clean(case, target, ledgered, ctx, within_s=0.5)
        else:
            _clean(case, target, ledgered, ctx, within_s=case.heal_s)
        assert ledger_state(record.fault_id) == "closed"


def _with_args(case: OpCase, args: Mapping[str, Any]) -> OpCase:
    return dataclasses.replace(case, args={**case.args, **args})


_COLUMN: dict[str, Callable[[Cell], None]] = {
    "lease-lapses": _lease_lapses,
    "revert-fails": _revert_fails,
    "target-unreachable": _target_unreachable,
    "named-two-ways": _named_two_ways,
    "relpath-recover-elsewhere": _relpath_recover_elsewhere,
}
