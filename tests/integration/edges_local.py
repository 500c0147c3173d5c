"""Edge-column hooks of the local drivers (process, stress, net): see matrix_edges.py.

Every break is made on something this cell started and nobody else uses: the lab
replica's own supervisor, a freezer cgroup and a tmpfs mount made for this cell, this
cell's network namespace (its name, never the machine's iptables or anyone's lock).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from chaoslab.drivers.base import RevertRecord
from chaoslab.drivers.stress import fill_dir, stressors
from tests.conftest import poll, require, wait_until
from tests.contract.cases import Target
from tests.contract.targets import LabReplica, sleepers, unique_marker
from tests.integration.matrix_edges import EdgeHooks, NotApplicable, Variant

LOCAL = NotApplicable(
    "a local fault reaches its target through this host's kernel: there is no connection to lose"
)
STRESS_LOCAL = NotApplicable(
    "stressors are processes this host starts for itself (fork/exec, no daemon, no connection): "
    "nothing stands between the run and the host it loads"
)


# --- process ---------------------------------------------------------------------------------


@contextlib.contextmanager
def restopping(target: Target, record: RevertRecord) -> Iterator[None]:
    """A co-tenant (a debugger, another tool) that stops the processes again as soon as
    anything continues them: the revert's SIGCONT cannot hold. ``target.handle`` is the
    processes (Popen-like, ``.pid``): process.suspend's and ssh.suspend's targets."""
    pids = [proc.pid for proc in target.handle]
    done = threading.Event()

    def restop() -> None:
        while not done.wait(0.005):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    thread = threading.Thread(target=restop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def _by_pid(target: Target, workdir: Path) -> Iterator[Variant]:
    (proc,) = target.handle
    yield Variant(selector=f"pid:{proc.pid}")


@contextlib.contextmanager
def _pidfile(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``pidfile:pids/sleeper.pid`` relative to the run's directory; the same relative
    name in ``elsewhere`` names a decoy that recover must leave alone."""
    (proc,) = target.handle
    (here / "pids").mkdir()
    (here / "pids" / "sleeper.pid").write_text(f"{proc.pid}\n")
    with sleepers(unique_marker("decoy")) as (decoy,):
        (elsewhere / "pids").mkdir()
        (elsewhere / "pids" / "sleeper.pid").write_text(f"{decoy.pid}\n")
        yield Variant(selector="pidfile:pids/sleeper.pid", relative=("pids/sleeper.pid",))
        assert psutil.Process(decoy.pid).status() != psutil.STATUS_STOPPED, "recover touched the decoy"


