"""The ledger on real files: durability, owner identity, damage handling, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chaoslab import paths
from chaoslab.drivers.base import CleanReport, RevertRecord
from chaoslab.errors import LedgerError
from chaoslab.safety.ledger import LEDGER_VERSION, Ledger, ProblemKind
from chaoslab.safety.owner import Owner
from tests.conftest import require
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]


def record(target: str = "lab:replica-1", **kw: object) -> RevertRecord:
    return RevertRecord(driver="marker", operation="touch", target=target, run_id="run-1", **kw)  # type: ignore[arg-type]


def run_py(code: str, *, unprivileged: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (same CHAOSLAB_HOME). ``unprivileged`` drops the
    capabilities that let root ignore file permissions, so permission errors are real."""
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        require(setpriv is not None, "setpriv (util-linux) to drop root's file-permission override")
        assert setpriv is not None
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_open_entry_is_durable_with_owner_and_version_before_returning() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record(args={"path": "/x"}, data={"n": 1})
    entry = ledger.open_entry(rec)
    assert entry.path == paths.ledger_dir(env_state().home) / "open" / f"{rec.fault_id}.json"
    raw = json.loads(entry.path.read_text())
    assert raw["ledger_version"] == LEDGER_VERSION
    assert raw["state"] == "open"
    assert raw["record"] == rec.to_dict()
    me = Owner.current("run-1")
    owner = Owner.from_dict(raw["owner"])
    assert owner.same_process(me) and owner.run_id == "run-1"
    assert owner.create_time is not None and owner.hostname
    # A second instance (as another process would) sees exactly the same entry.
    (again,) = Ledger(env_state().ledger).open_entries()
    assert again.record == rec and again.owner.same_process(me)
    # No temp files are left behind.
    assert sorted(p.name for p in entry.path.parent.iterdir()) == [entry.path.name]


def test_open_entry_refuses_an_already_open_fault_id() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record()
    ledger.open_entry(rec)
    with pytest.raises(LedgerError, match="already has an open entry"):
        ledger.open_entry(rec)
    assert len(ledger.open_entries()) == 1


def test_update_replaces_the_record_and_keeps_owner_and_open_time() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record()
    first = ledger.open_entry(rec)
    enriched = rec.with_data(watchdog_pid=4242)
    ledger.update_entry(enriched)
    got = ledger.entry(rec.fault_id)
    assert got is not None
    assert got.record.data == {"watchdog_pid": 4242}
    assert got.opened_at == first.opened_at and got.updated_at >= first.opened_at


def test_update_of_an_entry_that_is_not_open_raises() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record()
    ledger.open_entry(rec)
    ledger.close_entry(rec.fault_id, CleanReport(clean=True))
    with pytest.raises(LedgerError, match="revert the fault now"):
        ledger.update_entry(rec.with_data(x=1))
    assert ledger.entry(rec.fault_id) is None


def test_close_requires_a_clean_report_and_is_idempotent() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record()
    entry = ledger.open_entry(rec)
    with pytest.raises(LedgerError, match="not clean.*toxic still present"):
        ledger.close_entry(rec.fault_id, CleanReport(clean=False, residue=("toxic still present",)))
    assert ledger.entry(rec.fault_id) is not None

    assert ledger.close_entry(rec.fault_id, CleanReport(clean=True, detail="no marker")) is True
    assert not entry.path.exists()
    closed = json.loads((paths.ledger_dir(env_state().home) / "closed" / entry.path.name).read_text())
    assert closed["state"] == "closed"
    assert closed["outcome"] == {"clean": True, "residue": [], "detail": "no marker"}
    assert closed["record"] == rec.to_dict()
    assert ledger.open_entries() == []
    # The run and a halt may both close: the second close is a no-op.
    assert ledger.close_entry(rec.fault_id, CleanReport(clean=True)) is False


def test_a_close_interrupted_before_the_move_is_finished_by_the_next_scan() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record()
    entry = ledger.open_entry(rec)
    raw = json.loads(entry.path.read_text())
    raw["state"] = "closed"  # what close_entry writes just before it moves the file
    entry.path.write_text(json.dumps(raw))
    assert ledger.open_entries() == []
    assert (paths.ledger_dir(env_state().home) / "closed" / entry.path.name).exists()
    assert not entry.path.exists()


