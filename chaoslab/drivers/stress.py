"""The stress driver: CPU, memory and disk pressure, bounded by the lease.

- ``cpu``: ``workers`` processes each burning ``load`` % of a core.
- ``memory``: allocate and touch ``mib`` MiB, or ``percent_free`` % of what is available.
- ``disk``: fill ``path`` with ``mib`` MiB, or until the filesystem is ``percent_used`` %
  used; files live in ``<path>/chaoslab-fill-<fault_id>/``.

Backends: stress-ng when installed (``backend: auto``), else the built-in one
(``chaoslab.drivers.stress_worker``); the record and ``data.backend`` say which ran
and why. Disk fill is always built-in: stress-ng has no fill-to-size stressor.

The lease lives in the stressor: every stressor process ends itself at the lease's
absolute deadline. Disk fill also arms a watchdog, because files outlive a SIGKILLed
stressor; so does any fault the engine renews by heartbeat (``drivers.lease``), since
the watchdog is what notices that the run stopped renewing it. An optional process
``target`` (same grammar as the process driver) places the stressor in that process's
cgroups, so the target's own CPU/memory share is squeezed.

Invariant: revert and check_clean touch exactly this fault's processes — the stressor
keeper's session (its sid) and processes tagged ``CHAOSLAB_FAULT_ID=<fault_id>`` — and
never a protected process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psutil

from chaoslab.drivers import _proc
from chaoslab.drivers._proc import FAULT_ENV, ProcRef
from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    local_host,
)
from chaoslab.drivers.lifecycle import Ask, FaultDriver, LeasedData, LeasedFault, Proc, ProcId
from chaoslab.drivers.selection import Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import check_lease
from chaoslab.errors import DriverError, InvalidInput, Problem, TargetNotFound, Unsupported

NAME = "stress"

MIB = 1024 * 1024
FILL_PREFIX = "chaoslab-fill-"
MAX_MEMORY_SHARE = 0.9  # never ask for more than 90% of what is available
_BACKENDS = ("auto", "builtin", "stress-ng")

_TARGET_HELP = "optional process target whose cgroups the stressor joins"
_COMMON = (Param(name="backend", type=str, help="auto, builtin or stress-ng", choices=_BACKENDS),)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="cpu",
        kind=Kind.FAULT,
        summary="N workers each burning L% of a core until the lease ends",
        params=(
            Param(name="workers", type=int, help="worker processes", default=1, minimum=1, maximum=1024),
            Param(
                name="load",
                type=(int, float),
                help="percent of a core per worker",
                default=100,
                minimum=1,
                maximum=100,
            ),
            *_COMMON,
        ),
        needs_target=False,
    ),
    Operation(
        name="memory",
        kind=Kind.FAULT,
        summary="Allocate and touch memory until the lease ends",
        params=(
            Param(name="mib", type=int, help="MiB to allocate", minimum=1),
            Param(
                name="percent_free",
                type=(int, float),
                help="share of available memory",
                minimum=0.01,
                maximum=90,
            ),
            *_COMMON,
        ),
        needs_target=False,
    ),
    Operation(
        name="disk",
        kind=Kind.FAULT,
        summary="Fill a filesystem with a file until the lease ends",
        params=(
            Param(name="path", type=str, help="directory on the filesystem to fill (default: temp dir)"),
            Param(name="mib", type=int, help="MiB to write", minimum=1),
            Param(
                name="percent_used",
                type=(int, float),
                help="fill until the filesystem is this % used",
                minimum=0.01,
                maximum=99,
            ),
            Param(name="backend", type=str, help="auto or builtin", choices=("auto", "builtin")),
        ),
        needs_target=False,
    ),
)


def fill_dir(path: str, fault_id: str) -> Path:
    """The only directory a disk fill writes to and a revert removes."""
    return Path(path) / f"{FILL_PREFIX}{fault_id}"


def stress_ng_path() -> str | None:
    return shutil.which("stress-ng")


class Cgroup(msgspec.Struct, frozen=True, kw_only=True):
    """The process whose cgroups the stressor joins, and those cgroups' procs files."""

    of: Proc
    procs_files: tuple[str, ...]
    pick: dict[str, Any]


