"""The life of a fault, written once: the base strategies drivers' faults are built on.

A driver says how to apply, undo and look for *its* change; this module says how the
record, the lease and the verdicts work, the same for every driver::

    class Suspend(LeasedFault[SuspendData]):       # one class per fault operation
        operation = "suspend"
        data_type = SuspendData                    # typed record data (a msgspec Struct)
        def plan(self, ctx, ask): ...              # resolve the target; touch nothing
        def apply(self, ctx, record, data): ...    # make the change; return enriched data
        def undo(self, ctx, record, data): ...     # remove it; idempotent
        def residue(self, ctx, record, data): ...  # what of it remains (read-only)
        def identities(self, record, data): ...    # lock keys: resolved identities

    class ProcessDriver(FaultDriver):
        faults = (Kill, Suspend)                   # the dispatch table

``FaultDriver`` implements the ``Driver`` contract (``prepare``/``inject``/``revert``/
``check_clean``/``identities``) by looking the record's operation up in that table:
no driver compares operation names by hand. ``heartbeat_ops`` is derived from it.

**Typed record data.** Each fault kind has a ``FaultData`` subclass. It is encoded into
``RevertRecord.data`` (plain JSON, what the ledger keeps) and decoded back from it
(``decode``/``encode``), so ``revert`` in another process (``recover``, the lease
watchdog) reads exactly what ``prepare`` resolved. It holds only absolute, resolved
identities: absolute paths, pid + start time, container id, pod uid -- never the
target's text to be resolved again. A record that does not decode is a ``DriverError``.

**LeasedFault** -- a change held until reverted or until its lease ends on the target:

    prepare: plan → record (lease from ``check_lease``)
    inject:  refuse (``refuse``) → start the lease (``start_lease``) → arm it (the watchdog) → apply
    revert:  undo → residue? → lease kept, reverted=False
                             → none: retire the lease (stop the watchdog), reverted=True
    check_clean: residue + an armed watchdog still waiting (``notes`` as its detail;
                 both from ``inspect``)

A lease is retired only after a verified revert: a failed revert (``undo`` raising
``DriverError``, or residue left) keeps the lease, so the watchdog still ends the fault.
If ``apply`` fails the fault is reverted the same way; if it raises
``DriverError(not_applied=True)`` nothing reached the target, so the lease is retired at
once and the engine closes the entry as "not applied".

**HealingFault** -- a kill-like fault with nothing to revert. Its "revert" waits, up to
the fault's timeout, for the system to heal (``heal``, read-only) and reports the time
to recover; its clean check is "healed". The verdicts, the same on every driver:

- healed: reverted, clean, ``time_to_recover_s`` from the fault to the recovery;
- nothing can ever heal it (a bare pid, a container without restart policy): reverted,
  clean, no time to recover, and the detail says "cannot heal" -- chaoslab left nothing
  of its own behind, and waiting would change nothing;
- could heal but did not within the timeout: not reverted, NOT clean (the residue says
  what is missing).

``not_applied(reason)`` builds the ``DriverError(not_applied=True)`` a fault raises when
it is certain nothing reached the target (every selected process exited first, the
object changed since it was planned...); ``refuse`` may raise it too, before the lease
is armed.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import psutil

from chaoslab.drivers import _proc
from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    RevertRecord,
    RevertResult,
)
from chaoslab.drivers.watchdog import check_lease, spawn_watchdog, start_lease, validated
from chaoslab.errors import DriverError

# --- typed record data ----------------------------------------------------------------------


class ProcId(msgspec.Struct, frozen=True, kw_only=True):
    """A local process by pid *and* start time: never matches a recycled pid."""

    pid: int
    create_time: float

    def ref(self) -> _proc.ProcRef:
        return _proc.ProcRef(pid=self.pid, create_time=self.create_time)

    @classmethod
    def of(cls, ref: _proc.ProcRef) -> ProcId:
        return cls(pid=ref.pid, create_time=ref.create_time)


class Proc(ProcId, frozen=True, kw_only=True):
    """A picked process: its identity, and its name and command line for people."""

    name: str = ""
    cmdline: tuple[str, ...] = ()

    @classmethod
    def describe(cls, proc: psutil.Process) -> Proc | None:
        """None when the process is already gone."""
        try:
            return cls(
                pid=proc.pid,
                create_time=proc.create_time(),
                name=proc.name(),
                cmdline=tuple(_proc.describe(proc).get("cmdline") or ()),
            )
        except psutil.Error:
            return None


class FaultData(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every fault kind's record data. ``dry``: planned, never injected."""

    dry: bool = False


class LeasedData(FaultData, frozen=True, kw_only=True):
    """Record data of a leased fault: the watchdog holding its lease, once armed."""

    watchdog: ProcId | None = None


