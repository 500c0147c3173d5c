"""recover and halt against real processes and a real (file-based) fault.

The fault is a marker file on disk, made by ``MarkerDriver``, a first-class ``Driver``
with no lease: nothing but a revert removes it. Runners are real subprocesses that open
a ledger entry, inject, and are then SIGKILLed or signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    RevertResult,
)
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.errors import LedgerError
from chaoslab.safety.halt import Halted, active_runs, check_not_halted, halt, is_halted, register_run, release
from chaoslab.safety.ledger import LEDGER_VERSION, Ledger
from chaoslab.safety.owner import Owner
from chaoslab.safety.recover import EntryStatus, recover
from tests.conftest import require, wait_until
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]


class MarkerDriver(Driver):
    """A fault that is a file: inject creates it, revert removes it, check_clean looks."""

    name = "marker"
    summary = "marker-file fault for tests"

    def operations(self) -> Sequence[Operation]:
        return (
            Operation(
                name="touch",
                kind=Kind.FAULT,
                summary="create a marker file",
                lease=LeaseKind.NONE,
                params=(
                    Param(name="path", type=str, help="the marker file", required=True),
                    Param(name="log", type=str, help="append one line per revert call here"),
                    Param(name="revert_delay", type=float, help="seconds a revert takes"),
                    Param(name="stubborn", type=bool, help="revert leaves the marker"),
                    Param(name="explode", type=bool, help="revert raises"),
                ),
            ),
        )

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        return RevertRecord(
            driver=self.name,
            operation=op.name,
            target=target or f"file:{args['path']}",
            run_id=ctx.run_id,
            args=dict(args),
        )

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        Path(record.args["path"]).write_text(record.fault_id)
        return record.with_data(injected_by=os.getpid())

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        if log := record.args.get("log"):
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{record.fault_id} {os.getpid()}\n".encode())
            os.close(fd)
        time.sleep(float(record.args.get("revert_delay") or 0))
        if record.args.get("explode"):
            raise RuntimeError("boom in revert")
        path = Path(record.args["path"])
        if record.args.get("stubborn") or not path.exists():
            return RevertResult(reverted=False, detail="nothing removed")
        path.unlink()
        return RevertResult(reverted=True, detail=f"removed {path}")

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        path = Path(record.args["path"])
        if path.exists():
            return CleanReport(clean=False, residue=(f"marker {path} still exists",))
        return CleanReport(clean=True, detail=f"{path} is gone")


# A runner: opens an entry, injects, then (by mode) sleeps until killed, or reverts on
# SIGUSR1 ("obedient"), or notes SIGUSR1 and carries on ("deaf").
RUNNER = textwrap.dedent(
    """
    import importlib.util, json, signal, sys, time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("marker_test_module", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    from chaoslab.drivers.base import DriverContext
    from chaoslab.safety.halt import register_run
    from chaoslab.safety.ledger import Ledger
    from chaoslab.paths import StatePaths
    state = StatePaths.from_environment()  # the test's CHAOSLAB_HOME, as the CLI reads it
    run_id, mode, markers = sys.argv[2], sys.argv[3], sys.argv[4:]
    got = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(time.monotonic()))  # before register
    driver, ledger = mod.MarkerDriver(), Ledger(state.ledger)
    ctx = DriverContext(run_id=run_id, state_dir=Path("."), lab_dir=state.lab)
    op = driver.operation("touch")
    with register_run(run_id, home=state.home):
        records = []
        for m in markers:
            rec = driver.prepare(ctx, op, {"path": m}, None, None)
            ledger.open_entry(rec)
            rec = driver.inject(ctx, rec)
            ledger.update_entry(rec)
            records.append(rec)
        print("injected", json.dumps([r.fault_id for r in records]), flush=True)
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        print("got SIGUSR1" if got else "timeout", flush=True)
        if mode == "obedient":
            for rec in records:
                driver.revert(ctx, rec)
                ledger.close_entry(rec.fault_id, driver.check_clean(ctx, rec))
            print("reverted", flush=True)
        else:
            time.sleep(60)
    """
)


@pytest.fixture
def registry() -> DriverRegistry:
    return DriverRegistry(extra={"marker": MarkerDriver()}, load_installed=False)


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def start_runner(
    procs: list[subprocess.Popen[str]], run_id: str, mode: str, markers: list[Path]
) -> tuple[subprocess.Popen[str], list[str]]:
    p = subprocess.Popen(
        [sys.executable, "-c", RUNNER, __file__, run_id, mode, *map(str, markers)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(p)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("injected "):
        p.kill()
        _, err = p.communicate(timeout=10)
        pytest.fail(f"runner failed: {line!r} {err}")
    return p, json.loads(line.split(" ", 1)[1])


def dead_owner(run_id: str) -> Owner:
    """An owner whose pid now belongs to another process (this one): a dead runner."""
    me = Owner.current(run_id)
    assert me.start_ticks is not None
    return msgspec.structs.replace(me, start_ticks=me.start_ticks - 1)


def open_dead_entry(path: Path, run_id: str = "dead-run", **args: Any) -> RevertRecord:
    """A ledger entry for a marker that exists, left by a runner that is gone."""
    driver = MarkerDriver()
    ctx = DriverContext(run_id=run_id, state_dir=Path("."), lab_dir=env_state().lab)
    rec = driver.prepare(ctx, driver.operations()[0], {"path": str(path), **args}, None, None)
    Ledger(env_state().ledger).open_entry(rec, owner=dead_owner(run_id))
    return driver.inject(ctx, rec)


def test_recover_reverts_verifies_and_closes_what_a_sigkilled_runner_left(
    tmp_path: Path, registry: DriverRegistry, runners: list[subprocess.Popen[str]]
) -> None:
    markers = [tmp_path / "m1", tmp_path / "m2"]
    runner, fault_ids = start_runner(runners, "killed-run", "sleep", markers)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=10)
    assert all(m.exists() for m in markers)
    ledger = Ledger(env_state().ledger)
    assert sorted(e.fault_id for e in ledger.open_entries()) == sorted(fault_ids)
    # The run gate refuses these targets until recover ran.
    with pytest.raises(LedgerError, match="chaoslab recover"):
        ledger.check_targets_clear([f"file:{markers[0]}"])

    report = recover(registry, home=env_state().home)

    assert report.ok
    assert sorted(o.fault_id or "" for o in report.closed) == sorted(fault_ids)
    for o in report.outcomes:
        assert o.status is EntryStatus.CLOSED and o.reverted and o.clean is True
        assert o.run_id == "killed-run" and f"pid {runner.pid} is gone" in o.owner
    assert not any(m.exists() for m in markers)
    assert ledger.open_entries() == []
    assert {p.name for p in ledger.closed_dir.iterdir()} == {f"{f}.json" for f in fault_ids}
    ledger.check_targets_clear([f"file:{m}" for m in markers])
    assert recover(registry, home=env_state().home).outcomes == ()


def test_recover_leaves_a_live_runs_entries_alone_unless_forced(
    tmp_path: Path, registry: DriverRegistry, runners: list[subprocess.Popen[str]]
) -> None:
    marker = tmp_path / "live"
    runner, (fault_id,) = start_runner(runners, "live-run", "sleep", [marker])

    report = recover(registry, home=env_state().home)
    (outcome,) = report.outcomes
    assert outcome.status is EntryStatus.OWNER_ALIVE and f"pid {runner.pid} is running" in outcome.owner
    assert report.ok  # a live run's entry is not a problem
    assert marker.exists() and Ledger(env_state().ledger).entry(fault_id) is not None

    forced = recover(registry, only_dead_owners=False, home=env_state().home)
    assert [o.status for o in forced.outcomes] == [EntryStatus.CLOSED]
    assert not marker.exists() and Ledger(env_state().ledger).entry(fault_id) is None


def test_entries_that_cannot_be_reverted_stay_open_with_a_clear_message(
    tmp_path: Path, registry: DriverRegistry
) -> None:
    ledger = Ledger(env_state().ledger)
    unknown = RevertRecord(driver="nosuch", operation="x", target="lab:lb", run_id="old")
    ledger.open_entry(unknown, owner=dead_owner("old"))
    stubborn = open_dead_entry(tmp_path / "stubborn", stubborn=True)
    exploding = open_dead_entry(tmp_path / "explode", explode=True)

    report = recover(registry, home=env_state().home)

    by_id = {o.fault_id: o for o in report.outcomes}
    missing = by_id[unknown.fault_id]
    assert missing.status is EntryStatus.DRIVER_UNAVAILABLE
    assert "'nosuch'" in missing.errors[0] and "left open" in missing.detail
    assert by_id[stubborn.fault_id].status is EntryStatus.RESIDUE
    assert by_id[stubborn.fault_id].residue == (f"marker {tmp_path / 'stubborn'} still exists",)
    boom = by_id[exploding.fault_id]
    assert boom.status is EntryStatus.RESIDUE and "RuntimeError: boom in revert" in boom.errors[0]
    assert not report.ok and len(report.needs_attention) == 3
    assert "0 reverted and verified clean, 3 need attention" in report.lines()[0]
    assert {e.fault_id for e in ledger.open_entries()} == set(by_id)


def test_two_recovers_at_once_revert_each_entry_exactly_once(tmp_path: Path) -> None:
    log = tmp_path / "reverts.log"
    fault_ids = {
        open_dead_entry(tmp_path / f"m{i}", log=str(log), revert_delay=0.05).fault_id for i in range(8)
    }
    go = tmp_path / "go"
    code = textwrap.dedent(
        """
        import importlib.util, json, os, sys, time
        spec = importlib.util.spec_from_file_location("marker_test_module", sys.argv[1])
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        from chaoslab.drivers.registry import DriverRegistry
        from chaoslab.safety.recover import recover
        open(sys.argv[2] + "-ready-" + sys.argv[3], "w").close()  # readiness handshake
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        reg = DriverRegistry(extra={"marker": mod.MarkerDriver()}, load_installed=False)
        from chaoslab.paths import StatePaths
        print(json.dumps(recover(reg, home=StatePaths.from_environment().home).to_dict()))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, __file__, str(go), str(i)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    wait_until(
        lambda: all((tmp_path / f"go-ready-{i}").exists() for i in range(2)),
        timeout_s=60,
        what="both recovers at their start line",
    )
    go.touch()
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    closed = [o["fault_id"] for r in reports for o in r["outcomes"] if o["status"] == "closed"]
    assert sorted(closed) == sorted(fault_ids)  # each closed once, by one of the two
    reverted = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(reverted) == sorted(fault_ids)  # each reverted exactly once
    assert Ledger(env_state().ledger).open_entries() == []


