"""The process driver against real processes: selection, safety, healing, leases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaoslab import paths
from chaoslab.drivers.base import DriverContext, Kind, Operation, RevertRecord
from chaoslab.drivers.process import ProcessDriver
from chaoslab.drivers.watchdog import outcome_path
from chaoslab.errors import InvalidInput, TargetNotFound, UnsafeTarget
from chaoslab.lab.state import write_state
from tests.conftest import wait_until
from tests.contract.targets import adopting_orphans, lab_replica, sleepers, stop, unique_marker
from tests.statepaths import env_state

DRIVER = ProcessDriver()


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="t", state_dir=tmp_path / "state", lab_dir=env_state().lab)


def _op(name: str) -> Operation:
    op = DRIVER.operation(name)
    assert op is not None
    return op


def _status(pid: int) -> str:
    return str(psutil.Process(pid).status())


def _suspend(ctx: DriverContext, target: str, lease: float = 10, **args: Any) -> RevertRecord:
    return DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("suspend"), args, target, lease))


# --- bad input: clear errors, nothing injected -----------------------------------------


@pytest.mark.parametrize(
    ("op", "args", "lease", "match"),
    [
        ("suspend", {"count": "two"}, 5, "expected int"),
        ("suspend", {"count": 0}, 5, "below the minimum"),
        ("suspend", {"count": 1, "percent": 50}, 5, "only one of"),
        ("suspend", {"colour": "red"}, 5, "unknown argument"),
        ("suspend", {}, -1, "negative duration"),
        ("suspend", {}, 0, "lease must be positive"),
        ("suspend", {}, 10**9, "longer than the limit"),  # the duration grammar's bound
        ("suspend", {}, 2 * 86400, "absurd lease"),  # a valid duration, but no lease lasts that long
        ("kill", {"signal": "SIGNOPE"}, None, "unknown signal"),
        ("kill", {"signal": True}, None, "expected str or int"),
        ("kill", {"signal": "STOP"}, None, "no lease"),
        ("kill", {"timeout": "-5s"}, None, "not a duration"),
        ("kill", {"timeout": "48h"}, None, "absurd duration"),
    ],
)
def test_bad_arguments_are_refused_before_anything_happens(
    ctx: DriverContext, op: str, args: dict[str, Any], lease: float | None, match: str
) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        with pytest.raises(InvalidInput, match=match):
            DRIVER.prepare(ctx, _op(op), args, f"pattern:{marker}", lease)
        assert _status(proc.pid) != psutil.STATUS_STOPPED and proc.poll() is None


def test_unknown_operation_is_invalid_input(ctx: DriverContext) -> None:
    bogus = Operation(name="explode", kind=Kind.FAULT, summary="")
    with pytest.raises(InvalidInput, match="no fault operation 'explode'"):
        DRIVER.prepare(ctx, bogus, {}, "pid:123", 5)
    with pytest.raises(InvalidInput, match="no fault operation 'count'"):
        DRIVER.prepare(ctx, _op("count"), {}, "pid:123", 5)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ("pid:1", UnsafeTarget, "never touch"),
        ("pid:{self}", UnsafeTarget, "never touch"),
        ("pid:{parent}", UnsafeTarget, "never touch"),
        ("pattern:pytest|python", UnsafeTarget, "never touch"),
        ("pattern:[", InvalidInput, "invalid regex"),
        ("nope:x", InvalidInput, "unknown target kind"),
        ("pid:abc", InvalidInput, "positive integer"),
        (None, InvalidInput, "invalid process target"),
        ("pattern:no-such-process-9f8e7d", TargetNotFound, "no live process"),
        ("pidfile:/nonexistent/x.pid", TargetNotFound, "cannot read pid file"),
        ("lab:replica-1", TargetNotFound, "lab is not running"),
    ],
)
def test_unsafe_or_missing_targets_are_refused(
    ctx: DriverContext, target: str | None, error: type[Exception], match: str
) -> None:
    if target is not None:  # resolved here: test ids must be the same in every xdist worker
        target = target.format(self=os.getpid(), parent=os.getppid())
    with pytest.raises(error, match=match):
        DRIVER.prepare(ctx, _op("suspend"), {}, target, 5)


def test_a_watchdog_is_never_a_target(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        record = _suspend(ctx, f"pattern:{marker}")
        try:
            wd = record.data["watchdog"]["pid"]
            with pytest.raises(UnsafeTarget):
                DRIVER.prepare(ctx, _op("suspend"), {}, f"pid:{wd}", 5)
            with pytest.raises(UnsafeTarget):
                DRIVER.prepare(ctx, _op("kill"), {}, "pattern:chaoslab.drivers.watchdog", None)
        finally:
            DRIVER.revert(ctx, record)
        assert _status(proc.pid) != psutil.STATUS_STOPPED


# --- selection -------------------------------------------------------------------------


def test_selection_count_percent_all_with_recorded_seed(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker, n=4) as procs:
        target = f"pattern:{marker}"

        def picked(args: dict[str, Any], c: DriverContext = ctx) -> list[int]:
            rec = DRIVER.prepare(c, _op("suspend"), args, target, 5)
            return [p["pid"] for p in rec.data["procs"]]

        assert len(picked({})) == 1
        assert len(picked({"count": 2, "seed": 7})) == 2
        assert picked({"count": 2, "seed": 7}) == picked({"count": 2, "seed": 7})
        assert len({tuple(picked({"count": 2, "seed": s})) for s in range(12)}) > 1
        assert len(picked({"percent": 50})) == 2
        assert len(picked({"percent": 1})) == 1  # rounds up, never zero
        assert sorted(picked({"all": True})) == sorted(p.pid for p in procs)
        assert len(picked({"count": 10, "allow_fewer": True})) == 4
        with pytest.raises(TargetNotFound):
            picked({"count": 10})  # fewer than asked: an error, not a silent "all"
        with pytest.raises(UnsafeTarget):
            picked({"count": 1, "max": 3})  # the selector matches 4: refused
        rec = DRIVER.prepare(ctx, _op("suspend"), {"count": 2, "seed": 42}, target, 5)
        assert rec.data["pick"]["seed"] == 42 and rec.data["pick"]["candidates"] == 4
        run_seeded = DriverContext(run_id="t", state_dir=ctx.state_dir, seed=99, lab_dir=env_state().lab)
        rec = DRIVER.prepare(run_seeded, _op("suspend"), {"count": 2}, target, 5)
        assert rec.data["pick"]["seed"] == 99
        assert all("create_time" in p for p in rec.data["procs"])


def test_count_probe(ctx: DriverContext) -> None:
    marker = unique_marker()
    count = _op("count")
    assert DRIVER.probe(ctx, count, {}, f"pattern:{marker}") == 0
    with sleepers(marker, n=3):
        assert DRIVER.probe(ctx, count, {}, f"pattern:{marker}") == 3
    with pytest.raises(InvalidInput):
        DRIVER.probe(ctx, count, {"count": 1}, f"pattern:{marker}")


# --- suspend -----------------------------------------------------------------------------


def test_suspend_some_then_revert_resumes_exactly_those(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker, n=3) as procs:
        record = _suspend(ctx, f"pattern:{marker}", count=2, seed=1)
        try:
            chosen = {p["pid"] for p in record.data["procs"]}
            states = {p.pid: _status(p.pid) for p in procs}
            assert {pid for pid, s in states.items() if s == psutil.STATUS_STOPPED} == chosen
            report = DRIVER.check_clean(ctx, record)
            assert not report.clean and any("stopped" in r for r in report.residue)
        finally:
            assert DRIVER.revert(ctx, record).reverted
        assert all(_status(p.pid) != psutil.STATUS_STOPPED for p in procs)
        assert DRIVER.check_clean(ctx, record).clean


def test_watchdog_resumes_when_the_lease_ends_and_records_the_outcome(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        record = _suspend(ctx, f"pattern:{marker}", lease=1.0)
        try:
            assert _status(proc.pid) == psutil.STATUS_STOPPED
            wait_until(
                lambda: _status(proc.pid) != psutil.STATUS_STOPPED,
                timeout_s=2.5,
                interval_s=0.05,
                what="the watchdog to resume the process",
            )
            path = outcome_path(ctx.state_dir, record.fault_id)
            wait_until(path.exists, timeout_s=2.0, interval_s=0.05, what="the watchdog's outcome file")
            outcome = json.loads(path.read_text())
            assert outcome["reverted"] and outcome["clean"], outcome
            assert outcome["lease_expired_at"] >= (record.lease_expires_at or 0)
            assert DRIVER.check_clean(ctx, record).clean
        finally:
            DRIVER.revert(ctx, record)


def test_revert_never_signals_a_recycled_pid(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        record = _suspend(ctx, f"pattern:{marker}")
        DRIVER.revert(ctx, record)
        os.kill(proc.pid, signal.SIGSTOP)  # someone else stops the same pid...
        try:
            wait_until(lambda: _status(proc.pid) == psutil.STATUS_STOPPED, timeout_s=2, what="the SIGSTOP")
            forged = record.with_data(
                procs=[{"pid": proc.pid, "create_time": record.data["procs"][0]["create_time"] - 5}]
            )  # ...and our record names a process that started earlier: not this one
            DRIVER.revert(ctx, forged)
            assert _status(proc.pid) == psutil.STATUS_STOPPED
            assert DRIVER.check_clean(ctx, forged).clean
        finally:
            os.kill(proc.pid, signal.SIGCONT)


def test_suspend_by_pidfile_name_and_hand_written_lab_state(ctx: DriverContext, tmp_path: Path) -> None:
    exe = tmp_path / unique_marker("clsleep")[:15]  # comm names are cut at 15 chars
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "60"])
    try:
        pidfile = tmp_path / "x.pid"
        pidfile.write_text(f"{proc.pid}\n")
        write_state(
            paths.lab_dir(env_state().home),
            {"components": {"replica-9": {"kind": "replica", "pid": proc.pid}}},
        )
        for target in (f"pidfile:{pidfile}", f"name:{exe.name}", "lab:replica-9"):
            record = _suspend(ctx, target)
            try:
                assert [p["pid"] for p in record.data["procs"]] == [proc.pid], target
                assert _status(proc.pid) == psutil.STATUS_STOPPED, target
            finally:
                DRIVER.revert(ctx, record)
            assert _status(proc.pid) != psutil.STATUS_STOPPED
        with pytest.raises(TargetNotFound, match="no lab component"):
            DRIVER.prepare(ctx, _op("suspend"), {}, "lab:replica-404", 5)
    finally:
        stop(proc)


# --- kill and healing ---------------------------------------------------------------------


def test_kill_lab_replica_waits_for_the_supervisor_and_reports_time_to_recover(
    ctx: DriverContext,
) -> None:
    with lab_replica(paths.lab_dir(env_state().home), restart_delay_s=1.0) as replica:
        old = replica.pid()
        record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("kill"), {}, f"lab:{replica.name}", None))
        assert record.lease_expires_at is None and record.data["signal"] == "SIGKILL"
        t0 = time.monotonic()
        result = DRIVER.revert(ctx, record)
        assert result.reverted, result.detail
        assert replica.pid() != old and replica.live()
        assert result.time_to_recover_s is not None and 0.9 <= result.time_to_recover_s <= 3.0
        assert time.monotonic() - t0 < 3.0
        again = DRIVER.revert(ctx, record)  # later, from the record: same time to recover
        assert again.time_to_recover_s == pytest.approx(result.time_to_recover_s, abs=0.02)
        assert DRIVER.check_clean(ctx, record).clean


def test_kill_by_pattern_heals_when_the_pattern_matches_again(ctx: DriverContext) -> None:
    with lab_replica(paths.lab_dir(env_state().home), restart_delay_s=0.5) as replica:
        target = f"pattern:{replica.marker}"
        record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("kill"), {"signal": 15}, target, None))
        assert record.data["signal"] == "SIGTERM" and record.data["before_count"] == 1
        result = DRIVER.revert(ctx, record)
        assert result.reverted and result.time_to_recover_s is not None
        assert 0.4 <= result.time_to_recover_s <= 2.5


def test_kill_that_never_heals_is_reported_not_hidden(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        args = {"timeout": "300ms"}
        record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("kill"), args, f"pattern:{marker}", None))
        proc.wait(timeout=5)
        result = DRIVER.revert(ctx, record)
        assert not result.reverted and "not healed within 0.3s" in result.detail
        report = DRIVER.check_clean(ctx, record)
        assert not report.clean and "has not healed" in report.residue[0]


def test_kill_of_a_bare_pid_has_nothing_to_wait_for(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("kill"), {}, f"pid:{proc.pid}", None))
        assert proc.wait(timeout=5) == -signal.SIGKILL
        result = DRIVER.revert(ctx, record)
        assert result.reverted and result.time_to_recover_s is None
        assert "cannot be restarted" in result.detail


def test_inject_refuses_a_process_that_was_replaced_since_prepare(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        record = DRIVER.prepare(ctx, _op("kill"), {}, f"pattern:{marker}", None)
        forged = record.with_data(procs=[{**record.data["procs"][0], "create_time": 1.0}])
        with pytest.raises(TargetNotFound, match="exited before"):
            DRIVER.inject(ctx, forged)
        assert proc.poll() is None


def test_a_process_that_survives_the_signal_counts_as_healed_after_the_grace(ctx: DriverContext) -> None:
    marker = unique_marker()
    with sleepers(marker) as (proc,):
        args = {"signal": "SIGWINCH"}  # ignored by default: the process survives
        record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("kill"), args, f"pattern:{marker}", None))
        assert not DRIVER.check_clean(ctx, record).clean  # too early to tell
        result = DRIVER.revert(ctx, record)
        assert result.reverted and result.time_to_recover_s == 0.0
        assert proc.poll() is None and DRIVER.check_clean(ctx, record).clean


def test_kill_by_a_relative_pidfile_heals_by_that_file_from_any_directory(
    ctx: DriverContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heal check of ``pidfile:pids/x.pid`` reads the run's file, not whatever the
    same relative name means where ``recover`` runs (there: a pid that has exited)."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    for d in (here, elsewhere):
        (d / "pids").mkdir(parents=True)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(timeout=30)
    (elsewhere / "pids" / "x.pid").write_text(f"{exited.pid}\n")
    with sleepers(unique_marker()) as (first,), sleepers(unique_marker()) as (second,):
        (here / "pids" / "x.pid").write_text(f"{first.pid}\n")
        monkeypatch.chdir(here)
        record = DRIVER.inject(
            ctx, DRIVER.prepare(ctx, _op("kill"), {"timeout": "1s"}, "pidfile:pids/x.pid", None)
        )
        assert first.wait(timeout=5) == -signal.SIGKILL
        (here / "pids" / "x.pid").write_text(f"{second.pid}\n")  # the service came back
        monkeypatch.chdir(elsewhere)
        result = DRIVER.revert(ctx, record)
        assert result.reverted and result.time_to_recover_s is not None, result
        assert DRIVER.check_clean(ctx, record).clean
        assert record.data["pidfile"] == str(here / "pids" / "x.pid")