class Keeper(ProcId, frozen=True, kw_only=True):
    """The stressor keeper (``stress_worker``): its session holds every stressor."""

    sid: int


class StressData(LeasedData, frozen=True, kw_only=True):
    kind: str
    backend: str
    backend_reason: str
    cgroup: Cgroup | None = None
    keeper: Keeper | None = None
    sid: int | None = None
    command: tuple[str, ...] = ()  # stress-ng's, as run


class CpuData(StressData, frozen=True, kw_only=True):
    workers: int
    load: float


class MemoryData(StressData, frozen=True, kw_only=True):
    mib: int


class DiskData(StressData, frozen=True, kw_only=True):
    path: str  # absolute and resolved in prepare: the same directory from any cwd
    fill_bytes: int
    # The directory itself (device:inode): one directory reached by two paths (a bind
    # mount, another mount of the filesystem) is one lock key.
    directory: str | None = None


class _Stress[SD: StressData](LeasedFault[SD]):
    """What the three stress faults share: a self-ending stressor session."""

    default_target = "host"

    def common(self, ctx: DriverContext, ask: Ask) -> dict[str, Any]:
        """The fields every stress fault plans alike: backend and cgroup."""
        out: dict[str, Any] = {"kind": self.operation}
        out.update(_backend(self.operation, str(ask.full.get("backend", "auto"))))
        if ask.target is not None:
            found = _proc.resolve(ask.target, driver=NAME, refuse_protected=True, lab_dir=ctx.lab_dir)
            picked = pick(found, Selection(), resolve_seed(ask.args, ctx), key=lambda p: p.pid)
            of = Proc.describe(picked.items[0])
            if of is None:
                raise TargetNotFound("the process exited", driver=NAME, target=ask.target)
            out["cgroup"] = Cgroup(
                of=of, procs_files=tuple(_proc.cgroup_procs_files(of.pid)), pick=picked.to_dict()
            )
        return out

    def needs_watchdog(self, record: RevertRecord, data: SD) -> bool:
        # Files outlive a killed stressor, and a stressor knows only its deadline: the
        # watchdog ends the fault when the lease ends or the run stops renewing it.
        return isinstance(data, DiskData) or bool(record.heartbeat)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: SD) -> SD:
        deadline = float(record.lease_expires_at or 0.0)
        spec: dict[str, Any] = {
            **msgspec.to_builtins(data),
            "fault_id": record.fault_id,
            "deadline": deadline,
            "cgroup_procs": list(data.cgroup.procs_files) if data.cgroup else [],
        }
        if isinstance(data, DiskData):
            spec["fill_dir"] = str(fill_dir(data.path, record.fault_id))
        if data.backend == "stress-ng":
            command = _stress_ng_command(data, deadline)
            spec["command"] = command
            data = msgspec.structs.replace(data, command=tuple(command))
        keeper = _launch(record.fault_id, spec, timeout_s=float(record.lease_s or check_lease(None)) + 15.0)
        return msgspec.structs.replace(data, keeper=msgspec.convert(keeper, Keeper), sid=int(keeper["sid"]))

    def undo(self, ctx: DriverContext, record: RevertRecord, data: SD) -> str:
        refs = []
        for proc in stressors(record):
            ref = ProcRef.of(proc)
            if _proc.signal_ref(ref, signal.SIGKILL):
                refs.append(ref)
        _proc.wait_gone(refs, 5.0)
        removed = False
        if isinstance(data, DiskData):
            directory = fill_dir(data.path, record.fault_id)
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
                removed = True
        return f"killed {len(refs)} stressor process(es)" + (", removed fill" if removed else "")

    def residue(self, ctx: DriverContext, record: RevertRecord, data: SD) -> list[str]:
        residue = [f"stressor pid {p.pid} still running" for p in stressors(record)]
        if isinstance(data, DiskData):
            if not Path(data.path).is_absolute():
                # A relative path means another directory from here: never call that clean.
                residue.append(f"cannot verify the fill: {data.path!r} is not an absolute path")
            elif (directory := fill_dir(data.path, record.fault_id)).exists():
                residue.append(f"fill directory {directory} still exists")
        return residue

    def identities(self, record: RevertRecord, data: SD) -> tuple[str, ...]:
        """The host resource under pressure (its CPU, its memory, an absolute disk path),
        plus the process whose cgroups the stressor joins."""
        host = local_host()
        keys = [f"host:{host}:disk:{data.path}" if isinstance(data, DiskData) else f"host:{host}:{data.kind}"]
        if isinstance(data, DiskData) and data.directory is not None:
            keys.append(f"host:{host}:dir:{data.directory}")
        if data.cgroup is not None:
            keys.append(f"proc:{host}:{data.cgroup.of.pid}:{data.cgroup.of.create_time:.2f}")
        return tuple(keys)


