"""The process driver: kill or suspend local processes, count them.

Targets: ``pid:123``, ``pidfile:/run/x.pid``, ``name:python3``, ``pattern:<regex on the
command line>``, ``lab:replica-2``. Selection args (``count``/``percent``/``all``,
``seed``) pick among the matches; the seed is recorded.

- ``kill`` sends a signal (SIGKILL by default). It has no lease: a dead process cannot be
  brought back. Its revert waits — up to ``timeout`` — for the system to heal: the lab
  component (or pid file) names a live process again, or the selector matches as many
  processes as before the kill; a signalled process still alive after 2 s survived the
  signal (nothing to heal). ``time_to_recover_s`` is measured from the kill to the
  *start time* of the replacement process, so it is exact even when the revert runs late
  or from another process.
- ``suspend`` sends SIGSTOP; revert sends SIGCONT. A detached watchdog sends SIGCONT when
  the lease ends, even if the runner was SIGKILLed.
- ``count`` (probe) returns how many processes match.

Invariants: the record names processes by pid *and* start time, so no revert ever
signals a recycled pid; a selector that matches PID 1, chaoslab itself, its ancestors
or a watchdog is refused in ``prepare`` (UnsafeTarget), before anything is touched.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers import _proc
from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    local_host,
    parse_duration,
)
from chaoslab.drivers.lifecycle import (
    Ask,
    FaultDriver,
    Heal,
    HealingData,
    HealingFault,
    LeasedData,
    LeasedFault,
    Proc,
    ProcId,
    not_applied,
)
from chaoslab.drivers.selection import SELECTION_PARAMS, Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import validated
from chaoslab.errors import InvalidInput, Problem, TargetNotFound, UnsafeTarget

NAME = "process"

SURVIVAL_GRACE_S = 2.0  # a signalled process still alive after this has survived it

# Job-control stops through `kill` would be a suspend without a lease: refused.
_STOPPING = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="kill",
        kind=Kind.FAULT,
        summary="Send a signal (default SIGKILL); revert waits for the system to heal",
        params=(
            Param(name="signal", type=(str, int), help="SIGKILL, TERM, 9, ...", default="SIGKILL"),
            Param(
                name="timeout",
                type=(str, int, float),
                help="how long revert waits for the system to heal",
                default="30s",
                duration=True,
            ),
            *SELECTION_PARAMS,
        ),
        lease=LeaseKind.NONE,
    ),
    Operation(
        name="suspend",
        kind=Kind.FAULT,
        summary="SIGSTOP the processes; SIGCONT on revert or when the lease ends",
        params=SELECTION_PARAMS,
    ),
    Operation(name="count", kind=Kind.PROBE, summary="How many processes match the target"),
)


def parse_signal(value: Any) -> signal.Signals:
    """``"SIGTERM"``, ``"term"``, ``"15"`` or ``15`` → ``Signals.SIGTERM``; ValueError else."""
    if isinstance(value, bool):
        raise ValueError(f"not a signal: {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"no signal number {value}") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return signal.Signals[name]
        except KeyError:
            raise ValueError(f"unknown signal {value!r}") from None
    raise ValueError(f"not a signal: {value!r}")


class KillData(HealingData, frozen=True, kw_only=True):
    procs: tuple[Proc, ...]
    pick: dict[str, Any]
    lab_dir: str | None = None  # absolute: the heal check finds the restarted component
    signal: str
    pidfile: str | None = None  # absolute: the heal check reads the same file from any cwd
    signalled: tuple[ProcId, ...] = ()
    killed_at: float | None = None
    before_count: int | None = None  # name/pattern targets: matches before the kill


class SuspendData(LeasedData, frozen=True, kw_only=True):
    procs: tuple[Proc, ...]
    pick: dict[str, Any]
    lab_dir: str | None = None
    signalled: tuple[ProcId, ...] = ()


def _picked(ctx: DriverContext, ask: Ask) -> tuple[tuple[Proc, ...], dict[str, Any], str | None]:
    """Resolve and pick the processes (refusing protected ones); touches nothing."""
    assert ask.target is not None  # validate() rejects a missing target
    found = _proc.resolve(ask.target, driver=NAME, refuse_protected=True, lab_dir=ctx.lab_dir)
    picked = pick(found, Selection.from_args(ask.args), resolve_seed(ask.args, ctx), key=lambda p: p.pid)
    procs = tuple(p for p in map(Proc.describe, picked.items) if p is not None)
    lab = str(ctx.lab_dir.absolute()) if ask.target.startswith("lab:") else None
    return procs, picked.to_dict(), lab


def _absolute_pidfile(target: str | None) -> str | None:
    """A ``pidfile:`` target's file as an absolute path (relative to the run's directory),
    so ``recover`` or a watchdog elsewhere reads the same file; None for other targets."""
    sel = _proc.parse_selector(target)
    return str(Path(sel.value).absolute()) if sel.kind == "pidfile" else None


def _refuse_protected(record: RevertRecord, procs: tuple[Proc, ...]) -> None:
    protected = _proc.protected_pids()
    if unsafe := [p.pid for p in procs if p.pid in protected]:
        raise UnsafeTarget(f"refusing to signal protected pids {unsafe}", driver=NAME)


def _proc_keys(record: RevertRecord, procs: tuple[Proc, ...]) -> tuple[str, ...]:
    """Each picked process: host + pid + start time (a recycled pid is another key)."""
    host = local_host()
    return tuple(f"proc:{host}:{p.pid}:{p.create_time:.2f}" for p in procs)


class Kill(HealingFault[KillData]):
    """Send a signal; the revert waits for the system to heal."""

    operation = "kill"
    data_type = KillData

    def plan(self, ctx: DriverContext, ask: Ask) -> KillData:
        procs, picked, lab = _picked(ctx, ask)
        return KillData(
            procs=procs,
            pick=picked,
            lab_dir=lab,
            pidfile=_absolute_pidfile(ask.target),
            signal=parse_signal(ask.full["signal"]).name,
            timeout_s=parse_duration(ask.full["timeout"]),
        )

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> None:
        _refuse_protected(record, data.procs)

    def identities(self, record: RevertRecord, data: KillData) -> tuple[str, ...]:
        return _proc_keys(record, data.procs)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> KillData:
        sig = signal.Signals[data.signal]
        before = None
        if _proc.parse_selector(record.target).kind in ("name", "pattern"):
            before = len(
                _proc.resolve(record.target, driver=NAME, refuse_protected=False, lab_dir=ctx.lab_dir)
            )
        killed_at = time.time()
        signalled = tuple(p for p in data.procs if _proc.signal_ref(p.ref(), sig))
        if not signalled:
            raise not_applied(
                "every selected process exited before the signal",
                driver=NAME,
                target=record.target,
                error=TargetNotFound,
            )
        return msgspec.structs.replace(
            data,
            signalled=tuple(ProcId(pid=p.pid, create_time=p.create_time) for p in signalled),
            killed_at=killed_at,
            before_count=before,
        )

    def since(self, record: RevertRecord, data: KillData) -> float:
        return data.killed_at or record.created_at

    def heal(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> Heal:
        killed = {p.ref() for p in data.signalled}
        killed_at = self.since(record, data)
        sel = _proc.parse_selector(record.target)
        dying = [r.pid for r in killed if r.alive()]
        if dying and time.time() - killed_at < SURVIVAL_GRACE_S:
            # A process handling SIGTERM may take a moment to exit: it has not "healed"
            # until it is either gone (and replaced) or has clearly survived the signal.
            return Heal(healed=False, detail=f"waiting for signalled pid(s) {dying} to exit")
        if sel.kind == "pid":
            if killed and all(r.alive() for r in killed):
                return Heal(healed=True, recovered_at=killed_at, detail="the process survived")
            return Heal(
                healed=False,
                possible=False,
                detail="a killed pid target cannot be restarted",
            )
        if sel.kind in ("lab", "pidfile"):
            if sel.kind == "pidfile" and data.pidfile is not None:
                sel = _proc.Selector(kind="pidfile", value=data.pidfile)  # never the cwd's file
            try:
                live = _proc.matches(sel, Path(data.lab_dir) if data.lab_dir else ctx.lab_dir)
            except TargetNotFound as exc:
                return Heal(healed=False, detail=str(exc))
            if not live:
                return Heal(healed=False, detail=f"{sel} names no live process")
            start = _proc.started_at(live[0])
            return Heal(
                healed=True,
                recovered_at=max(start, killed_at),
                detail=f"{sel} is pid {live[0].pid}"
                + ("" if _proc.ProcRef.of(live[0]) in killed else " (a new process)"),
            )
        before = data.before_count or len(killed)
        live = _proc.resolve(record.target, driver=NAME, refuse_protected=False, lab_dir=ctx.lab_dir)
        if len(live) < before:
            return Heal(healed=False, detail=f"{len(live)} of {before} processes match {sel}")
        starts = [_proc.started_at(p) for p in live]
        old = sum(1 for t in starts if t < killed_at)
        new_starts = sorted(t for t in starts if t >= killed_at)
        needed = before - old
        at = new_starts[needed - 1] if needed > 0 else killed_at
        return Heal(healed=True, recovered_at=at, detail=f"{len(live)} processes match {sel}")


class Suspend(LeasedFault[SuspendData]):
    """SIGSTOP the processes; SIGCONT on revert or when the lease ends."""

    operation = "suspend"
    data_type = SuspendData

    def plan(self, ctx: DriverContext, ask: Ask) -> SuspendData:
        procs, picked, lab = _picked(ctx, ask)
        return SuspendData(procs=procs, pick=picked, lab_dir=lab)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: SuspendData) -> None:
        _refuse_protected(record, data.procs)

    def identities(self, record: RevertRecord, data: SuspendData) -> tuple[str, ...]:
        return _proc_keys(record, data.procs)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: SuspendData) -> SuspendData:
        refs = [p.ref() for p in data.procs]
        stopped = tuple(p for p in data.procs if _proc.signal_ref(p.ref(), signal.SIGSTOP))
        if not stopped:
            raise not_applied(
                "every selected process exited before SIGSTOP",
                driver=NAME,
                target=record.target,
                error=TargetNotFound,
            )
        _proc.wait_state(refs, stopped=True, timeout_s=2.0)
        return msgspec.structs.replace(
            data, signalled=tuple(ProcId(pid=p.pid, create_time=p.create_time) for p in stopped)
        )

    def undo(self, ctx: DriverContext, record: RevertRecord, data: SuspendData) -> str:
        resumed = 0
        refs = [p.ref() for p in data.procs]
        for ref in refs:
            proc = ref.process()
            if proc is not None and _proc.is_stopped(proc):
                resumed += _proc.signal_ref(ref, signal.SIGCONT)
        _proc.wait_state(refs, stopped=False, timeout_s=2.0)
        return f"resumed {resumed} process(es)"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: SuspendData) -> list[str]:
        residue = []
        for p in data.procs:
            proc = p.ref().process()
            if proc is not None and _proc.is_stopped(proc):
                residue.append(f"pid {p.pid} is still stopped")
        return residue


class ProcessDriver(FaultDriver):
    """Kill and suspend local processes. Stateless: everything lives in the record."""

    name = NAME
    faults = (Kill, Suspend)
    summary = "Kill or suspend local processes (pid, pid file, name, pattern, lab component)"

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems = Selection.problems(args) if op.kind is Kind.FAULT else []
        if "signal" in args:
            try:
                sig = parse_signal(args["signal"])
            except ValueError as exc:
                problems.append(Problem(path="signal", message=str(exc)))
            else:
                if sig in _STOPPING:
                    problems.append(
                        Problem(
                            path="signal",
                            message=f"{sig.name} would stop the process with no lease",
                            hint="use the suspend operation, which resumes it when its lease ends",
                        )
                    )
        try:
            _proc.parse_selector(target)
        except InvalidInput as exc:
            problems.extend(exc.problems)
        return problems

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        validated(self, op, args, target, Kind.PROBE)
        return len(_proc.resolve(target, driver=self.name, refuse_protected=False, lab_dir=ctx.lab_dir))
