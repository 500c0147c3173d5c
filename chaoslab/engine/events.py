"""The typed, immutable events a run emits, and the bus that delivers them.

The journal, the console, metrics, reports and the guard are all consumers of this one
stream. Events are frozen msgspec Structs (a tenth of a dataclass's class-creation cost,
which every start-up pays); ``to_dict`` gives their JSON form for the NDJSON
event log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar

import msgspec

from chaoslab.masking import Masker
from chaoslab.verdict import Verdict


class Phase(StrEnum):
    PLAN = "plan"
    BASELINE = "baseline"
    METHOD = "method"
    DURING = "during"  # hypothesis checks while the method runs
    RECOVERY = "recovery"
    AFTER = "after"
    ROLLBACK = "rollback"
    REVERT = "revert"
    VERIFY = "verify-clean"
    VERDICT = "verdict"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    kind: ClassVar[str] = "event"
    run_id: str
    ts: float = msgspec.field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "run_id": self.run_id, "ts": self.ts}
        for name in self.__struct_fields__:
            data[name] = jsonable(getattr(self, name))
        return data


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


class RunStarted(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "run-started"
    title: str
    source: str
    pid: int
    experiment: Mapping[str, Any]


class PhaseStarted(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "phase-started"
    phase: Phase


class PhaseFinished(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "phase-finished"
    phase: Phase
    ok: bool
    detail: str = ""


class ActivityStarted(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "activity-started"
    phase: Phase
    name: str
    activity_type: str
    background: bool = False


class ActivityFinished(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "activity-finished"
    phase: Phase
    name: str
    activity_type: str
    # succeeded | failed | timed-out | skipped | abandoned (a background activity still
    # running when the run ended)
    status: str
    start: float
    end: float
    output: Any = None
    error: str | None = None
    tolerance_met: bool | None = None
    activity: Mapping[str, Any] = msgspec.field(default_factory=dict)
    # keys Chaos Toolkit controls added to or changed in this run's journal entry
    written: Mapping[str, Any] = msgspec.field(default_factory=dict)


class HypothesisChecked(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "hypothesis-checked"
    phase: Phase
    met: bool
    title: str = ""
    # keys Chaos Toolkit controls added to or changed in this steady-state block
    written: Mapping[str, Any] = msgspec.field(default_factory=dict)


class FaultInjected(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "fault-injected"
    fault_id: str
    driver: str
    operation: str
    target: str
    lease_s: float | None
    record: Mapping[str, Any]
    # every target the fault picked, by name (containers, pids, pods, hosts)
    picked: tuple[str, ...] = ()


class FaultReverted(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "fault-reverted"
    fault_id: str
    driver: str
    operation: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0
    time_to_recover_s: float | None = None


class CleanChecked(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "clean-checked"
    fault_id: str
    driver: str
    clean: bool
    residue: tuple[str, ...] = ()


class SLOEvaluated(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "slo-evaluated"
    window: str
    objective: str
    verdict: str  # pass | fail | inconclusive
    estimate: float | None
    lower: float | None
    upper: float | None
    samples: int
    detail: Mapping[str, Any] = msgspec.field(default_factory=dict)


class SLISeries(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "sli-series"
    source: str
    series: Mapping[str, Any]


class SLITick(Event, frozen=True, kw_only=True):
    """Live SLI values over the last second (console, event log)."""

    kind: ClassVar[str] = "sli-tick"
    source: str
    rate: float | None = None
    availability: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


class FaultNotApplied(Event, frozen=True, kw_only=True):
    """A fault that never reached its target (could not connect, refused): its ledger
    entry is closed as "not applied" with the reason."""

    kind: ClassVar[str] = "fault-not-applied"
    fault_id: str
    driver: str
    operation: str
    target: str
    reason: str


class LeaseLapsed(Event, frozen=True, kw_only=True):
    """A fault's lease ended it before the run reverted it (the run stopped renewing,
    or the lease ceiling passed): the method did not run under that fault throughout."""

    kind: ClassVar[str] = "lease-lapsed"
    fault_id: str
    driver: str
    operation: str
    target: str
    reason: str


class LockReclaimed(Event, frozen=True, kw_only=True):
    """A blast-radius lock left by a dead run was taken over."""

    kind: ClassVar[str] = "lock-reclaimed"
    key: str
    former_holder: str
    reason: str


class GuardTripped(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "guard-tripped"
    reason: str
    breach_ts: float


class GuardArmed(Event, frozen=True, kw_only=True):
    """The guard is watching: its sequential test, the risk and the extra brakes."""

    kind: ClassVar[str] = "guard-armed"
    test: Mapping[str, Any]


class GuardStopped(Event, frozen=True, kw_only=True):
    """The faults are over and the guard stopped watching: what it saw and decided.

    ``onset_ts`` is the send time of the first bad request after the first fault (None:
    none was bad); ``tripped_ts`` when the guard decided to brake. Time to clean is folded
    from the clean-checked events (``chaoslab.engine.journal.guard_timing``)."""

    kind: ClassVar[str] = "guard-stopped"
    tripped: bool
    reason: str | None = None
    onset_ts: float | None = None
    tripped_ts: float | None = None
    requests: int = 0
    bad: int = 0
    slow_s: float | None = None  # a request slower than this counted as bad
    decision: Mapping[str, Any] = msgspec.field(default_factory=dict)


class Interrupted(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "interrupted"
    signal: str
    during: str
    pending: tuple[str, ...] = ()


class ControlFailed(Event, frozen=True, kw_only=True):
    """A Chaos Toolkit control's hook raised; as in Chaos Toolkit the run carries on."""

    kind: ClassVar[str] = "control-failed"
    control: str
    hook: str
    error: str


