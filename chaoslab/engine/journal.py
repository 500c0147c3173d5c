"""The event log and the journal: two consumers of the run's event stream.

``EventLog`` appends each event as one JSON line and flushes it at once, so a runner
killed with SIGKILL leaves everything up to the kill on disk. ``JournalBuilder`` keeps
what is needed to write ``journal.json`` at the end, in Chaos Toolkit's journal shape
(``status``, ``deviated``, ``steady_states``, ``run``, ``rollbacks``...), with chaoslab's
additions under the ``chaoslab`` key.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from chaoslab import __version__
from chaoslab.engine import events as ev
from chaoslab.engine.fold import fold_verdict
from chaoslab.model.experiment import Activity, Experiment
from chaoslab.units import finite_tree
from chaoslab.verdict import Verdict


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class EventLog:
    """Append-only NDJSON event log, flushed after every event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        line = json.dumps(event.to_dict(), default=repr)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                os.fsync(self._fh.fileno())
                self._fh.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read an event log, tolerating a torn last line (the runner may have been killed)."""
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


# Top-level keys of a Chaos Toolkit experiment that are carried over as written.
_CTK_PASSTHROUGH = ("version", "contributions", "configuration", "secrets", "extensions", "controls")
# Keys rendered from the compiled model instead (the rest goes under "chaoslab").
_CTK_RENDERED = ("title", "description", "tags", "steady-state-hypothesis", "method", "rollbacks", "runtime")


def ctk_activity(a: Activity) -> dict[str, Any]:
    """The activity in Chaos Toolkit's shape, with timeout and pauses as numbers of
    seconds (chaoslab also accepts "5s" there; Chaos Toolkit does not)."""
    out = dict(a.ctk)
    if a.timeout_s is not None:
        out["timeout"] = a.timeout_s
    pauses = dict(out.get("pauses") or {})
    for key, value in (("before", a.pause_before_s), ("after", a.pause_after_s)):
        if value is not None:
            pauses[key] = value
    if pauses:
        out["pauses"] = pauses
    return out


def ctk_experiment(exp: Experiment) -> dict[str, Any]:
    """The journal's ``experiment`` section: a valid Chaos Toolkit experiment for every
    experiment, whatever format it was written in. Activities are the compiled ones (refs
    to reusable probes/actions resolved, driver steps as python providers, see
    ``chaoslab.drivers.ctk``); what Chaos Toolkit has no place for (slo, load, windows,
    lab, runbook, guard, …) is kept as written under ``chaoslab``."""
    raw = exp.raw
    doc: dict[str, Any] = {
        "title": exp.title,
        "description": exp.description,
        "tags": list(exp.tags),
    }
    doc.update({k: raw[k] for k in _CTK_PASSTHROUGH if k in raw})
    if exp.hypothesis is not None:
        doc["steady-state-hypothesis"] = {
            "title": exp.hypothesis.title,
            "probes": [ctk_activity(p) for p in exp.hypothesis.probes],
        }
    doc["method"] = [ctk_activity(a) for a in exp.method]
    if exp.rollbacks:
        doc["rollbacks"] = [ctk_activity(a) for a in exp.rollbacks]
    rt = exp.runtime
    doc["runtime"] = {
        "hypothesis": {
            "strategy": rt.strategy.value,
            "frequency": rt.frequency_s,
            "fail_fast": rt.fail_fast,
        },
        "rollbacks": {"strategy": rt.rollback.value},
    }
    extra = {k: v for k, v in raw.items() if k not in _CTK_PASSTHROUGH and k not in _CTK_RENDERED}
    doc["chaoslab"] = {"source": exp.source, **extra}
    return doc


def _run_entry(e: ev.ActivityFinished) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "activity": dict(e.activity),
        "status": e.status if e.status in ("succeeded", "failed") else "failed",
        "output": ev.jsonable(e.output),
        "start": iso(e.start),
        "end": iso(e.end),
        "duration": round(e.end - e.start, 6),
    }
    if e.error:
        entry["exception"] = [e.error]
    if e.tolerance_met is not None:
        entry["tolerance_met"] = e.tolerance_met
    if e.status == "timed-out":
        entry["chaoslab"] = {"timed_out": True}
    elif e.status == "abandoned":
        entry["chaoslab"] = {"abandoned": True}
    entry.update(ev.jsonable(e.written))
    return entry


def run_entry(e: ev.ActivityFinished) -> dict[str, Any]:
    """The Chaos Toolkit journal entry of one finished activity (what an
    ``after_activity_control`` hook is given as ``state``)."""
    return _run_entry(e)


# Journal keys a control's after_experiment hook may not overwrite: the verdict owns them.
_VERDICT_KEYS = frozenset({"status", "deviated", "chaoslab"})


class JournalBuilder:
    """Collects the events needed for ``journal.json``."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.SLISeries):
            # kept: the per-second series feeds charts later
            pass
        with self._lock:
            self.events.append(event)

    def build(
        self, *, experiment: Mapping[str, Any], extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            events = list(self.events)
        started = next((e for e in events if isinstance(e, ev.RunStarted)), None)
        finished = next((e for e in events if isinstance(e, ev.RunFinished)), None)
        runs: list[dict[str, Any]] = []
        rollbacks: list[dict[str, Any]] = []
        steady: dict[str, Any] = {"before": None, "after": None, "during": []}
        probes: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if isinstance(e, ev.ActivityFinished):
                entry = _run_entry(e)
                if e.phase is ev.Phase.METHOD:
                    runs.append(entry)
                elif e.phase is ev.Phase.ROLLBACK:
                    rollbacks.append(entry)
                else:
                    probes.setdefault(str(e.phase), []).append(entry)
            elif isinstance(e, ev.HypothesisChecked):
                key = {"baseline": "before", "after": "after"}.get(str(e.phase))
                block = {"steady_state_met": e.met, "probes": probes.pop(str(e.phase), [])}
                block.update(ev.jsonable(e.written))
                if key:
                    steady[key] = block
                else:
                    steady["during"].append(block)
            elif isinstance(e, ev.ControlsWrote) and e.level in ("method", "rollback"):
                runs.sort(key=lambda r: r["start"])
                target = runs if e.level == "method" else rollbacks
                for index, values in e.values.items():
                    if index.isdigit() and int(index) < len(target) and isinstance(values, Mapping):
                        target[int(index)].update(ev.jsonable(values))
        runs.sort(key=lambda r: r["start"])  # Chaos Toolkit lists runs by start time
        top_written: dict[str, Any] = {}
        for e in events:
            if isinstance(e, ev.ControlsWrote) and e.level == "experiment":
                top_written.update({k: v for k, v in e.values.items() if k not in _VERDICT_KEYS})
        start = started.ts if started else 0.0
        end = finished.ts if finished else start
        # The one verdict: the fold of the events (for a run that ended, what it reported).
        v, reason = fold_verdict(events)
        verdict = v.value
        chaoslab: dict[str, Any] = {
            "version": __version__,
            "run_id": started.run_id if started else "",
            "verdict": verdict,
            "exit_code": int(v.exit_code),
            "reason": reason,
            "faults": [
                e.to_dict()
                for e in events
                if isinstance(e, ev.FaultInjected | ev.FaultReverted | ev.CleanChecked)
            ],
            "slo": [e.to_dict() for e in events if isinstance(e, ev.SLOEvaluated)],
            "series": [e.to_dict() for e in events if isinstance(e, ev.SLISeries)],
            "guard": [e.to_dict() for e in events if isinstance(e, ev.GuardTripped)],
            "guard_test": next((dict(e.test) for e in events if isinstance(e, ev.GuardArmed)), None),
            "guard_timing": guard_timing(events),
            "interruptions": [e.to_dict() for e in events if isinstance(e, ev.Interrupted)],
            "phases": [e.to_dict() for e in events if isinstance(e, ev.PhaseStarted | ev.PhaseFinished)],
            "controls_errors": [
                f"control {e.control}.{e.hook}: {e.error}" for e in events if isinstance(e, ev.ControlFailed)
            ],
            **(extra or {}),
        }
        doc = {
            "chaoslib-version": _ctk_version(),
            "platform": platform.platform(),
            "node": platform.node(),
            "experiment": dict(experiment),
            "start": iso(start),
            "end": iso(end),
            "duration": round(end - start, 6),
            "status": v.ctk_status,
            "deviated": v.name == "DEVIATED",
            "steady_states": steady,
            "run": runs,
            "rollbacks": rollbacks,
        }
        doc.update(ev.jsonable(top_written))
        doc["chaoslab"] = chaoslab
        return doc


def guard_timing(events: Sequence[ev.Event]) -> dict[str, Any] | None:
    """Onset → detect → clean, folded from the events (None: the run had no guard).

    Onset is the send time of the first bad request after the first fault; detection is
    the guard's trip (None when it did not trip); clean is the last ``clean-checked`` of
    a fault (every fault reverted and verified clean), if every check was clean."""
    stopped = next((e for e in events if isinstance(e, ev.GuardStopped)), None)
    if stopped is None:
        return None
    checks = [e for e in events if isinstance(e, ev.CleanChecked)]
    clean_ts = max((e.ts for e in checks), default=None) if checks and all(e.clean for e in checks) else None
    onset = stopped.onset_ts

    def since(ts: float | None) -> float | None:
        return None if ts is None or onset is None else max(0.0, ts - onset)

    return {
        "tripped": stopped.tripped,
        "reason": stopped.reason,
        "onset_ts": onset,
        "detected_ts": stopped.tripped_ts,
        "clean_ts": clean_ts,
        "time_to_detect_s": since(stopped.tripped_ts),
        "time_to_clean_s": since(clean_ts),
        "requests": stopped.requests,
        "bad": stopped.bad,
        "slow_s": stopped.slow_s,
        "decision": dict(stopped.decision),
    }


def _ctk_version() -> str | None:
    """chaostoolkit-lib's version, without importing ``importlib.metadata`` (~12 ms) when
    chaoslib was never imported by this run: its dist-info directory names it."""
    mod = sys.modules.get("chaoslib")
    if mod is not None:
        return str(getattr(mod, "__version__", None))
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("chaostoolkit_lib-") and name.endswith(".dist-info"):
                return name[len("chaostoolkit_lib-") : -len(".dist-info")]
    return None


def write_journal(path: Path, journal: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(finite_tree(journal), indent=2, default=repr, allow_nan=False), "utf-8")
    os.replace(tmp, path)


def journal_from_log(path: Path) -> dict[str, Any]:
    """``journal.json``'s content rebuilt from a run's ``events.ndjson`` alone: for a run
    that was killed before it wrote its journal. Its verdict is the fold of the events
    (``chaoslab.engine.fold.VerdictFold``): NOT CLEAN when a fault was never verified
    clean, interrupted otherwise."""
    types = ev.event_types()
    builder = JournalBuilder()
    started: ev.RunStarted | None = None
    for raw in read_events(path):
        event = ev.decode_event(raw, types)
        if event is None:
            continue
        if started is None and isinstance(event, ev.RunStarted):
            started = event
        builder(event)
    return builder.build(experiment=dict(started.experiment) if started else {})


def verdict_of_log(path: Path) -> tuple[Verdict, str]:
    """The verdict of a run from its ``events.ndjson`` (a torn last line is ignored)."""
    types = ev.event_types()
    return fold_verdict(e for raw in read_events(path) if (e := ev.decode_event(raw, types)) is not None)