def test_damaged_entries_are_reported_and_nothing_is_lost(tmp_path: Path, registry: DriverRegistry) -> None:
    ledger = Ledger(env_state().ledger)
    fine = open_dead_entry(tmp_path / "fine")
    truncated = open_dead_entry(tmp_path / "truncated")
    newer = open_dead_entry(tmp_path / "newer")
    t_path = ledger.open_dir / f"{truncated.fault_id}.json"
    whole = t_path.read_bytes()
    t_bytes = whole[: whole.index(b'"state"')]  # cut mid-entry, after its target
    t_path.write_bytes(t_bytes)
    n_path = ledger.open_dir / f"{newer.fault_id}.json"
    raw = json.loads(n_path.read_text())
    raw["ledger_version"] = LEDGER_VERSION + 5
    n_path.write_text(json.dumps(raw))
    n_bytes = n_path.read_bytes()

    report = recover(registry, home=env_state().home)

    by_status = {o.status: o for o in report.outcomes}
    assert set(by_status) == {EntryStatus.CLOSED, EntryStatus.QUARANTINED, EntryStatus.NEWER_VERSION}
    assert by_status[EntryStatus.CLOSED].fault_id == fine.fault_id
    q = by_status[EntryStatus.QUARANTINED]
    assert q.path.parent == ledger.quarantine_dir and q.path.read_bytes() == t_bytes
    assert str(t_path) in q.detail and "check by hand" in q.detail
    assert q.target == f"file:{tmp_path / 'truncated'}"  # salvaged from the damaged file
    nv = by_status[EntryStatus.NEWER_VERSION]
    assert "newer chaoslab" in nv.detail and str(n_path) in nv.detail
    assert n_path.read_bytes() == n_bytes  # left in place for the version that wrote it
    assert not report.ok
    # The faults of the damaged entries were not touched: no guessing.
    assert (tmp_path / "truncated").exists() and (tmp_path / "newer").exists()
    assert not (tmp_path / "fine").exists()