@contextlib.contextmanager
def _healer_stopped(target: Target, record: RevertRecord) -> Iterator[None]:
    """The supervisor that restarts the killed replica is frozen (this cell's own one):
    nothing heals, so the kill's revert, which waits for the heal, cannot succeed."""
    replica: LabReplica = target.handle
    replica.supervisor.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        replica.supervisor.send_signal(signal.SIGCONT)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _replica_pidfile(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``pidfile:pids/replica.pid`` relative to the run's directory, kept current as the
    supervisor restarts the replica (as a service manager writes its pid file). In
    ``elsewhere`` the same relative name holds the pid of a process that has exited: a
    heal check that reads it there never sees the replica come back."""
    replica: LabReplica = target.handle
    pidfile = here / "pids" / "replica.pid"
    pidfile.parent.mkdir()
    done = threading.Event()

    def mirror() -> None:
        last = None
        while True:
            pid = replica.pid()
            if pid is not None and pid != last:
                _atomic_write(pidfile, f"{pid}\n")
                last = pid
            if done.wait(0.02):
                return

    first = replica.pid()
    assert first is not None
    _atomic_write(pidfile, f"{first}\n")
    thread = threading.Thread(target=mirror, daemon=True)
    thread.start()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    (elsewhere / "pids").mkdir()
    (elsewhere / "pids" / "replica.pid").write_text(f"{gone.pid}\n")
    try:
        yield Variant(selector="pidfile:pids/replica.pid", relative=("pids/replica.pid",))
    finally:
        done.set()
        thread.join(timeout=5)


KILL_NOT_TWICE = NotApplicable(
    "a kill leaves nothing to name twice: while its fault shows, the killed process is gone, "
    "so no selector resolves to it (a second run stops at 'no live process', before any "
    "lock); once the supervisor has restarted it, the fault no longer shows and the "
    "replacement is a new process with a new pid and start time"
)


# --- stress ----------------------------------------------------------------------------------

FREEZER = Path("/sys/fs/cgroup/freezer")


@contextlib.contextmanager
def _frozen(target: Target, record: RevertRecord) -> Iterator[None]:
    """The stressors are frozen by a co-tenant (a cgroup v1 freezer, what a paused
    container's processes sit in): SIGKILL stays pending until they thaw, so the
    revert's kill cannot end them. A freezer cgroup of this cell's own."""
    require((FREEZER / "cgroup.procs").exists(), "a cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer")
    group = FREEZER / f"chaoslab-edge-{secrets.token_hex(4)}"
    group.mkdir()
    state = group / "freezer.state"

    def members() -> set[int]:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}

    try:

        def all_frozen() -> bool:
            # A stressor forking while it is moved may leave a child behind: move again.
            state.write_text("THAWED\n")
            for proc in stressors(record):
                with contextlib.suppress(ProcessLookupError, OSError):
                    (group / "cgroup.procs").write_text(f"{proc.pid}\n")
            state.write_text("FROZEN\n")
            poll(lambda: state.read_text().strip() == "FROZEN", timeout_s=5.0, interval_s=0.01)
            left = {p.pid for p in stressors(record)} - members()
            return not left and state.read_text().strip() == "FROZEN"

        wait_until(all_frozen, timeout_s=10.0, interval_s=0.05, what="every stressor to be frozen")
        yield
    finally:
        state.write_text("THAWED\n")
        # The revert's SIGKILL was pending: thawed, the stressors die; then the group is empty.
        wait_until(lambda: not members(), timeout_s=10.0, interval_s=0.05, what="the freezer group to empty")
        group.rmdir()


@contextlib.contextmanager
def _through_a_process(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same host resource (this host's CPU or memory) named through a process on
    it, whose cgroups the second run's stressor would join."""
    with sleepers(unique_marker("cgroup-of")) as (proc,):
        yield Variant(selector=f"pid:{proc.pid}")


@contextlib.contextmanager
def _mount_in_fill(target: Target, record: RevertRecord) -> Iterator[None]:
    """A filesystem mounted inside the fill directory (EBUSY): the revert cannot remove it."""
    mnt = fill_dir(str(record.data["path"]), record.fault_id) / "mounted"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(done.returncode == 0, f"mount tmpfs (root): {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@contextlib.contextmanager
def _bind_mounted(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same directory reached through a bind mount: another path, one directory."""
    alias = workdir / "same-disk"
    alias.mkdir()
    done = subprocess.run(
        ["mount", "--bind", str(target.handle), str(alias)], capture_output=True, text=True, check=False
    )
    require(done.returncode == 0, f"mount --bind (root): {done.stderr.strip()}")
    try:
        yield Variant(args={"path": str(alias)})
    finally:
        subprocess.run(["umount", str(alias)], check=True)


@contextlib.contextmanager
def _relative_fill(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``path: fill`` relative to the run's directory (a link to the target's disk); in
    ``elsewhere`` the same name is another directory, holding a file recover must keep."""
    (here / "fill").symlink_to(Path(target.handle), target_is_directory=True)
    (elsewhere / "fill").mkdir()
    keep = elsewhere / "fill" / "keep.txt"
    keep.write_text("not chaoslab's")
    yield Variant(args={"path": "fill"}, relative=("fill",))
    assert keep.read_text() == "not chaoslab's", "recover touched the other directory"
    assert [p.name for p in (elsewhere / "fill").iterdir()] == ["keep.txt"], "recover wrote elsewhere"


# --- net -------------------------------------------------------------------------------------

NETNS_DIR = Path("/run/netns")


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def _name_detached(target: Target, record: RevertRecord) -> Iterator[None]:
    """The namespace loses its name (``ip netns delete`` while a process still lives in
    it): the rules are still in force there, but the name the record reaches it by is
    gone. Given back (``ip netns attach``) when the break is lifted."""
    netns = target.handle.netns
    pids = _ip("netns", "pids", netns).stdout.split()
    assert pids, f"no process in {netns}: the namespace would die with its name"
    deleted = _ip("netns", "delete", netns)
    assert deleted.returncode == 0, deleted.stderr
    try:
        yield
    finally:
        attached = _ip("netns", "attach", netns, pids[0])
        assert attached.returncode == 0, attached.stderr


@contextlib.contextmanager
def _stale_name(target: Target, workdir: Path) -> Iterator[Variant]:
    """A namespace name whose namespace is gone (``/run/netns/NAME`` left as a plain
    file, as after an unmount that never unlinked): nothing can enter it."""
    name = f"clt-stale-{secrets.token_hex(4)}"
    stale = NETNS_DIR / name
    stale.touch()
    try:
        yield Variant(selector=f"netns:{name}")
    finally:
        stale.unlink()


@contextlib.contextmanager
def _second_name(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same namespace under a second name (``ip netns attach`` of a process in it)."""
    netns = target.handle.netns
    (pid, *_) = _ip("netns", "pids", netns).stdout.split()
    alias = f"clt-alias-{secrets.token_hex(4)}"
    attached = _ip("netns", "attach", alias, pid)
    assert attached.returncode == 0, attached.stderr
    try:
        yield Variant(selector=f"netns:{alias}")
    finally:
        _ip("netns", "delete", alias)


_NET = EdgeHooks(break_revert=_name_detached, unreachable=_stale_name, alias=_second_name)


HOOKS: dict[str, EdgeHooks] = {
    "process.kill": EdgeHooks(
        break_revert=_healer_stopped,
        unreachable=LOCAL,
        alias=KILL_NOT_TWICE,
        relative=_replica_pidfile,
        revert_fails_args={"timeout": "3s"},
    ),
    "process.suspend": EdgeHooks(
        break_revert=restopping,
        unreachable=LOCAL,
        alias=_by_pid,
        relative=_pidfile,
    ),
    "stress.cpu": EdgeHooks(break_revert=_frozen, unreachable=STRESS_LOCAL, alias=_through_a_process),
    "stress.memory": EdgeHooks(break_revert=_frozen, unreachable=STRESS_LOCAL, alias=_through_a_process),
    "stress.disk": EdgeHooks(
        break_revert=_mount_in_fill,
        unreachable=STRESS_LOCAL,
        alias=_bind_mounted,
        relative=_relative_fill,
    ),
    "net.drop": _NET,
    "net.partition": _NET,
}
