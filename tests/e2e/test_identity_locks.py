"""Two runs on one target, named two ways: locks key on what a fault resolves to.

Each case starts run A holding a fault, then run B on the same thing written
differently; B must be refused (exit 5) naming the resolved key, and A must end clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaoslab.drivers.base import RevertRecord, local_host
from chaoslab.engine import events as ev
from chaoslab.errors import LockHeld
from chaoslab.safety.claims import ClaimingLedger
from chaoslab.safety.locks import acquire, locks_dir
from chaoslab.safety.owner import Owner
from tests.conftest import run_cli, wait_for_event
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def journal_reason(run_dir: Path) -> str:
    events = [json.loads(line) for line in (run_dir / "events.ndjson").read_text().splitlines()]
    finished = [e for e in events if e["kind"] == "run-finished"]
    assert finished, events
    return str(finished[-1]["reason"])


TAG = f"h13-sleeper-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(600)  # {TAG}"])
    yield proc.pid
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def experiment(tmp: Path, name: str, step: str, extra: str = "") -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(f"title: {name}\ndescription: d\n{extra}method:\n  - {step}\n")
    return f


def holding(tmp: Path, name: str, fault: str, release: Path) -> Path:
    """Run A's experiment: ``fault`` (no duration) held until the test creates ``release``
    (at most 60 s), however long run B takes to start on a loaded machine."""
    wait = (
        "import os, sys, time\n"
        "t = time.monotonic()\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() - t < 60:\n"
        "    time.sleep(0.05)\n"
    )
    action = json.dumps(
        {
            "type": "action",
            "name": "hold-until-released",
            "provider": {"type": "process", "path": sys.executable, "arguments": ["-c", wait, str(release)]},
        }
    )
    return experiment(tmp, name, f"{fault}\n  - {action}")


def test_a_variable_and_its_value_are_one_target(tmp_path: Path, sleeper: int) -> None:
    release = tmp_path / "release"
    by_value = holding(tmp_path, "a", f"{{do: process.suspend, target: 'pid:{sleeper}'}}", release)
    by_var = experiment(
        tmp_path,
        "b",
        "{do: process.suspend, target: 'pattern:${t}', duration: 1s}",
        "configuration: {t: unset}\n",
    )
    # A var file, not --var: the tag on the runner's own command line would match too.
    var_file = tmp_path / "vars.yaml"
    var_file.write_text(f"configuration:\n  t: {TAG}\n")
    first = start("run", "--run-dir", str(tmp_path / "ra"), str(by_value), cwd=tmp_path)
    try:
        wait_for_event(tmp_path / "ra" / "events.ndjson", "fault-injected")
        second = run_cli(
            "run", "--run-dir", str(tmp_path / "rb"), "--var-file", str(var_file), str(by_var), cwd=tmp_path
        )
        assert "Traceback" not in second.stdout + second.stderr
        assert second.returncode == 5, second.stdout + second.stderr
        reason = journal_reason(tmp_path / "rb")
        assert "locked by" in reason and f"proc:{local_host()}:{sleeper}:" in reason, reason
        assert "fault-injected" not in (tmp_path / "rb" / "events.ndjson").read_text()
    finally:
        release.touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert psutil.Process(sleeper).status() != psutil.STATUS_STOPPED


def test_two_cpu_stress_runs_on_one_host_the_second_is_refused(tmp_path: Path) -> None:
    step = "{do: stress.cpu, with: {workers: 1, load: 5, backend: builtin}%s}"
    release = tmp_path / "release"
    first = start(
        "run",
        "--run-dir",
        str(tmp_path / "ra"),
        str(holding(tmp_path, "a", step % "", release)),
        cwd=tmp_path,
    )
    try:
        wait_for_event(tmp_path / "ra" / "events.ndjson", "fault-injected")
        second = run_cli(
            "run",
            "--run-dir",
            str(tmp_path / "rb"),
            str(experiment(tmp_path, "b", step % ", duration: 1s")),
            cwd=tmp_path,
        )
        assert second.returncode == 5, second.stdout + second.stderr
        reason = journal_reason(tmp_path / "rb")
        assert f"host:{local_host()}:cpu" in reason and "locked by" in reason, reason
    finally:
        release.touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err


def _record(run_id: str, keys: tuple[str, ...], target: str) -> RevertRecord:
    return RevertRecord(driver="fake", operation="touch", target=target, run_id=run_id, keys=keys)


def test_one_key_two_texts_collide_and_a_run_may_stack_its_own(tmp_path: Path) -> None:
    a = ClaimingLedger("run-a", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks)
    b = ClaimingLedger("run-b", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks)
    with a, b:
        a.claim(_record("run-a", ("docker:abc",), "name:web"))
        a.claim(_record("run-a", ("docker:abc",), "label:app=web"))  # the same run: fine
        with pytest.raises(LockHeld, match="docker:abc"):
            b.claim(_record("run-b", ("docker:abc",), "label:app=web"))
        b.claim(_record("run-b", ("docker:other",), "name:db"))
    assert a.keys == frozenset() and b.keys == frozenset()


def test_an_open_entry_of_a_dead_run_blocks_the_same_key_however_named(tmp_path: Path) -> None:
    dead = ClaimingLedger(
        "run-dead", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks
    )
    dead.open_entry(_record("run-dead", ("host:h:cpu",), "host"), owner=Owner.current("run-dead"))
    with ClaimingLedger(
        "run-new", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks
    ) as new:
        with pytest.raises(Exception, match="host:h:cpu") as info:
            new.claim(_record("run-new", ("host:h:cpu",), "something else"))
        assert "chaoslab recover" in str(info.value)
        new.claim(_record("run-new", ("host:h:memory",), "host"))


def test_a_reclaimed_stale_lock_is_an_event(tmp_path: Path) -> None:
    # A lock written by a process that is gone: its pid is reaped, so the owner is dead.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from chaoslab.paths import StatePaths; from chaoslab.safety.locks import acquire; "
            "acquire(['identity:docker:zzz'], 'run-gone', directory=StatePaths.from_environment().locks)",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )
    assert child.returncode == 0 and any(locks_dir(env_state().home).glob("*.lock"))
    seen: list[ev.LockReclaimed] = []
    bus = ev.EventBus()
    bus.subscribe(lambda e: seen.append(e) if isinstance(e, ev.LockReclaimed) else None)
    with ClaimingLedger(
        "run-next",
        lease_s=None,
        on_reclaimed=lambda r: bus.emit(
            ev.LockReclaimed(run_id="run-next", key=r.target, former_holder=r.former_holder, reason=r.reason)
        ),
        directory=env_state().ledger,
        locks_directory=env_state().locks,
    ) as ledger:
        ledger.claim(_record("run-next", ("docker:zzz",), "id:zzz"))
    assert [e.key for e in seen] == ["docker:zzz"]
    assert "run-gone" in seen[0].former_holder
    acquire(
        ["identity:docker:zzz"], "after", directory=env_state().locks
    ).release()  # released at the end of the run


def test_one_ssh_host_named_by_name_and_by_tag_is_one_key(tmp_path: Path) -> None:
    from chaoslab.drivers.base import DriverContext
    from chaoslab.drivers.ssh.driver import SSHDriver

    (tmp_path / "key").write_text("")
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        f"known_hosts: {tmp_path / 'kh'}\nhosts:\n"
        f"  h0: {{address: 127.0.0.1, port: 2222, user: root, key_file: {tmp_path / 'key'}, tags: [eu]}}\n"
        f"  h1: {{address: 127.0.0.2, port: 2222, user: root, key_file: {tmp_path / 'key'}, tags: [us]}}\n"
    )
    driver = SSHDriver()
    op = driver.operation("stress_cpu")
    assert op is not None
    ctx = DriverContext(run_id="r", state_dir=tmp_path, lab_dir=env_state().lab)
    by_name = driver.prepare(ctx, op, {"inventory": str(inv), "workers": 1}, "ssh:h0", 10)
    by_tag = driver.prepare(ctx, op, {"inventory": str(inv), "workers": 1}, "ssh:tag=eu", 10)
    assert driver.identities(by_name) == driver.identities(by_tag) == ("ssh:127.0.0.1:2222:cpu",)