class HealingData(FaultData, frozen=True, kw_only=True):
    """Record data of a healing fault: how long its revert waits for the system."""

    timeout_s: float


def encode(record: RevertRecord, data: FaultData) -> RevertRecord:
    """``record`` with ``data`` as its JSON ``data`` (replacing what was there): lists
    and dicts exactly as the ledger gives them back to another process."""
    plain: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(data))
    return msgspec.structs.replace(record, data=plain)


def decode[D: FaultData](record: RevertRecord, data_type: type[D]) -> D:
    """The typed data of ``record``; DriverError naming the field when it does not fit."""
    try:
        return msgspec.convert(dict(record.data), type=data_type)
    except msgspec.ValidationError as exc:
        raise DriverError(
            f"the record of fault {record.fault_id} ({record.operation}) cannot be read: {exc}",
            driver=record.driver,
            target=record.target,
        ) from exc


# --- what a fault is asked, what a heal check says ------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Ask:
    """What a run asks of one fault: ``args`` as written, ``full`` with defaults filled
    in (already checked), the target text, and the lease the engine gives it."""

    args: Mapping[str, Any]
    full: Mapping[str, Any]
    target: str | None
    lease_s: float | None
    fault_id: str = ""  # the id the fault's record will carry (tags derived from it)


@dataclass(frozen=True, kw_only=True)
class Heal:
    """Has the target of a healing fault healed? ``possible`` False: nothing ever will
    heal it. ``recovered_at``: Unix time of the recovery, when known."""

    healed: bool
    possible: bool = True
    recovered_at: float | None = None
    detail: str = ""

    @classmethod
    def all(cls, heals: Sequence[Heal], since: float) -> Heal:
        """Several targets of one fault: healed when all are; cannot heal when every one
        still pending cannot; recovered when the last one recovered."""
        pending = [h for h in heals if not h.healed]
        detail = "; ".join(h.detail for h in heals if h.detail)
        if not pending:
            at = max((h.recovered_at if h.recovered_at is not None else since for h in heals), default=since)
            return cls(healed=True, recovered_at=at, detail=detail)
        return cls(healed=False, possible=any(h.possible for h in pending), detail=detail)


def not_applied(
    reason: str, *, driver: str, target: str = "", error: type[DriverError] = DriverError
) -> DriverError:
    """The error ``apply`` raises when it is certain nothing reached the target
    (``error``: which ``DriverError``, e.g. ``TargetNotFound`` when the target vanished)."""
    return error(reason, driver=driver, target=target, not_applied=True)


# --- the strategies ---------------------------------------------------------------------------


class Fault[D: FaultData](ABC):
    """One fault operation of one driver. Stateless: everything lives in the record.

    Subclasses set ``operation`` (the name in the driver's ``operations()``) and
    ``data_type``, and fill in ``plan``, ``apply`` and ``identities``; ``LeasedFault``
    and ``HealingFault`` say the rest.
    """

    operation: ClassVar[str]
    data_type: type[D]
    lease_kind: ClassVar[LeaseKind]
    # The record's target when the experiment names none (host-level faults).
    default_target: ClassVar[str] = ""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    # -- what a driver fills in ------------------------------------------------------------

    @abstractmethod
    def plan(self, ctx: DriverContext, ask: Ask) -> D:
        """Resolve the target into absolute identities. No side effect on any target."""

    @abstractmethod
    def apply(self, ctx: DriverContext, record: RevertRecord, data: D) -> D:
        """Make the change; return the data enriched with what only inject learns.
        Raise ``not_applied(...)`` when certain nothing reached the target."""

    @abstractmethod
    def identities(self, record: RevertRecord, data: D) -> tuple[str, ...]:
        """Lock keys of what the fault really hits (``Driver.identities``). Pure."""

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: D) -> None:  # noqa: B027 - optional hook
        """Last check before anything happens (raise ``UnsafeTarget`` etc.). Default: none."""

    def recorded_args(self, ask: Ask, data: D) -> Mapping[str, Any]:
        """The args the record keeps: as written, except what ``plan`` resolved (a
        relative path made absolute), so the record read from another directory names
        the same thing. Default: as written."""
        return ask.args

    # -- the lifecycle ---------------------------------------------------------------------

    def decode(self, record: RevertRecord) -> D:
        return decode(record, self.data_type)

    def lease_for(self, ask: Ask) -> float | None:
        return None

    def prepare(self, ctx: DriverContext, ask: Ask) -> RevertRecord:
        record = RevertRecord(
            driver=self.driver.name,
            operation=self.operation,
            target=ask.target or self.default_target,
            run_id=ctx.run_id,
            args=dict(ask.args),
        )
        ask = dataclasses.replace(ask, fault_id=record.fault_id)
        data = self.plan(ctx, ask)
        lease = self.lease_for(ask)
        expires = None if lease is None else time.time() + lease
        args = dict(self.recorded_args(ask, data))
        return encode(
            msgspec.structs.replace(record, args=args, lease_s=lease, lease_expires_at=expires), data
        )

    @abstractmethod
    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord: ...

    @abstractmethod
    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult: ...

    @abstractmethod
    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport: ...


