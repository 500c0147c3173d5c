"""Blast-radius locks between real processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from chaoslab.errors import LockHeld
from chaoslab.safety.locks import LockInfo, acquire, holders, lock_path, locks_dir
from chaoslab.safety.owner import Owner
from tests.conftest import wait_until
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys
    from chaoslab.paths import StatePaths
    from chaoslab.safety.locks import acquire
    run, targets, lease = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    locks_dir = StatePaths.from_environment().locks  # the test's CHAOSLAB_HOME
    locks = acquire(targets, run, None if lease == "none" else float(lease), directory=locks_dir)
    print("locked", flush=True)
    sys.stdin.readline()
    locks.release()
    """
)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Start lock-holding children; every one is ended and reaped after the test."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def hold(
    procs: list[subprocess.Popen[str]], run: str, targets: list[str], lease: str = "none"
) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run, ",".join(targets), lease],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(p)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line == "locked\n", p.stderr.read() if p.stderr else line
    return p


def held_targets() -> set[str]:
    return {h.target for h in holders(env_state().locks) if isinstance(h, LockInfo)}


def test_second_acquire_from_another_process_is_refused_with_the_holders_identity(
    spawn: list[subprocess.Popen[str]],
) -> None:
    child = hold(spawn, "gameday-7", ["lab:replica-1", "docker:web"])
    with pytest.raises(LockHeld) as err:
        acquire(["lab:lb", "lab:replica-1"], "ci-gate-1", directory=env_state().locks)
    assert err.value.target == "lab:replica-1"
    holder = err.value.holder
    assert "run gameday-7" in holder and f"pid {child.pid}" in holder
    assert socket.gethostname() in holder and "since 20" in holder
    # All or nothing: the free target was not taken either.
    assert held_targets() == {"lab:replica-1", "docker:web"}

    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    child.wait(timeout=10)
    with acquire(["lab:lb", "lab:replica-1"], "ci-gate-1", directory=env_state().locks) as locks:
        assert held_targets() == {"lab:lb", "lab:replica-1"}
        assert locks.reclaimed == ()
    assert held_targets() == set()


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_lock_of_a_sigkilled_runner_is_reclaimed(spawn: list[subprocess.Popen[str]], reap: bool) -> None:
    child = hold(spawn, "crashed-run", ["pid:4321"])
    os.kill(child.pid, signal.SIGKILL)
    if reap:
        child.wait(timeout=10)
    else:  # killed but not yet reaped by its parent: a zombie holds nothing
        wait_until(
            lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z",
            timeout_s=10,
            interval_s=0.01,
            what="the killed holder to be a zombie",
        )
    with acquire(["pid:4321"], "next-run", directory=env_state().locks) as locks:
        (reclaimed,) = locks.reclaimed
        assert reclaimed.target == "pid:4321"
        assert "run crashed-run" in reclaimed.former_holder
        assert ("gone" if reap else "zombie") in reclaimed.reason
        (info,) = [h for h in holders(env_state().locks) if isinstance(h, LockInfo)]
        assert info.owner.run_id == "next-run" and info.owner.pid == os.getpid()


def test_a_live_holder_keeps_its_lock_even_after_its_lease_expired(
    spawn: list[subprocess.Popen[str]],
) -> None:
    child = hold(spawn, "slow-run", ["ssh:db-1"], lease="0.05")
    time.sleep(0.2)  # not a barrier: a lease is a clock, and 0.2 s is past its 0.05 s
    with pytest.raises(LockHeld) as err:
        acquire(["ssh:db-1"], "impatient-run", directory=env_state().locks)
    assert f"pid {child.pid}" in err.value.holder
    assert "lease expired" in err.value.holder and "still alive" in err.value.holder
    assert held_targets() == {"ssh:db-1"}