def test_recover_on_an_unreadable_ledger_says_so_without_a_traceback(tmp_path: Path) -> None:
    rec = open_dead_entry(tmp_path / "m")
    ledger = Ledger(env_state().ledger)
    ledger.open_dir.chmod(0o000)
    cmd = [
        sys.executable,
        "-c",
        "from chaoslab.drivers.registry import DriverRegistry\n"
        "from chaoslab.errors import LedgerError\n"
        "from chaoslab.paths import StatePaths\n"
        "from chaoslab.safety.recover import recover\n"
        "try:\n    recover(DriverRegistry(load_installed=False), home=StatePaths.from_environment().home)\n"
        "except LedgerError as exc:\n    print(exc)\n",
    ]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        require(setpriv is not None, "setpriv (util-linux) to drop root's file-permission override")
        assert setpriv is not None
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    finally:
        ledger.open_dir.chmod(0o755)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot read the ledger directory {ledger.open_dir}" in out.stdout
    assert [e.fault_id for e in ledger.open_entries()] == [rec.fault_id]


# --- halt ------------------------------------------------------------------------------


def test_halt_blocks_new_runs_until_released(registry: DriverRegistry) -> None:
    # A registration left by a dead runner is cleaned up, never signalled.
    stale = dead_owner("ghost-run")
    runs_dir = env_state().home / "active-runs"
    runs_dir.mkdir(parents=True)
    (runs_dir / "ghost-run.1.json").write_text(json.dumps(stale.to_dict()))

    report = halt(registry, reason="incident 42", grace_s=1, home=env_state().home)
    assert [(r.run_id, r.action) for r in report.runs] == [("ghost-run", "stale")]
    assert active_runs(env_state().home) == []
    state = is_halted(env_state().home)
    assert state is not None and state.reason == "incident 42"
    with pytest.raises(Halted, match="incident 42.*halt --release"):
        with register_run("blocked-run", home=env_state().home):
            pytest.fail("a run started during a halt")
    assert active_runs(env_state().home) == []  # the refused run left no registration
    assert halt(registry, grace_s=0, home=env_state().home).already_halted

    assert release(env_state().home) == state
    assert is_halted(env_state().home) is None and release(env_state().home) is None
    check_not_halted(env_state().home)
    with register_run("after-release", home=env_state().home) as reg:
        assert [r.run_id for r in active_runs(env_state().home)] == ["after-release"] and reg.path.exists()
    assert active_runs(env_state().home) == []