class LeasedFault[D: LeasedData](Fault[D]):
    """A change held until reverted or until its lease ends on the target.

    Fill in ``undo`` and ``residue`` besides ``plan``/``apply``/``identities``. The lease
    is the detached watchdog (``chaoslab.drivers.watchdog``) unless ``needs_watchdog``
    says the target ends the fault by itself; a lease kept elsewhere overrides the
    trio ``arm``/``retire``/``lease_residue`` (and ``start_lease`` when it counts its
    lease differently).
    """

    lease_kind = LeaseKind.TARGET
    # Renewed by the run's heartbeat (``drivers.lease``): the watchdog ends the fault
    # within LAPSE_S of the run's last beat. FaultDriver derives ``heartbeat_ops`` from it.
    heartbeat: ClassVar[bool] = True

    @abstractmethod
    def undo(self, ctx: DriverContext, record: RevertRecord, data: D) -> str:
        """Remove the change. Idempotent; never raises for a clean target. Returns a
        detail line; raises DriverError when it could not (the lease is then kept)."""

    @abstractmethod
    def residue(self, ctx: DriverContext, record: RevertRecord, data: D) -> list[str]:
        """What of the change is still on the target (the lease aside). Read-only."""

    def notes(self, ctx: DriverContext, record: RevertRecord, data: D) -> list[str]:
        """What a clean check should say without calling it residue (an address that
        changed...). Read-only. Default: nothing."""
        return []

    def inspect(self, ctx: DriverContext, record: RevertRecord, data: D) -> tuple[list[str], list[str]]:
        """(residue, notes) for a clean check. Default: ``residue`` then ``notes``; a
        fault that learns both from one look at its target says so once (a control plane
        that stops answering then costs one timeout per check, not two)."""
        return self.residue(ctx, record, data), self.notes(ctx, record, data)

    def needs_watchdog(self, record: RevertRecord, data: D) -> bool:
        """Whether the watchdog holds this fault's lease. Default: always."""
        return True

    def lease_for(self, ask: Ask) -> float | None:
        return check_lease(ask.lease_s)

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        data = self.decode(record)
        self.refuse(ctx, record, data)
        if ctx.dry:
            return encode(record, msgspec.structs.replace(data, dry=True))
        record = self.start_lease(record)  # the lease covers the whole time the fault is on
        # Armed before the change: the lease holds from the first moment.
        try:
            data = self.arm(ctx, record, data)
        except DriverError as exc:
            exc.not_applied = True  # no lease, so no change either: nothing reached the target
            raise
        record = encode(record, data)
        try:
            data = self.apply(ctx, record, data)
        except DriverError as exc:
            if exc.not_applied:
                self.retire(ctx, record, data)  # nothing reached the target: nothing to lease
            else:
                self.revert(ctx, record)  # half-applied: reverted like any other
            raise
        except BaseException:
            self.revert(ctx, record)
            raise
        return encode(record, data)

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        data = self.decode(record)
        if data.dry:
            return RevertResult(reverted=True, detail="dry run: nothing was injected")
        try:
            detail = self.undo(ctx, record, data)
            left = self.residue(ctx, record, data)
        except DriverError as exc:
            return RevertResult(reverted=False, detail=f"{exc} (lease kept)")
        if left:
            return RevertResult(
                reverted=False, detail=f"{detail}; still there: {'; '.join(left)} (lease kept)"
            )
        self.retire(ctx, record, data)  # only once the fault is verified gone
        return RevertResult(reverted=True, detail=detail)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        data = self.decode(record)
        if data.dry:
            return CleanReport(clean=True, detail="dry run: nothing was injected")
        left, notes = self.inspect(ctx, record, data)
        residue = left + self.lease_residue(record, data)
        return CleanReport(clean=not residue, residue=tuple(residue), detail="; ".join(notes))

    def start_lease(self, record: RevertRecord) -> RevertRecord:
        """The record with its lease counted from now, as inject begins. Default: the
        record's ``lease_s``, or the default lease when it has none; a lease kept by the
        target itself (a fault proxy) may count none when it sends none."""
        return start_lease(record)

    def arm(self, ctx: DriverContext, record: RevertRecord, data: D) -> D:
        """Start the lease on the target side, before the change: the watchdog, when
        ``needs_watchdog``. Returns the data with what identifies the lease."""
        if not self.needs_watchdog(record, data):
            return data
        return msgspec.structs.replace(data, watchdog=ProcId.of(spawn_watchdog(ctx, record)))

    def retire(self, ctx: DriverContext, record: RevertRecord, data: D) -> None:
        """End the lease: stop this fault's watchdog (never the calling process)."""
        _proc.kill_watchdogs(record.fault_id)

    def lease_residue(self, record: RevertRecord, data: D) -> list[str]:
        """A watchdog still waiting to act on the target later."""
        return [f"watchdog pid {p.pid} still running" for p in _proc.watchdog_processes(record.fault_id)]