def test_corrupt_and_truncated_entries_are_reported_by_name_and_kept() -> None:
    ledger = Ledger(env_state().ledger)
    good = ledger.open_entry(record("lab:good"))
    victim = ledger.open_entry(record("lab:victim"))
    full = victim.path.read_bytes()
    victim.path.write_bytes(full[: len(full) // 2])  # truncated mid-record
    garbage = ledger.open_dir / "deadbeef.json"
    garbage.write_bytes(b"\x00\xff not json")
    before = {p: p.read_bytes() for p in (victim.path, garbage)}

    scan = ledger.scan()
    assert [e.fault_id for e in scan.entries] == [good.fault_id]
    by_path = {p.path: p for p in scan.problems}
    assert set(by_path) == {victim.path, garbage}
    assert all(p.kind is ProblemKind.CORRUPT for p in scan.problems)
    assert str(victim.path) in str(by_path[victim.path])
    assert "truncated" in str(by_path[victim.path])
    # The target is salvaged from the truncated file; the garbage says nothing.
    assert by_path[victim.path].target == "lab:victim"
    assert by_path[garbage].target is None
    # Nothing lost: both files are still there, byte for byte.
    assert {p: p.read_bytes() for p in before} == before


def test_entry_from_a_newer_version_is_reported_and_blocks_its_target() -> None:
    ledger = Ledger(env_state().ledger)
    entry = ledger.open_entry(record("lab:future"))
    raw = json.loads(entry.path.read_text())
    raw["ledger_version"] = LEDGER_VERSION + 1
    entry.path.write_text(json.dumps(raw))

    scan = ledger.scan()
    assert scan.entries == ()
    (problem,) = scan.problems
    assert problem.kind is ProblemKind.NEWER
    assert "newer chaoslab" in str(problem) and str(entry.path) in str(problem)
    with pytest.raises(LedgerError, match="lab:future"):
        ledger.check_targets_clear(["lab:future"])
    ledger.check_targets_clear(["lab:other"])  # its target is known: others may run
    assert json.loads(entry.path.read_text()) == raw


def test_run_gate_blocks_on_open_entries_for_its_targets_only() -> None:
    ledger = Ledger(env_state().ledger)
    rec = record("lab:replica-1")
    ledger.open_entry(rec)
    with pytest.raises(LedgerError) as err:
        ledger.check_targets_clear(["lab:replica-1", "lab:lb"])
    text = str(err.value)
    assert rec.fault_id in text and "chaoslab recover" in text and "run run-1" in text
    ledger.check_targets_clear(["lab:lb"])
    assert [e.fault_id for e in ledger.open_entries_for_targets(["lab:replica-1"])] == [rec.fault_id]
    # A damaged entry whose target cannot be told blocks every run (fail closed).
    (ledger.open_dir / "cafe.json").write_text("{")
    with pytest.raises(LedgerError, match="cannot be read"):
        ledger.check_targets_clear(["lab:lb"])


def test_fault_ids_that_are_not_file_names_are_refused() -> None:
    with pytest.raises(LedgerError, match="not usable"):
        Ledger(env_state().ledger).open_entry(record(fault_id="../../etc/passwd"))


def test_unreadable_directory_and_entry_give_clear_errors_and_lose_nothing() -> None:
    ledger = Ledger(env_state().ledger)
    kept = ledger.open_entry(record("lab:kept"))
    locked = ledger.open_entry(record("lab:locked"))
    locked.path.chmod(0o000)
    try:
        out = run_py(
            """
            from chaoslab.paths import StatePaths
            from chaoslab.safety.ledger import Ledger
            scan = Ledger(StatePaths.from_environment().ledger).scan()
            print([e.target for e in scan.entries])
            print(scan.problems[0])
            """,
            unprivileged=True,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "['lab:kept']"
        assert str(locked.path) in lines[1] and "unreadable" in lines[1] and "ermission" in lines[1]
    finally:
        locked.path.chmod(0o644)

    ledger.open_dir.chmod(0o000)
    try:
        out = run_py(
            """
            import sys
            from chaoslab.drivers.base import RevertRecord
            from chaoslab.errors import LedgerError
            from chaoslab.paths import StatePaths
            from chaoslab.safety.ledger import Ledger
            ledger = Ledger(StatePaths.from_environment().ledger)
            for action in (
                lambda: ledger.scan(),
                lambda: ledger.open_entry(RevertRecord(driver="d", operation="o", target="t")),
            ):
                try:
                    action()
                except LedgerError as exc:
                    print(exc)
                else:
                    sys.exit("no LedgerError")
            """,
            unprivileged=True,
        )
    finally:
        ledger.open_dir.chmod(0o755)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    read_msg, write_msg = out.stdout.splitlines()
    assert f"cannot read the ledger directory {ledger.open_dir}" in read_msg
    assert "ermission denied" in read_msg
    assert "cannot write ledger entry" in write_msg and str(ledger.open_dir) in write_msg
    assert {e.fault_id for e in ledger.open_entries()} == {kept.fault_id, locked.fault_id}


def test_two_processes_writing_entries_at_once_do_not_collide() -> None:
    code = """
        import sys
        from chaoslab.drivers.base import RevertRecord
        from chaoslab.paths import StatePaths
        from chaoslab.safety.ledger import Ledger
        ledger = Ledger(StatePaths.from_environment().ledger)
        tag = sys.argv[1]
        for i in range(40):
            rec = RevertRecord(driver="d", operation="o", target=f"t-{tag}-{i}", run_id=tag)
            ledger.open_entry(rec)
            ledger.update_entry(rec.with_data(i=i))
        """
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), tag], cwd=ROOT, stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    scan = Ledger(env_state().ledger).scan()
    assert scan.problems == ()
    targets = sorted(e.target for e in scan.entries)
    assert targets == sorted(f"t-{tag}-{i}" for tag in "ab" for i in range(40))
    assert all(e.record.data["i"] == int(e.target.rsplit("-", 1)[1]) for e in scan.entries)
    assert {e.owner.pid for e in scan.entries} == {p.pid for p in procs}