class Cpu(_Stress[CpuData]):
    operation = "cpu"
    data_type = CpuData

    def plan(self, ctx: DriverContext, ask: Ask) -> CpuData:
        return CpuData(
            workers=int(ask.full["workers"]), load=float(ask.full["load"]), **self.common(ctx, ask)
        )


class Memory(_Stress[MemoryData]):
    operation = "memory"
    data_type = MemoryData

    def plan(self, ctx: DriverContext, ask: Ask) -> MemoryData:
        return MemoryData(mib=_memory_mib(ask.full), **self.common(ctx, ask))


class Disk(_Stress[DiskData]):
    operation = "disk"
    data_type = DiskData

    def plan(self, ctx: DriverContext, ask: Ask) -> DiskData:
        # Absolute and resolved now: revert, check_clean and the lock key must name the
        # same directory from any working directory (``recover`` runs elsewhere).
        path = str(Path(str(ask.full.get("path") or tempfile.gettempdir())).resolve())
        fill_bytes = _fill_bytes(path, ask.full)  # InvalidInput unless a directory
        st = os.stat(path)
        return DiskData(
            path=path, fill_bytes=fill_bytes, directory=f"{st.st_dev}:{st.st_ino}", **self.common(ctx, ask)
        )

    def recorded_args(self, ask: Ask, data: DiskData) -> Mapping[str, Any]:
        return {**ask.args, "path": data.path} if "path" in ask.args else dict(ask.args)


class StressDriver(FaultDriver):
    """CPU, memory and disk stress with self-ending stressors. Stateless."""

    name = NAME
    faults = (Cpu, Memory, Disk)
    summary = "CPU, memory and disk pressure (stress-ng or built-in), bounded by the lease"

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems: list[Problem] = []
        amount = {"memory": ("mib", "percent_free"), "disk": ("mib", "percent_used")}.get(op.name)
        if amount is not None:
            given = [a for a in amount if a in args]
            if len(given) != 1:
                problems.append(Problem(path=op.name, message=f"give exactly one of {' or '.join(amount)}"))
        mib = args.get("mib")
        total = psutil.virtual_memory().total if op.name == "memory" else 0
        if isinstance(mib, int) and not isinstance(mib, bool) and mib * MIB > total * MAX_MEMORY_SHARE > 0:
            # can never work on this machine, whatever else runs (prepare checks what is free)
            problems.append(
                Problem(
                    path="mib",
                    message=f"{mib} MiB is not possible: this machine has {total // MIB} MiB "
                    f"and at most {int(MAX_MEMORY_SHARE * 100)}% of it may be taken",
                )
            )
        if target is not None:
            try:
                _proc.parse_selector(target)
            except InvalidInput as exc:
                problems.extend(exc.problems)
        return problems


