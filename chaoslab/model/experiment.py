"""The experiment model every loader compiles to. Frozen, keyword-only, typed.

Both Chaos Toolkit activities and chaoslab's concise driver activities compile to
``Activity``. ``ctk`` keeps the Chaos Toolkit-shaped dict of the activity: it is what
chaostoolkit-lib executes for provider activities and what the journal records for all.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec

from chaoslab.model.sections import (
    SLO,
    GuardSection,
    LoadSpec,
    RollbackStrategy,
    Runbook,
    SLOFiles,
    Strategy,
)

__all__ = ["RollbackStrategy", "Strategy"]  # defined in sections, imported from here too


class ActivityKind(StrEnum):
    PROVIDER = "provider"  # python / process / http, executed by chaostoolkit-lib
    DRIVER = "driver"  # a chaoslab driver operation


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str  # "probe" | "action"
    kind: ActivityKind
    ctk: Mapping[str, Any]
    path: str  # field path in the source file, e.g. "method[2]"
    driver: str | None = None
    operation: str | None = None
    target: str | None = None
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    duration_s: float | None = None  # how long a driver fault is held
    timeout_s: float | None = None
    pause_before_s: float | None = None
    pause_after_s: float | None = None
    background: bool = False
    tolerance: Any = None
    has_tolerance: bool = False

    @property
    def is_fault(self) -> bool:
        return self.kind is ActivityKind.DRIVER and self.type == "action"


class ProbeSLI(msgspec.Struct, frozen=True, kw_only=True):
    """A probe sampled at an interval as an SLI: a sample is good when the probe succeeds
    within its tolerance. Objectives name it with ``source: <name>``."""

    name: str
    interval_s: float
    probe: Activity


class Hypothesis(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    probes: tuple[Activity, ...]


class Runtime(msgspec.Struct, frozen=True, kw_only=True):
    strategy: Strategy = Strategy.DEFAULT
    frequency_s: float = 1.0
    fail_fast: bool = False
    rollback: RollbackStrategy = RollbackStrategy.ALWAYS
    activity_timeout_s: float = 60.0
    timeout_s: float | None = None  # the whole run's deadline
    baseline_s: float = 0.0  # observation before the method (SLI baseline window)
    recovery_s: float = 0.0  # observation time after reverts, before the "after" window
    after_s: float = 0.0  # observation after recovery (SLI "after" window)
    lease_s: float = 300.0  # default lease of a fault with no duration


class Experiment(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    description: str
    source: str
    tags: tuple[str, ...] = ()
    configuration: Mapping[str, Any] = msgspec.field(default_factory=dict)
    secrets: Mapping[str, Any] = msgspec.field(default_factory=dict)
    hypothesis: Hypothesis | None = None
    method: tuple[Activity, ...] = ()
    rollbacks: tuple[Activity, ...] = ()
    controls: tuple[Mapping[str, Any], ...] = ()
    runtime: Runtime = msgspec.field(default_factory=Runtime)
    needs_lab: bool = False
    load: LoadSpec | None = None
    slo: tuple[SLO, ...] = ()
    sli_probes: tuple[ProbeSLI, ...] = ()
    runbook: Runbook | None = None
    guard: GuardSection | None = None
    slo_files: SLOFiles | None = None
    raw: Mapping[str, Any] = msgspec.field(default_factory=dict)
    # advice that does not stop a run (a legacy ``driver.operation`` spelling)
    warnings: tuple[str, ...] = ()

    def all_activities(self) -> tuple[Activity, ...]:
        probes = self.hypothesis.probes if self.hypothesis else ()
        return probes + self.method + self.rollbacks

    def faults(self) -> tuple[Activity, ...]:
        return tuple(a for a in self.method if a.is_fault)
