"""What the scheduler tests share: a controllable clock, a trivial scenario, a scheduler.

A support module (the ``store`` fixture is in ``tests/unit/conftest.py``), so the
scheduler test modules never import each other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
from chaoslab.scheduler.scenario import Scenario, load_scenario
from chaoslab.scheduler.store import SlotRecord, SQLStore
from tests.statepaths import env_state

# Monday 2025-01-13 10:00 UTC.
MONDAY_10 = datetime(2025, 1, 13, 10, 0, tzinfo=UTC)


class FakeClock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


TRIVIAL = {
    "title": "trivial",
    "description": "a process probe",
    "steady-state-hypothesis": {
        "title": "true exits 0",
        "probes": [{"type": "probe", "name": "ok", "tolerance": 0, "provider": {"type": "process", "path": "true"}}],
    },
    "method": [{"type": "action", "name": "nap", "provider": {"type": "process", "path": "sleep",
                                                              "arguments": "${nap}"}}],
    "configuration": {"nap": "0"},
}  # fmt: skip


def write_scenario(tmp_path: Path, body: str, *, nap: str = "0", name: str = "s.yaml") -> Scenario:
    exp = dict(TRIVIAL, configuration={"nap": nap})
    (tmp_path / "trivial.json").write_text(json.dumps(exp))
    path = tmp_path / name
    path.write_text(body)
    return load_scenario(path)


def make(
    scenarios: list[Scenario], store: SQLStore, clock: FakeClock, tmp_path: Path, **kw: Any
) -> Scheduler:
    gates = kw.pop("gates_for", None)
    kw.setdefault("home", env_state().home)  # the test's CHAOSLAB_HOME, as the CLI passes it
    config = SchedulerConfig(runs_root=tmp_path / "runs", **kw)
    return Scheduler(scenarios, store, config, clock=clock, gates_for=gates)


def rows(store: SQLStore, name: str) -> list[SlotRecord]:
    return store.all_slots(name)
