"""Process helpers shared by the local drivers (process, stress, net, watchdog).

Built on psutil; what is written here is what psutil does not offer:

- ``ProcRef``: a process identity that survives serialisation (pid + create_time), so a
  revert run later, from another process, never signals a recycled pid.
- The target grammar (``pid:``, ``pidfile:``, ``name:``, ``pattern:``, ``lab:``) and the
  safety rule that a target must never match chaoslab itself, its ancestors, PID 1 or a
  chaoslab watchdog.
- Finding the processes that carry one fault's tag (env var ``CHAOSLAB_FAULT_ID``), which
  is how stressors are found again by ``check_clean``/``revert`` from any process.

Zombies count as dead everywhere: they hold no resources, cannot be signalled, and on
hosts whose PID 1 does not reap orphans they linger forever.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from chaoslab.drivers.base import runner_pids
from chaoslab.errors import DriverError, InvalidInput, Problem, TargetNotFound, UnsafeTarget

FAULT_ENV = "CHAOSLAB_FAULT_ID"  # tag carried by every stressor process of a fault
WATCHDOG_MODULE = "chaoslab.drivers.watchdog"
SELECTOR_KINDS = ("pid", "pidfile", "name", "pattern", "lab")

# psutil derives create_time from jiffies since boot (1/100 s): two reads of the same
# process agree exactly, a recycled pid differs by at least one tick in practice.
_CREATE_TIME_TOLERANCE_S = 0.005


@dataclass(frozen=True, kw_only=True)
class ProcRef:
    """A process identity: pid plus start time. Invariant: never matches a recycled pid."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, proc: psutil.Process) -> ProcRef:
        return cls(pid=proc.pid, create_time=proc.create_time())

    @classmethod
    def from_dict(cls, raw: Any) -> ProcRef:
        return cls(pid=int(raw["pid"]), create_time=float(raw["create_time"]))

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time}

    def process(self) -> psutil.Process | None:
        """The live process with this identity, or None (gone, zombie, or pid recycled)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > _CREATE_TIME_TOLERANCE_S:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def started_at(proc: psutil.Process) -> float:
    """The wall-clock start time of ``proc``, accurate to a clock tick (10 ms).

    psutil's ``create_time`` adds the start offset to /proc/stat's *whole-second* boot
    time, so it can be up to 1 s early: fine as an identity, wrong for measuring a time
    to recover. The boot instant is recomputed from CLOCK_BOOTTIME (the clock the
    kernel's process start times use).
    """
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return proc.create_time() + (boot - psutil.boot_time())


def is_live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_stopped(proc: psutil.Process) -> bool:
    """True when the process is in job-control stop (state ``T``) or tracing stop."""
    try:
        return proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def signal_ref(ref: ProcRef, sig: int) -> bool:
    """Send ``sig`` to ``ref`` only if it is still the same process. True if sent."""
    proc = ref.process()
    if proc is None:
        return False
    try:
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied as exc:
        raise DriverError(f"permission denied sending signal {sig} to pid {ref.pid}") from exc
    return True


def wait_state(refs: Iterable[ProcRef], *, stopped: bool, timeout_s: float) -> bool:
    """Signals are delivered asynchronously: wait until every live ref is (not) stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        procs = [p for r in refs if (p := r.process()) is not None]
        if all(is_stopped(p) == stopped for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def wait_gone(refs: Iterable[ProcRef], timeout_s: float) -> list[ProcRef]:
    """Wait until every ref is dead; return those still alive at the timeout."""
    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [r for r in pending if r.alive()]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return pending


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def is_kernel_thread(proc: psutil.Process) -> bool:
    try:
        return proc.pid == 2 or proc.ppid() == 2
    except psutil.Error:
        return True


def watchdog_processes(fault_id: str | None = None) -> list[psutil.Process]:
    """Live chaoslab watchdogs, all of them or those guarding ``fault_id``.

    Never includes the calling process (a watchdog checking its own fault).
    """
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        argv = _cmdline(proc)
        if WATCHDOG_MODULE not in argv:
            continue
        if fault_id is not None and not _argv_has(argv, "--fault-id", fault_id):
            continue
        if is_live(proc):
            found.append(proc)
    return found


def _argv_has(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:], strict=False))