def stressors(record: RevertRecord) -> list[psutil.Process]:
    """Live processes of this fault: the keeper's session plus env-tagged processes.

    A session id is only taken from a session *leader* carrying the tag (the keeper), so
    the launcher — tagged but still in the runner's session — never widens the search;
    members must have started after the record was made, which rules out a recycled sid.
    """
    found = {p.pid: p for p in _proc.tagged_processes(record.fault_id)}
    sids: set[int] = set()
    for pid in found:
        try:
            if os.getsid(pid) == pid:
                sids.add(pid)
        except OSError:
            continue
    if isinstance(record.data.get("sid"), int):
        sids.add(int(record.data["sid"]))
    since = record.created_at - 1.0
    if sids:
        for proc in psutil.process_iter():
            if proc.pid in found:
                continue
            try:
                if os.getsid(proc.pid) in sids and proc.create_time() >= since:
                    if _proc.is_live(proc):
                        found[proc.pid] = proc
            except (OSError, psutil.Error):
                continue
    protected = _proc.protected_pids()
    return sorted((p for p in found.values() if p.pid not in protected), key=lambda p: p.pid)


def _backend(kind: str, asked: str) -> dict[str, str]:
    if kind == "disk":
        return {"backend": "builtin", "backend_reason": "stress-ng has no fill-to-size stressor"}
    have = stress_ng_path()
    if asked == "builtin":
        return {"backend": "builtin", "backend_reason": "requested"}
    if asked == "stress-ng":
        if have is None:
            raise Unsupported(
                "stress-ng is not installed (Debian: apt-get install stress-ng); use backend: builtin",
                driver="stress",
            )
        return {"backend": "stress-ng", "backend_reason": "requested"}
    if have is None:
        return {"backend": "builtin", "backend_reason": "stress-ng not installed"}
    return {"backend": "stress-ng", "backend_reason": f"found {have}"}


def _memory_mib(args: Mapping[str, Any]) -> int:
    available = psutil.virtual_memory().available
    if "percent_free" in args:
        mib = int(available * float(args["percent_free"]) / 100 / MIB)
    else:
        mib = int(args["mib"])
    if mib < 1 or mib * MIB > available * MAX_MEMORY_SHARE:
        raise InvalidInput(
            [
                Problem(
                    path="mib",
                    message=f"{mib} MiB is not possible: {available // MIB} MiB available "
                    f"and at most {int(MAX_MEMORY_SHARE * 100)}% of it may be taken",
                )
            ]
        )
    return mib


def _fill_bytes(path: str, args: Mapping[str, Any]) -> int:
    if not Path(path).is_dir():
        raise InvalidInput([Problem(path="path", message=f"{path} is not a directory")])
    usage = shutil.disk_usage(path)
    usable = usage.used + usage.free  # df's "Use%" base: reserved blocks excluded
    if "percent_used" in args:
        want = int(usable * float(args["percent_used"]) / 100) - usage.used
        if want <= 0:
            now = 100 * usage.used / usable
            raise InvalidInput([Problem(path="percent_used", message=f"{path} is already {now:.1f}% used")])
    else:
        want = int(args["mib"]) * MIB
    if want >= usage.free:
        raise InvalidInput(
            [
                Problem(
                    path="mib",
                    message=f"cannot write {want // MIB} MiB to {path}: {usage.free // MIB} MiB free",
                )
            ]
        )
    return want


def _stress_ng_command(data: StressData, deadline: float) -> list[str]:
    # stress-ng's --timeout takes whole seconds: round up; the keeper stops it on time.
    timeout = f"{max(1, math.ceil(deadline - time.time()))}s"
    exe = stress_ng_path() or "stress-ng"
    if isinstance(data, CpuData):
        load = str(round(data.load))
        return [exe, "--cpu", str(data.workers), "--cpu-load", load, "--timeout", timeout, "-q"]
    assert isinstance(data, MemoryData)  # disk fill is always built-in
    mib = f"{data.mib}m"
    return [exe, "--vm", "1", "--vm-bytes", mib, "--vm-hang", "0", "--timeout", timeout, "-q"]


def _launch(fault_id: str, spec: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, FAULT_ENV: fault_id}
    argv = [sys.executable, "-m", "chaoslab.drivers.stress_worker", "--fault-id", fault_id]
    try:
        done = subprocess.run(
            argv,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"cannot start the stressor: {exc}", driver="stress") from exc
    if done.returncode != 0:
        raise DriverError(f"the stressor failed to start: {done.stderr.strip()[-500:]}", driver="stress")
    keeper: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return keeper
