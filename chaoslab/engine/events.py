"""The typed, immutable events a run emits, and the bus that delivers them.

The journal, the console, metrics, reports and the guard are all consumers of this one
stream. Events are frozen dataclasses; ``to_dict`` gives their JSON form for the NDJSON
event log.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


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


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    run_id: str
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind}
        for f in dataclasses.fields(self):
            data[f.name] = jsonable(getattr(self, f.name))
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


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run-started"
    title: str
    source: str
    pid: int
    experiment: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class PhaseStarted(Event):
    kind: ClassVar[str] = "phase-started"
    phase: Phase


@dataclass(frozen=True, kw_only=True)
class PhaseFinished(Event):
    kind: ClassVar[str] = "phase-finished"
    phase: Phase
    ok: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ActivityStarted(Event):
    kind: ClassVar[str] = "activity-started"
    phase: Phase
    name: str
    activity_type: str
    background: bool = False


@dataclass(frozen=True, kw_only=True)
class ActivityFinished(Event):
    kind: ClassVar[str] = "activity-finished"
    phase: Phase
    name: str
    activity_type: str
    status: str  # succeeded | failed | timed-out | skipped
    start: float
    end: float
    output: Any = None
    error: str | None = None
    tolerance_met: bool | None = None
    activity: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HypothesisChecked(Event):
    kind: ClassVar[str] = "hypothesis-checked"
    phase: Phase
    met: bool
    title: str = ""


@dataclass(frozen=True, kw_only=True)
class FaultInjected(Event):
    kind: ClassVar[str] = "fault-injected"
    fault_id: str
    driver: str
    operation: str
    target: str
    lease_s: float | None
    record: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class FaultReverted(Event):
    kind: ClassVar[str] = "fault-reverted"
    fault_id: str
    driver: str
    operation: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0
    time_to_recover_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class CleanChecked(Event):
    kind: ClassVar[str] = "clean-checked"
    fault_id: str
    driver: str
    clean: bool
    residue: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SLOEvaluated(Event):
    kind: ClassVar[str] = "slo-evaluated"
    window: str
    objective: str
    verdict: str  # pass | fail | inconclusive
    estimate: float | None
    lower: float | None
    upper: float | None
    samples: int
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SLISeries(Event):
    kind: ClassVar[str] = "sli-series"
    source: str
    series: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class SLITick(Event):
    """Live SLI values over the last second (console, event log)."""

    kind: ClassVar[str] = "sli-tick"
    source: str
    rate: float | None = None
    availability: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class GuardTripped(Event):
    kind: ClassVar[str] = "guard-tripped"
    reason: str
    breach_ts: float


@dataclass(frozen=True, kw_only=True)
class Interrupted(Event):
    kind: ClassVar[str] = "interrupted"
    signal: str
    during: str
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run-finished"
    verdict: str
    exit_code: int
    reason: str
    duration_s: float


Consumer = Callable[[Event], None]


class EventBus:
    """Delivers each event to every consumer, in order, from any thread.

    A consumer that raises is reported once on stderr-facing ``errors`` and otherwise
    ignored: a broken console must never stop a revert.
    """

    def __init__(self) -> None:
        self._consumers: list[Consumer] = []
        self._lock = threading.RLock()
        self.errors: list[tuple[Consumer, BaseException]] = []

    def subscribe(self, consumer: Consumer) -> None:
        with self._lock:
            self._consumers.append(consumer)

    def emit(self, event: Event) -> None:
        with self._lock:
            for consumer in self._consumers:
                try:
                    consumer(event)
                except Exception as exc:  # a consumer must never break the run
                    self.errors.append((consumer, exc))