def test_halt_signals_a_registered_run_which_reverts_in_time(
    tmp_path: Path, registry: DriverRegistry, runners: list[subprocess.Popen[str]]
) -> None:
    marker = tmp_path / "m"
    runner, (fault_id,) = start_runner(runners, "obedient-run", "obedient", [marker])

    report = halt(registry, grace_s=20, home=env_state().home)

    assert [(r.run_id, r.pid, r.action) for r in report.runs] == [("obedient-run", runner.pid, "signalled")]
    assert report.reverted_in_grace == ("obedient-run",) and report.forced == ()
    assert report.recovery.outcomes == () and report.ok
    out, err = runner.communicate(timeout=20)
    assert runner.returncode == 0, err
    assert out.splitlines() == ["got SIGUSR1", "reverted"]
    assert not marker.exists() and Ledger(env_state().ledger).entry(fault_id) is None
    release(env_state().home)


def test_halt_reverts_itself_what_a_run_does_not_revert_in_time(
    tmp_path: Path, registry: DriverRegistry, runners: list[subprocess.Popen[str]]
) -> None:
    marker = tmp_path / "m"
    runner, (fault_id,) = start_runner(runners, "deaf-run", "deaf", [marker])

    started = time.monotonic()
    report = halt(registry, grace_s=0.5, home=env_state().home)

    assert time.monotonic() - started < 10
    assert report.forced == ("deaf-run",)
    (outcome,) = report.recovery.outcomes
    assert outcome.status is EntryStatus.CLOSED and outcome.fault_id == fault_id
    assert not marker.exists() and Ledger(env_state().ledger).entry(fault_id) is None
    assert runner.stdout is not None and runner.stdout.readline() == "got SIGUSR1\n"
    assert runner.poll() is None  # it ignored the halt, yet its fault is gone
    assert any("reverted by halt: deaf-run" in line for line in report.lines())
    release(env_state().home)