def kill_watchdogs(fault_id: str, *, timeout_s: float = 2.0) -> int:
    """SIGTERM the watchdogs of ``fault_id`` (never the calling process); wait for them."""
    refs = []
    for proc in watchdog_processes(fault_id):
        ref = ProcRef.of(proc)
        if signal_ref(ref, signal.SIGTERM):
            refs.append(ref)
    left = wait_gone(refs, timeout_s)
    for ref in left:
        signal_ref(ref, signal.SIGKILL)
    wait_gone(left, 1.0)
    return len(refs)


def tagged_processes(fault_id: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``CHAOSLAB_FAULT_ID=<fault_id>``.

    The environment of /proc/<pid>/environ is the one given at exec time and is
    inherited by forks, so it tags stress-ng's workers too (stress-ng rewrites argv).
    """
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(FAULT_ENV) == fault_id and is_live(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def protected_pids() -> frozenset[int]:
    """PIDs no fault may touch: PID 1, this process and its ancestors, every watchdog.

    Ancestors rather than descendants: killing an ancestor kills the run (the runner,
    its shell, its supervisor); descendants are often legitimate targets (a lab or a
    test fixture started by the runner).
    """
    pids = set(runner_pids())
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    pids.update(p.pid for p in watchdog_processes())
    return frozenset(pids)


@dataclass(frozen=True, kw_only=True)
class Selector:
    """A parsed process target such as ``pattern:replica`` or ``lab:replica-2``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_selector(target: str | None, *, path: str = "target") -> Selector:
    """Parse a target string; raises InvalidInput with a hint for anything malformed."""
    if not target or ":" not in target:
        raise InvalidInput(
            [
                Problem(
                    path=path,
                    message=f"invalid process target {target!r}",
                    hint="use pid:N, pidfile:/path, name:NAME, pattern:REGEX or lab:COMPONENT",
                )
            ]
        )
    kind, _, value = target.partition(":")
    problems: list[Problem] = []
    if kind not in SELECTOR_KINDS:
        problems.append(
            Problem(
                path=path,
                message=f"unknown target kind {kind!r}",
                hint=f"known: {', '.join(SELECTOR_KINDS)}",
            )
        )
    elif not value:
        problems.append(Problem(path=path, message=f"empty {kind} in target {target!r}"))
    elif kind == "pid" and not (value.isdigit() and int(value) > 0):
        problems.append(Problem(path=path, message=f"pid must be a positive integer: {value!r}"))
    elif kind == "pattern":
        try:
            re.compile(value)
        except re.error as exc:
            problems.append(Problem(path=path, message=f"invalid regex {value!r}: {exc}"))
    if problems:
        raise InvalidInput(problems)
    return Selector(kind=kind, value=value)


def _from_pid(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    return [proc] if is_live(proc) else []


def _read_pidfile(path: str) -> int:
    try:
        text = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise TargetNotFound(f"cannot read pid file {path}: {exc.strerror}", target=path) from exc
    if not text.split() or not text.split()[0].isdigit():
        raise TargetNotFound(f"pid file {path} holds no pid ({text[:40]!r})", target=path)
    return int(text.split()[0])


def lab_pid(name: str, lab_dir: Path) -> int | None:
    """The pid the lab state file names for component ``name`` (it may be stale)."""
    from chaoslab.drivers.targets import LabState

    comp = LabState.load(lab_dir).component(name)
    return comp.pid


def _all_user_processes() -> Iterator[psutil.Process]:
    for proc in psutil.process_iter():
        if not is_kernel_thread(proc) and is_live(proc):
            yield proc


def matches(sel: Selector, lab_dir: Path) -> list[psutil.Process]:
    """Every live process the selector names, protected ones included. No filtering."""
    if sel.kind == "pid":
        return _from_pid(int(sel.value))
    if sel.kind == "pidfile":
        return _from_pid(_read_pidfile(sel.value))
    if sel.kind == "lab":
        pid = lab_pid(sel.value, lab_dir)
        return _from_pid(pid) if pid else []
    if sel.kind == "name":
        out = []
        for proc in _all_user_processes():
            argv = _cmdline(proc)
            try:
                name = proc.name()
            except psutil.Error:
                continue
            if name == sel.value or (argv and os.path.basename(argv[0]) == sel.value):
                out.append(proc)
        return out
    regex = re.compile(sel.value)
    return [p for p in _all_user_processes() if regex.search(" ".join(_cmdline(p)))]


def resolve(
    target: str | None, *, driver: str, refuse_protected: bool, lab_dir: Path
) -> list[psutil.Process]:
    """Resolve a process target to live processes, sorted by pid.

    With ``refuse_protected`` (faults), a match on a protected process raises
    UnsafeTarget and nothing matching raises TargetNotFound. Without it (probes,
    heal checks) protected processes are silently left out and an empty list is fine.
    """
    sel = parse_selector(target)
    found = matches(sel, lab_dir)
    protected = protected_pids()
    hit = sorted(p.pid for p in found if p.pid in protected)
    if hit and refuse_protected:
        raise UnsafeTarget(
            f"target {sel} matches processes chaoslab must never touch (pid {hit}: "
            "PID 1, chaoslab itself or its ancestors, or a chaoslab watchdog); "
            "narrow the selector",
            driver=driver,
            target=str(sel),
        )
    found = sorted((p for p in found if p.pid not in protected), key=lambda p: p.pid)
    if not found and refuse_protected:
        raise TargetNotFound(f"no live process matches {sel}", driver=driver, target=str(sel))
    return found


def describe(proc: psutil.Process) -> dict[str, Any]:
    """A JSON-able description of a process for records and journals."""
    try:
        return {**ProcRef.of(proc).to_dict(), "name": proc.name(), "cmdline": _cmdline(proc)[:8]}
    except psutil.Error:
        return {"pid": proc.pid}


def _cgroup_mounts() -> list[tuple[frozenset[str], str, Path]]:
    """(controllers, hierarchy root, mount point) of every cgroup v1/v2 mount.

    v2 is keyed by the empty controller set, as in ``/proc/<pid>/cgroup`` ("0::/path").
    """
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text("utf-8").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        ctrls = frozenset() if tail[0] == "cgroup2" else frozenset(tail[2].split(","))
        mounts.append((ctrls, fields[3], Path(fields[4])))
    return mounts


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """Map each cgroup hierarchy of ``pid`` ("cpu", "memory", "" for v2) to its directory."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text("utf-8").splitlines()
    except OSError as exc:
        raise DriverError(f"cannot read the cgroups of pid {pid}: {exc.strerror}") from exc
    mounts = _cgroup_mounts()
    out: dict[str, Path] = {}
    for line in lines:
        _hid, ctrls, path = line.split(":", 2)
        wanted = frozenset(ctrls.split(",")) if ctrls else frozenset()
        for have, root, mountpoint in mounts:
            if (wanted and wanted <= have) or (not wanted and not have):
                rel = os.path.relpath(path, root) if path.startswith(root) else None
                if rel is not None:
                    out[ctrls] = mountpoint / rel if rel != "." else mountpoint
                break
    return out


def cgroup_procs_files(pid: int) -> list[str]:
    """``cgroup.procs`` files that would move a process into ``pid``'s cgroups.

    Only hierarchies where ``pid`` sits elsewhere than this process are listed, so
    joining touches nothing that is already shared.
    """
    theirs, ours = cgroup_dirs(pid), cgroup_dirs(os.getpid())
    return sorted(
        str(d / "cgroup.procs")
        for key, d in theirs.items()
        if ours.get(key) != d and (d / "cgroup.procs").exists()
    )
