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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from chaoslab.drivers import _proc
from chaoslab.drivers._proc import ProcRef
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
    local_host,
    parse_duration,
)
from chaoslab.drivers.selection import SELECTION_PARAMS, Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import check_lease, spawn_watchdog, start_lease, validated
from chaoslab.errors import InvalidInput, Problem, TargetNotFound, UnsafeTarget

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


@dataclass(frozen=True, kw_only=True)
class Heal:
    """Whether a killed target has healed. ``possible`` is False for bare pids."""

    healed: bool
    possible: bool = True
    recovered_at: float | None = None
    detail: str = ""


class ProcessDriver(Driver):
    """Kill and suspend local processes. Stateless: everything lives in the record."""

    name = "process"
    # Leased by the watchdog, which reads the run's heartbeat (drivers.lease).
    heartbeat_ops = frozenset({"suspend"})
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

    # --- probe ---------------------------------------------------------------------------

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        validated(self, op, args, target, Kind.PROBE)
        return len(_proc.resolve(target, driver=self.name, refuse_protected=False, lab_dir=ctx.lab_dir))

    # --- faults --------------------------------------------------------------------------

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        full = validated(self, op, args, target, Kind.FAULT)
        assert target is not None  # validate() rejects a missing target
        found = _proc.resolve(target, driver=self.name, refuse_protected=True, lab_dir=ctx.lab_dir)
        seed = resolve_seed(args, ctx)
        picked = pick(found, Selection.from_args(args), seed, key=lambda p: p.pid)
        data: dict[str, Any] = {
            "procs": [_proc.describe(p) for p in picked.items],
            "pick": picked.to_dict(),
        }
        if ctx.lab_dir is not None and target.startswith("lab:"):
            data["lab_dir"] = str(ctx.lab_dir)  # the heal check finds the restarted component
        lease: float | None = None
        if op.name == "kill":
            data["signal"] = parse_signal(full["signal"]).name
            data["timeout_s"] = parse_duration(full["timeout"])
        else:
            lease = check_lease(lease_s)
        return RevertRecord(
            driver=self.name,
            operation=op.name,
            target=target,
            run_id=ctx.run_id,
            args=dict(args),
            data=data,
            lease_s=lease,
            lease_expires_at=None if lease is None else time.time() + lease,
        )

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        refs = _refs(record)
        protected = _proc.protected_pids()
        if unsafe := [r.pid for r in refs if r.pid in protected]:
            raise UnsafeTarget(f"refusing to signal protected pids {unsafe}", driver=self.name)
        if ctx.dry:
            return record.with_data(dry=True)
        if record.operation == "kill":
            return self._kill(record, refs)
        return self._suspend(ctx, record, refs)

    def _kill(self, record: RevertRecord, refs: list[ProcRef]) -> RevertRecord:
        sig = signal.Signals[record.data["signal"]]
        before = None
        if _proc.parse_selector(record.target).kind in ("name", "pattern"):
            before = len(_proc.resolve(record.target, driver=self.name, refuse_protected=False))
        killed_at = time.time()
        signalled = [r.to_dict() for r in refs if _proc.signal_ref(r, sig)]
        if not signalled:
            raise TargetNotFound(
                "every selected process exited before the signal",
                driver=self.name,
                target=record.target,
            )
        return record.with_data(signalled=signalled, killed_at=killed_at, before_count=before)

    def _suspend(self, ctx: DriverContext, record: RevertRecord, refs: list[ProcRef]) -> RevertRecord:
        record = start_lease(record)
        # The watchdog is armed before the first SIGSTOP: the lease holds from the start.
        watchdog = spawn_watchdog(ctx, record)
        record = record.with_data(watchdog=watchdog.to_dict())
        stopped = [r.to_dict() for r in refs if _proc.signal_ref(r, signal.SIGSTOP)]
        if not stopped:
            _proc.kill_watchdogs(record.fault_id)
            raise TargetNotFound(
                "every selected process exited before SIGSTOP",
                driver=self.name,
                target=record.target,
            )
        _proc.wait_state(refs, stopped=True, timeout_s=2.0)
        return record.with_data(signalled=stopped)

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        if record.operation == "suspend":
            resumed = 0
            refs = _refs(record)
            for ref in refs:
                proc = ref.process()
                if proc is not None and _proc.is_stopped(proc):
                    resumed += _proc.signal_ref(ref, signal.SIGCONT)
            _proc.wait_state(refs, stopped=False, timeout_s=2.0)
            _proc.kill_watchdogs(record.fault_id)
            return RevertResult(reverted=True, detail=f"resumed {resumed} process(es)")
        timeout = float(record.data.get("timeout_s", 30.0))
        deadline = time.monotonic() + timeout
        heal = self._heal(record)
        while not heal.healed and heal.possible and time.monotonic() < deadline:
            time.sleep(0.05)
            heal = self._heal(record)
        if not heal.possible:
            return RevertResult(reverted=True, detail=heal.detail)
        if not heal.healed:
            return RevertResult(reverted=False, detail=f"not healed within {timeout:g}s: {heal.detail}")
        killed_at = float(record.data.get("killed_at") or record.created_at)
        ttr = max(0.0, (heal.recovered_at or killed_at) - killed_at)
        return RevertResult(reverted=True, detail=heal.detail, time_to_recover_s=ttr)

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        """Each picked process: host + pid + start time (a recycled pid is another key)."""
        host = local_host()
        return tuple(f"proc:{host}:{r.pid}:{r.create_time:.2f}" for r in _refs(record)) or (
            f"{self.name}:{record.target}",
        )

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        residue: list[str] = []
        if record.operation == "suspend":
            for ref in _refs(record):
                proc = ref.process()
                if proc is not None and _proc.is_stopped(proc):
                    residue.append(f"pid {ref.pid} is still stopped")
            residue += [f"watchdog pid {p.pid} still running" for p in _wd(record.fault_id)]
            return CleanReport(clean=not residue, residue=tuple(residue))
        heal = self._heal(record)
        if heal.possible and not heal.healed:
            residue.append(f"{record.target} has not healed: {heal.detail}")
        return CleanReport(clean=not residue, residue=tuple(residue), detail=heal.detail)

    def _heal(self, record: RevertRecord) -> Heal:
        """Has the target of a kill healed? Read-only."""
        killed = {ProcRef.from_dict(r) for r in record.data.get("signalled", [])}
        killed_at = float(record.data.get("killed_at") or record.created_at)
        sel = _proc.parse_selector(record.target)
        dying = [r.pid for r in killed if r.alive()]
        if dying and time.time() - killed_at < SURVIVAL_GRACE_S:
            # A process handling SIGTERM may take a moment to exit: it has not "healed"
            # until it is either gone (and replaced) or has clearly survived the signal.
            return Heal(healed=False, detail=f"waiting for signalled pid(s) {dying} to exit")
        if sel.kind == "pid":
            if all(r.alive() for r in killed):
                return Heal(healed=True, recovered_at=killed_at, detail="the process survived")
            return Heal(
                healed=True,
                possible=False,
                detail="a killed pid target cannot be restarted; nothing to wait for",
            )
        if sel.kind in ("lab", "pidfile"):
            try:
                lab = record.data.get("lab_dir")
                live = _proc.matches(sel, Path(lab) if lab else None)
            except TargetNotFound as exc:
                return Heal(healed=False, detail=str(exc))
            if not live:
                return Heal(healed=False, detail=f"{sel} names no live process")
            start = _proc.started_at(live[0])
            return Heal(
                healed=True,
                recovered_at=max(start, killed_at),
                detail=f"{sel} is pid {live[0].pid}"
                + ("" if ProcRef.of(live[0]) in killed else " (a new process)"),
            )
        before = int(record.data.get("before_count") or len(killed))
        live = _proc.resolve(record.target, driver=self.name, refuse_protected=False)
        if len(live) < before:
            return Heal(healed=False, detail=f"{len(live)} of {before} processes match {sel}")
        starts = [_proc.started_at(p) for p in live]
        old = sum(1 for t in starts if t < killed_at)
        new_starts = sorted(t for t in starts if t >= killed_at)
        needed = before - old
        at = new_starts[needed - 1] if needed > 0 else killed_at
        return Heal(healed=True, recovered_at=at, detail=f"{len(live)} processes match {sel}")


def _refs(record: RevertRecord) -> list[ProcRef]:
    return [ProcRef.from_dict(p) for p in record.data.get("procs", []) if "create_time" in p]


def _wd(fault_id: str) -> list[psutil.Process]:
    return _proc.watchdog_processes(fault_id)