class HealingFault[D: HealingData](Fault[D]):
    """A kill-like fault: nothing to revert; its "revert" waits for the system to heal.

    Fill in ``heal`` (read-only) and ``since`` besides ``plan``/``apply``/``identities``.
    """

    lease_kind = LeaseKind.NONE
    poll_s: ClassVar[float] = 0.05  # time to recover is precise to about this

    @abstractmethod
    def heal(self, ctx: DriverContext, record: RevertRecord, data: D) -> Heal:
        """Has the target healed? Read-only."""

    @abstractmethod
    def since(self, record: RevertRecord, data: D) -> float:
        """Unix time the fault hit (time to recover is counted from it)."""

    def time_to_recover(self, record: RevertRecord, data: D, heal: Heal, *, first_look: bool) -> float | None:
        """Seconds from the fault to the recovery ``heal`` reports (None: unknown)."""
        if heal.recovered_at is None:
            return None
        return max(0.0, heal.recovered_at - self.since(record, data))

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        data = self.decode(record)
        self.refuse(ctx, record, data)
        if ctx.dry:
            return encode(record, msgspec.structs.replace(data, dry=True))
        return encode(record, self.apply(ctx, record, data))

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        data = self.decode(record)
        if data.dry:
            return RevertResult(reverted=True, detail="dry run: nothing was injected")
        deadline = time.monotonic() + data.timeout_s
        first_look = True
        while True:
            heal = self.heal(ctx, record, data)
            if heal.healed or not heal.possible or time.monotonic() >= deadline:
                break
            first_look = False
            time.sleep(self.poll_s)
        if heal.healed:
            ttr = self.time_to_recover(record, data, heal, first_look=first_look)
            return RevertResult(reverted=True, detail=heal.detail, time_to_recover_s=ttr)
        if not heal.possible:
            # Nothing can bring it back and nothing of chaoslab's remains: done, with no
            # time to recover -- the same verdict on every driver.
            return RevertResult(reverted=True, detail=f"cannot heal, nothing to wait for: {heal.detail}")
        return RevertResult(reverted=False, detail=f"not healed within {data.timeout_s:g}s: {heal.detail}")

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        data = self.decode(record)
        if data.dry:
            return CleanReport(clean=True, detail="dry run: nothing was injected")
        heal = self.heal(ctx, record, data)
        if heal.healed or not heal.possible:
            return CleanReport(clean=True, detail=heal.detail)
        return CleanReport(clean=False, residue=(f"{record.target} has not healed: {heal.detail}",))


# --- the driver ---------------------------------------------------------------------------------


class FaultDriver(Driver):
    """A driver whose faults are ``Fault`` classes, dispatched on the record's operation.

    Set ``faults`` to the driver's fault classes; ``heartbeat_ops`` follows from them.
    """

    faults: ClassVar[tuple[type[Fault[Any]], ...]] = ()
    _table: ClassVar[Mapping[str, type[Fault[Any]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, type[Fault[Any]]] = {}
        for fault in cls.faults:
            if fault.operation in table:
                raise TypeError(f"{cls.__name__}: two fault classes for {fault.operation!r}")
            table[fault.operation] = fault
        cls._table = table
        cls.heartbeat_ops = frozenset(
            name for name, f in table.items() if issubclass(f, LeasedFault) and f.heartbeat
        )

    def fault(self, operation: str) -> Fault[Any]:
        """The fault class of ``operation``, bound to this driver; DriverError if none."""
        cls = self._table.get(operation)
        if cls is None:
            raise DriverError(f"has no fault {operation!r}", driver=self.name)
        return cls(self)

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        full = validated(self, op, args, target, Kind.FAULT)  # InvalidInput before anything
        fault = self.fault(op.name)
        return fault.prepare(ctx, Ask(args=args, full=full, target=target, lease_s=lease_s))

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        return self.fault(record.operation).inject(ctx, record)

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        return self.fault(record.operation).revert(ctx, record)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        return self.fault(record.operation).check_clean(ctx, record)

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        fault = self.fault(record.operation)
        return fault.identities(record, fault.decode(record)) or (f"{self.name}:{record.target}",)