def test_a_reused_pid_does_not_keep_a_dead_runners_lock() -> None:
    me = Owner.current("old-run")
    assert me.start_ticks is not None
    # The pid is alive (it is us) but was born at another moment: another process.
    impostor = msgspec.structs.replace(me, start_ticks=me.start_ticks - 1000)
    directory = locks_dir(env_state().home)
    directory.mkdir(parents=True)
    path = lock_path(directory, "k8s:shop/app=web")
    stale = LockInfo(
        target="k8s:shop/app=web",
        owner=impostor,
        token="x",
        acquired_at=1.0,
        lease_expires_at=None,
        path=path,
    )
    path.write_text(json.dumps(stale.to_dict()))
    with acquire(["k8s:shop/app=web"], "new-run", directory=env_state().locks) as locks:
        assert "reused" in locks.reclaimed[0].reason


def test_holder_on_another_host_is_respected_until_its_lease_expires() -> None:
    directory = locks_dir(env_state().home)
    directory.mkdir(parents=True)
    remote = msgspec.structs.replace(Owner.current("remote-run"), hostname="elsewhere.invalid")
    path = lock_path(directory, "ssh:shared")

    def write(expires: float | None) -> None:
        info = LockInfo(
            target="ssh:shared", owner=remote, token="r", acquired_at=1.0, lease_expires_at=expires, path=path
        )
        path.write_text(json.dumps(info.to_dict()))

    for expires in (None, time.time() + 60):
        write(expires)
        with pytest.raises(LockHeld, match="elsewhere.invalid"):
            acquire(["ssh:shared"], "local-run", directory=env_state().locks)
    write(time.time() - 1)
    with acquire(["ssh:shared"], "local-run", directory=env_state().locks) as locks:
        assert "lease expired" in locks.reclaimed[0].reason


def test_an_unreadable_lock_file_is_treated_as_held_and_left_alone() -> None:
    directory = locks_dir(env_state().home)
    directory.mkdir(parents=True)
    path = lock_path(directory, "lab:lb")
    path.write_bytes(b'{"target": "lab:lb", "own')
    with pytest.raises(LockHeld) as err:
        acquire(["lab:lb"], "run-1", directory=env_state().locks)
    assert str(path) in err.value.holder and "not valid JSON" in err.value.holder
    assert path.read_bytes() == b'{"target": "lab:lb", "own'


def test_release_removes_only_our_own_lock_files() -> None:
    locks = acquire(["a", "b"], "run-1", directory=env_state().locks)
    (mine_a,) = [i for i in locks.infos if i.target == "a"]
    # Someone else owns "b" now (say it was reclaimed while we were presumed dead).
    theirs = dataclasses.replace(locks.infos[1], token="someone-else")
    theirs.path.write_text(json.dumps(theirs.to_dict()))
    locks.release()
    locks.release()  # idempotent
    assert not mine_a.path.exists()
    assert held_targets() == {"b"}


def test_processes_racing_for_one_target_yield_exactly_one_winner(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = textwrap.dedent(
        """
        import os, sys, time
        from chaoslab.errors import LockHeld
        from chaoslab.paths import StatePaths
        from chaoslab.safety.locks import acquire
        locks_dir = StatePaths.from_environment().locks
        go, i = sys.argv[1], sys.argv[2]
        open(go + "-ready-" + i, "w").close()  # readiness handshake: imported and waiting
        while not os.path.exists(go):
            time.sleep(0.001)
        try:
            locks = acquire(["lab:shared", f"lab:own-{i}"], f"run-{i}", directory=locks_dir)
        except LockHeld as exc:
            print("held", exc.holder, flush=True)
        else:
            print("won", flush=True)
            sys.stdin.readline()
            locks.release()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(go), str(i)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / f"go-ready-{i}").exists() for i in range(6)),
            timeout_s=60,
            what="every child at its start line",
        )
        go.touch()
        results = []
        for p in procs:
            assert p.stdout is not None
            results.append(p.stdout.readline())
        winners = [i for i, r in enumerate(results) if r == "won\n"]
        assert len(winners) == 1, results
        assert all(r.startswith("held run run-") for i, r in enumerate(results) if i != winners[0])
        # Losers took nothing: only the winner's two targets are locked.
        assert held_targets() == {"lab:shared", f"lab:own-{winners[0]}"}
    finally:
        for p in procs:
            p.communicate(input="\n", timeout=10)
    assert all(p.returncode == 0 for p in procs)
    assert held_targets() == set()


def test_empty_target_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        acquire(["lab:lb", " "], "run-1", directory=env_state().locks)
