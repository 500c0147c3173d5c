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

import psutil

from chaoslab.drivers import _proc
from chaoslab.drivers._proc import FAULT_ENV, ProcRef
from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    RevertResult,
    local_host,
)
from chaoslab.drivers.selection import Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import check_lease, spawn_watchdog, start_lease, validated
from chaoslab.errors import DriverError, InvalidInput, Problem, Unsupported

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


class StressDriver(Driver):
    """CPU, memory and disk stress with self-ending stressors. Stateless."""

    name = "stress"
    # Leased by the watchdog, which reads the run's heartbeat (drivers.lease).
    heartbeat_ops = frozenset({"cpu", "memory", "disk"})
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

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        full = validated(self, op, args, target, Kind.FAULT)
        lease = check_lease(lease_s)
        data: dict[str, Any] = {"kind": op.name}
        data.update(_backend(op.name, str(full.get("backend", "auto"))))
        if op.name == "cpu":
            data.update(workers=int(full["workers"]), load=float(full["load"]))
        elif op.name == "memory":
            data["mib"] = _memory_mib(full)
        else:
            # Absolute and resolved now: revert, check_clean and the lock key must name
            # the same directory from any working directory (``recover`` runs elsewhere).
            path = str(Path(str(full.get("path") or tempfile.gettempdir())).resolve())
            data.update(path=path, fill_bytes=_fill_bytes(path, full))
        if target is not None:
            found = _proc.resolve(target, driver=self.name, refuse_protected=True, lab_dir=ctx.lab_dir)
            picked = pick(found, Selection(), resolve_seed(args, ctx), key=lambda p: p.pid)
            of = picked.items[0]
            data["cgroup"] = {
                "of": _proc.describe(of),
                "procs_files": _proc.cgroup_procs_files(of.pid),
                "pick": picked.to_dict(),
            }
        return RevertRecord(
            driver=self.name,
            operation=op.name,
            target=target or "host",
            run_id=ctx.run_id,
            args=dict(args),
            data=data,
            lease_s=lease,
            lease_expires_at=time.time() + lease,
        )

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        if ctx.dry:
            return record.with_data(dry=True)
        record = start_lease(record)
        deadline = float(record.lease_expires_at or 0.0)
        data = dict(record.data)
        spec: dict[str, Any] = {
            **data,
            "fault_id": record.fault_id,
            "deadline": deadline,
            "cgroup_procs": (data.get("cgroup") or {}).get("procs_files", []),
        }
        if data["kind"] == "disk":
            spec["fill_dir"] = str(fill_dir(data["path"], record.fault_id))
        if data["kind"] == "disk" or record.heartbeat:
            # Files outlive a killed stressor, and a stressor knows only its deadline: the
            # watchdog ends the fault when the lease ends or the run stops renewing it.
            record = record.with_data(watchdog=spawn_watchdog(ctx, record).to_dict())
        if data["backend"] == "stress-ng":
            spec["command"] = _stress_ng_command(data, deadline)
            record = record.with_data(command=spec["command"])
        try:
            keeper = _launch(
                record.fault_id, spec, timeout_s=float(record.lease_s or check_lease(None)) + 15.0
            )
        except DriverError:
            self.revert(ctx, record)
            raise
        return record.with_data(keeper=keeper, sid=keeper["sid"])

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        procs = stressors(record)
        refs = []
        for proc in procs:
            ref = ProcRef.of(proc)
            if _proc.signal_ref(ref, signal.SIGKILL):
                refs.append(ref)
        left = _proc.wait_gone(refs, 5.0)
        removed = False
        fill_left = False
        if "path" in record.data:
            directory = fill_dir(str(record.data["path"]), record.fault_id)
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)
                removed = True
                fill_left = directory.exists()
        detail = f"killed {len(refs)} stressor process(es)" + (", removed fill" if removed else "")
        if left:
            detail += f"; still alive: {[r.pid for r in left]}"
        if fill_left:
            detail += "; the fill directory could not be removed"
        if left or fill_left:
            # A failed revert keeps its lease: the watchdog is not retired.
            return RevertResult(reverted=False, detail=detail + " (lease kept)")
        _proc.kill_watchdogs(record.fault_id)  # retired only once nothing is left
        return RevertResult(reverted=True, detail=detail)

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        """The host resource under pressure (its CPU, its memory, an absolute disk path),
        plus the process whose cgroups the stressor joins."""
        host = local_host()
        kind = str(record.data.get("kind", record.operation))
        keys = [f"host:{host}:disk:{record.data['path']}" if kind == "disk" else f"host:{host}:{kind}"]
        of = (record.data.get("cgroup") or {}).get("of") or {}
        if "create_time" in of:
            keys.append(f"proc:{host}:{of['pid']}:{float(of['create_time']):.2f}")
        return tuple(keys)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        residue = [f"stressor pid {p.pid} still running" for p in stressors(record)]
        if "path" in record.data and not Path(str(record.data["path"])).is_absolute():
            # A relative path means another directory from here: never call that clean.
            residue.append(f"cannot verify the fill: {record.data['path']!r} is not an absolute path")
        elif "path" in record.data:
            directory = fill_dir(str(record.data["path"]), record.fault_id)
            if directory.exists():
                residue.append(f"fill directory {directory} still exists")
        residue += [f"watchdog pid {p.pid} still running" for p in _proc.watchdog_processes(record.fault_id)]
        return CleanReport(clean=not residue, residue=tuple(residue))


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


def _stress_ng_command(data: Mapping[str, Any], deadline: float) -> list[str]:
    # stress-ng's --timeout takes whole seconds: round up; the keeper stops it on time.
    timeout = f"{max(1, math.ceil(deadline - time.time()))}s"
    exe = stress_ng_path() or "stress-ng"
    if data["kind"] == "cpu":
        load = str(round(float(data["load"])))
        return [exe, "--cpu", str(data["workers"]), "--cpu-load", load, "--timeout", timeout, "-q"]
    mib = f"{int(data['mib'])}m"
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
