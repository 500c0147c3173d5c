"""The driver contract. A driver is an adapter the core never imports directly.

A driver is registered under the entry-point group ``chaoslab.drivers`` and offers named
operations. Each operation is either a **probe** (reads the target, returns a value) or a
**fault** (changes the target until reverted or until its lease ends).

Faults are stateless on the runner's side: everything needed to revert and to check a
fault lives in its ``RevertRecord``, a JSON-serialisable value. That is what lets
``chaoslab recover`` revert a fault from another process after the runner died.

The life of a fault, driven by the engine (``chaoslab.engine.faults``)::

    record = driver.prepare(ctx, op, args, target, lease_s)   # resolves, touches nothing
    record.keys = driver.identities(record)                   # what it really hits
    ledger.claim(record)          # locks those keys; refuses another run's open entry on them
    ledger.open_entry(record)                                 # durable, before any change
    record = driver.inject(ctx, record)      # arms the lease, applies; may enrich record
    ...                                      # the run renews record.heartbeat each second
    driver.revert(ctx, record)                                # idempotent
    driver.check_clean(ctx, record)                           # verifies on the target
    retire the lease (heartbeat file) and close the entry     # only once verified clean

A fault ``inject`` could not apply at all raises ``DriverError(not_applied=True)``: its
entry is closed as "not applied" with the reason, never left open as NOT-CLEAN.

How a driver writes its faults: not by implementing ``prepare``/``inject``/``revert``/
``check_clean`` by hand, but as one class per fault operation on the base strategies of
``chaoslab.drivers.lifecycle`` -- ``LeasedFault`` (a change held until reverted or until
its lease ends: fill in plan, apply, undo, residue, identities) or ``HealingFault`` (a
kill: fill in plan, apply, heal, since, identities) -- each with a typed record
(a ``FaultData`` msgspec Struct encoded into ``RevertRecord.data``), listed in the
driver's ``faults`` table of a ``FaultDriver``, which implements this contract by
dispatching on ``record.operation``. The skeleton owns the lease, the retire-after-a-
verified-revert rule, "not applied" and the healing verdicts, the same for every driver.
Operations in ``Driver.heartbeat_ops`` have leases that end within
``chaoslab.drivers.lease.LAPSE_S`` of the run's last heartbeat.

Invariants every driver keeps:

- ``prepare`` has no side effect on any target and raises ``InvalidInput`` or
  ``TargetNotFound``/``UnsafeTarget`` before anything is injected.
- ``inject`` starts the lease on the target's side (watchdog process, timer inside the
  proxy, ``timeout`` on a remote host, a stressor that exits by itself) *before* or
  atomically with the change, so the fault ends even if the runner is SIGKILLed.
- ``revert`` is idempotent, never raises for an already-clean target, and works from a
  new process given only the record.
- ``check_clean`` never changes the target; it reports any residue it finds.
- Third-party errors are translated: ``raise DriverError(...) from exc``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import DriverError, Problem
from chaoslab.units import parse_duration as parse_duration  # re-exported for drivers

RECORD_VERSION = 1


class Kind(StrEnum):
    PROBE = "probe"
    FAULT = "fault"


class LeaseKind(StrEnum):
    TARGET = "target"  # the target ends the fault by itself when the lease expires
    NONE = "none"  # nothing to end (a killed process): revert waits for the system to heal


class Param(msgspec.Struct, frozen=True, kw_only=True):
    """One argument of an operation. ``type`` is checked before anything runs."""

    name: str
    type: type | tuple[type, ...]
    help: str
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    duration: bool = False  # accepts "500ms", "10s", "2m" and numbers of seconds


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: Kind
    summary: str
    params: tuple[Param, ...] = ()
    lease: LeaseKind = LeaseKind.TARGET
    needs_target: bool = True

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


class DriverContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a driver may know about the run calling it. Never module-level state."""

    run_id: str
    state_dir: Path
    # Where the lab's state file is, for ``lab:NAME`` targets (chaoslab.drivers.targets);
    # the run passes its own (``StatePaths.lab``).
    lab_dir: Path
    seed: int = 0
    dry: bool = False
    log: Callable[[str], None] = lambda _msg: None


class RevertRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to revert and check one fault, from any process.

    ``data`` must be JSON-serialisable. ``lease_expires_at`` is a Unix time, or None
    for faults with no lease (``LeaseKind.NONE``).
    """

    driver: str
    operation: str
    target: str
    fault_id: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex[:12])
    run_id: str = ""
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    data: Mapping[str, Any] = msgspec.field(default_factory=dict)
    lease_s: float | None = None
    lease_expires_at: float | None = None
    created_at: float = msgspec.field(default_factory=time.time)
    version: int = RECORD_VERSION
    # What the fault really hits, resolved (container id, host + pid + start time, pod
    # uid, a host resource): locks and the open-ledger check key on these, never on
    # ``target``'s text. Stamped by the engine from ``Driver.identities``.
    keys: tuple[str, ...] = ()
    # Absolute path of the file the runner renews while it lives (``drivers.lease``);
    # empty: the lease ends only at ``lease_expires_at``.
    heartbeat: str = ""

    def with_data(self, **data: Any) -> RevertRecord:
        return msgspec.structs.replace(self, data={**self.data, **data})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "driver": self.driver,
            "operation": self.operation,
            "target": self.target,
            "fault_id": self.fault_id,
            "run_id": self.run_id,
            "args": dict(self.args),
            "data": dict(self.data),
            "lease_s": self.lease_s,
            "lease_expires_at": self.lease_expires_at,
            "created_at": self.created_at,
            "keys": list(self.keys),
            "heartbeat": self.heartbeat,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RevertRecord:
        return cls(
            version=int(raw.get("version", RECORD_VERSION)),
            driver=str(raw["driver"]),
            operation=str(raw["operation"]),
            target=str(raw["target"]),
            fault_id=str(raw["fault_id"]),
            run_id=str(raw.get("run_id", "")),
            args=dict(raw.get("args") or {}),
            data=dict(raw.get("data") or {}),
            lease_s=raw.get("lease_s"),
            lease_expires_at=raw.get("lease_expires_at"),
            created_at=float(raw.get("created_at", 0.0)),
            keys=tuple(str(k) for k in (raw.get("keys") or ())),
            heartbeat=str(raw.get("heartbeat") or ""),
        )

    def identity_keys(self) -> tuple[str, ...]:
        """The resolved identities this fault hits; a record written before keys existed
        falls back to its driver and target text."""
        return self.keys or (f"{self.driver}:{self.target}",)


class CleanReport(msgspec.Struct, frozen=True, kw_only=True):
    clean: bool
    residue: tuple[str, ...] = ()
    detail: str = ""


class RevertResult(msgspec.Struct, frozen=True, kw_only=True):
    reverted: bool
    detail: str = ""
    time_to_recover_s: float | None = None  # for LeaseKind.NONE faults: time to heal


class Driver(ABC):
    """A plugin offering probes and faults on one kind of target."""

    name: str = ""
    summary: str = ""
    install_hint: str = ""  # e.g. "pip install 'chaoslab[docker]'"
    # Fault operations whose lease reads ``RevertRecord.heartbeat`` (``drivers.lease``):
    # the engine renews those while the run lives instead of fixing a lease length.
    heartbeat_ops: frozenset[str] = frozenset()

    @abstractmethod
    def operations(self) -> Sequence[Operation]:
        """All operations this driver offers. Pure: no I/O."""

    def operation(self, name: str) -> Operation | None:
        return next((op for op in self.operations() if op.name == name), None)

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        """Driver-specific checks beyond parameter types. Pure: no I/O. Default: none."""
        return []

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        """Run a probe operation and return its value."""
        raise DriverError(f"has no probe {op.name!r}", driver=self.name)

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        """Resolve the target and build the revert record. Touches nothing."""
        raise DriverError(f"has no fault {op.name!r}", driver=self.name)

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        """Apply the fault described by ``record``; return it, possibly enriched."""
        raise DriverError(f"has no fault {record.operation!r} to inject", driver=self.name)

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        """Undo the fault. Idempotent; never raises for an already-clean target."""
        raise DriverError(f"has no fault {record.operation!r} to revert", driver=self.name)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        """Verify on the target that nothing of the fault remains. Read-only."""
        raise DriverError(f"has no fault {record.operation!r} to check", driver=self.name)

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        """The resolved identities ``record``'s fault hits, as lock keys. Pure: no I/O.

        Two faults conflict when their keys intersect, however their targets were
        written (``name:`` or ``label:``, a variable or its value). A key names the
        thing itself: ``docker:<container id>``, ``proc:<host>:<pid>:<start time>``,
        ``k8s:pod:<uid>``, ``host:<host>:cpu``... Default: the driver and the target
        text, for drivers whose target text is already the identity.
        """
        return (f"{self.name}:{record.target}",)

    def renew(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        """One heartbeat for a fault whose lease lives on a remote target (an SSH host, a
        proxy server): tell the target the run is alive. Called by the run every
        ``lease.HEARTBEAT_S`` for faults of ``heartbeat_ops``, after the local heartbeat
        file is renewed. Returns why the target already ended the fault (its lease
        lapsed), or None. Must not block for long and must not raise for a missed beat
        (the next beat, or the target's lease, takes over). Default: nothing to renew,
        the heartbeat file is the lease."""
        return None

    def end_run(self, ctx: DriverContext) -> None:  # noqa: B027 - optional hook, a no-op by default
        """The run is over: release what was kept for it (connections...). Never raises
        for a driver that kept nothing. Default: nothing."""


# --- argument helpers shared by drivers and the engine ---------------------------------

MAX_LEASE_S = 24 * 3600.0


def check_args(op: Operation, args: Mapping[str, Any], path: str = "") -> list[Problem]:
    """Type-check ``args`` against ``op.params``; returns every problem found."""
    problems: list[Problem] = []
    known = {p.name for p in op.params}
    for name in args:
        if name not in known:
            problems.append(
                Problem(
                    path=f"{path}.{name}" if path else name,
                    message=f"unknown argument {name!r} for {op.name}",
                    hint=f"known: {', '.join(sorted(known)) or 'none'}",
                )
            )
    for p in op.params:
        where = f"{path}.{p.name}" if path else p.name
        if p.name not in args:
            if p.required:
                problems.append(Problem(path=where, message=f"missing required argument {p.name!r}"))
            continue
        value = args[p.name]
        if p.duration:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                problems.append(Problem(path=where, message=str(exc)))
                continue
            if seconds > MAX_LEASE_S:
                problems.append(Problem(path=where, message=f"absurd duration {value!r} (> 24h)"))
            continue
        if isinstance(value, bool) and bool not in _as_tuple(p.type):
            problems.append(Problem(path=where, message=f"expected {_type_name(p.type)}, got bool"))
            continue
        if not isinstance(value, p.type):
            problems.append(
                Problem(
                    path=where,
                    message=f"expected {_type_name(p.type)}, got {type(value).__name__} {value!r}",
                )
            )
            continue
        if p.choices and value not in p.choices:
            problems.append(
                Problem(path=where, message=f"{value!r} is not one of {', '.join(map(str, p.choices))}")
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            if p.minimum is not None and value < p.minimum:
                problems.append(Problem(path=where, message=f"{value} is below the minimum {p.minimum}"))
            if p.maximum is not None and value > p.maximum:
                problems.append(Problem(path=where, message=f"{value} is above the maximum {p.maximum}"))
    return problems


def with_defaults(op: Operation, args: Mapping[str, Any]) -> dict[str, Any]:
    merged = {p.name: p.default for p in op.params if p.default is not None}
    merged.update(args)
    return merged


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in _as_tuple(t))


def local_host() -> str:
    """This machine's name in identity keys (the name ``Owner`` records use too)."""
    return os.uname().nodename


def runner_pids() -> frozenset[int]:
    """PIDs a fault must never target: this process, its parent, and PID 1."""
    return frozenset({1, os.getpid(), os.getppid()})