class ControlsWrote(Event, frozen=True, kw_only=True):
    """What ``after_<level>_control`` hooks wrote into the state they were given: for
    ``experiment`` journal keys, for ``method``/``rollback`` per run index."""

    kind: ClassVar[str] = "controls-wrote"
    level: str
    values: Mapping[str, Any]


class VerdictNoted(Event, frozen=True, kw_only=True):
    """Something the run found that bears on its verdict (an SLO failed, a fault is not
    clean, the guard aborted…). The verdict is the fold of these over the stream
    (``chaoslab.engine.fold.fold_verdict``): the worst wins, its reasons are joined."""

    kind: ClassVar[str] = "verdict-noted"
    verdict: Verdict
    reason: str


class RunFinished(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "run-finished"
    verdict: Verdict
    exit_code: int
    reason: str
    duration_s: float


Consumer = Callable[[Event], None]


def event_types() -> dict[str, type[Event]]:
    """Every event class by its ``kind`` (computed on each call: no module-level registry)."""
    out: dict[str, type[Event]] = {}
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        out[cls.kind] = cls
        todo.extend(cls.__subclasses__())
    return out


def decode_event(raw: Mapping[str, Any], types: Mapping[str, type[Event]] | None = None) -> Event | None:
    """An event back from its JSON form (a line of ``events.ndjson``); None when the kind is
    unknown or the fields do not fit (an older or newer chaoslab wrote it)."""
    cls = (types or event_types()).get(str(raw.get("kind")))
    if cls is None or cls is Event:
        return None
    fields = {k: v for k, v in raw.items() if k != "kind"}
    try:
        return msgspec.convert(fields, type=cls, strict=False)
    except msgspec.ValidationError:
        return None


def _report_consumer_error(consumer: Consumer, exc: Exception) -> None:
    name = getattr(consumer, "__qualname__", None) or type(consumer).__qualname__
    try:
        sys.stderr.write(
            f"chaoslab: event consumer {name} failed ({type(exc).__name__}: {exc}); "
            "the run goes on without it\n"
        )
    except (OSError, ValueError):
        pass  # stderr closed: nowhere left to say it


class EventBus:
    """Delivers each event to every consumer, in order, from any thread.

    A consumer that raises is recorded in ``errors`` and reported on stderr the first
    time it fails (once per consumer), and otherwise ignored: a broken console must never
    stop a revert.

    Every event passes through ``masker`` before any consumer sees it: this is the one
    place secrets are masked for the journal, the event log, the console, metrics and
    reports (``chaoslab.masking``).
    """

    def __init__(self, masker: Masker | None = None) -> None:
        self.masker = masker if masker is not None else Masker()
        self._consumers: list[Consumer] = []
        self._lock = threading.RLock()
        self.errors: list[tuple[Consumer, BaseException]] = []

    def subscribe(self, consumer: Consumer) -> None:
        with self._lock:
            self._consumers.append(consumer)

    def emit(self, event: Event) -> None:
        event = self.masker.event(event)
        with self._lock:
            for consumer in self._consumers:
                try:
                    consumer(event)
                except Exception as exc:  # a consumer must never break the run
                    if not any(c is consumer for c, _ in self.errors):
                        _report_consumer_error(consumer, exc)
                    self.errors.append((consumer, exc))
