"""What each page of the control room shows, computed from chaoslab's own files and code.

Every function here returns plain data (dicts, lists, dataclasses) for the templates and
the JSON endpoints; none renders HTML. They reuse what the CLI uses: the ledger's
``scan``, ``locks.holders``, ``halt.is_halted``/``active_runs``, the scheduler's
``Scheduler.upcoming`` and store history, ``sli.budget.budget_status``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaoslab import paths
from chaoslab.masking import Masker
from chaoslab.serve.runs import EVENTS, EventTail, RunIndex, RunSummary

# Verdicts in the order of their exit codes, for the history filter.
VERDICTS = (
    "passed",
    "deviated",
    "invalid-input",
    "aborted",
    "inconclusive",
    "error",
    "not-clean",
    "interrupted",
)


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Where the control room reads from (given on the command line)."""

    home: Path
    run_roots: tuple[Path, ...]
    scenarios: tuple[Path, ...] = ()
    store_url: str | None = None
    slo_files: tuple[Path, ...] = ()
    prometheus_url: str | None = None


def live_run_ids(home: Path) -> frozenset[str]:
    """Run ids of registered runs whose process is alive (``chaoslab.safety.halt``)."""
    from chaoslab.errors import LedgerError
    from chaoslab.safety.halt import active_runs
    from chaoslab.safety.owner import Life

    try:
        regs = active_runs(home)
    except LedgerError:
        return frozenset()
    return frozenset(r.run_id for r in regs if r.owner.liveness().life is not Life.DEAD)


def run_live_state(summary: RunSummary) -> dict[str, Any]:
    """Phase, guard state, active faults and the last SLI values of one run, folded
    from its event log."""
    phase = ""
    guard = "not armed"
    faults: dict[str, dict[str, Any]] = {}
    last_tick: dict[str, Any] | None = None
    for e in EventTail(summary.directory / EVENTS).read(limit=64 << 20):
        kind = e.get("kind")
        if kind == "phase-started":
            phase = str(e.get("phase", ""))
        elif kind == "guard-armed":
            guard = "armed"
        elif kind == "guard-tripped":
            guard = f"tripped: {e.get('reason', '')}"
        elif kind == "guard-stopped" and not guard.startswith("tripped"):
            guard = "stopped (did not trip)" if not e.get("tripped") else f"tripped: {e.get('reason', '')}"
        elif kind == "fault-injected":
            faults[str(e.get("fault_id"))] = {
                "fault_id": e.get("fault_id"),
                "what": f"{e.get('driver')}.{e.get('operation')}",
                "target": e.get("target"),
                "since": iso(e.get("ts")),
                "lease_s": e.get("lease_s"),
            }
        elif kind == "fault-reverted":
            faults.pop(str(e.get("fault_id")), None)
        elif kind == "sli-tick":
            last_tick = e
    return {"phase": phase, "guard": guard, "faults": list(faults.values()), "sli": last_tick}


def now(sources: Sources, index: RunIndex, masker: Masker) -> dict[str, Any]:
    """The Now page: halt state, runs in progress, open ledger entries, locks."""
    from chaoslab.errors import LedgerError
    from chaoslab.safety.halt import is_halted
    from chaoslab.safety.ledger import Ledger
    from chaoslab.safety.locks import holders, locks_dir

    halted = is_halted(sources.home)
    live = live_run_ids(sources.home)
    running = []
    for s in index.runs():
        if s.state(live) != "running":
            continue
        running.append({"run": summary_dict(s, live), **run_live_state(s)})
    ledger_entries: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        scan = Ledger(paths.ledger_dir(sources.home), masker=masker).scan()
        for entry in scan.entries:
            r = entry.record
            ledger_entries.append(
                {
                    "fault_id": r.fault_id,
                    "run_id": r.run_id,
                    "what": f"{r.driver}.{r.operation}",
                    "target": r.target,
                    "opened": iso(entry.opened_at),
                    "lease_expires": iso(r.lease_expires_at) if r.lease_expires_at else "no lease",
                    "lease_left_s": None
                    if r.lease_expires_at is None
                    else round(max(0.0, r.lease_expires_at - time.time()), 1),
                    "owner": entry.owner.describe(),
                }
            )
        problems += [str(p) for p in scan.problems]
    except LedgerError as exc:
        problems.append(str(exc))
    locks: list[dict[str, Any]] = []
    try:
        for h in holders(locks_dir(sources.home)):
            if isinstance(h, str):
                problems.append(h)
            else:
                locks.append({"target": h.target, "holder": h.holder(), "expires": iso(h.lease_expires_at)})
    except LedgerError as exc:
        problems.append(str(exc))
    out = {
        "halted": None if halted is None else {"describe": halted.describe(), "by": halted.by},
        "running": running,
        "ledger": ledger_entries,
        "locks": locks,
        "problems": problems,
        "generated": iso(time.time()),
    }
    result: dict[str, Any] = masker.deep(out)
    return result


def summary_dict(s: RunSummary, live: frozenset[str]) -> dict[str, Any]:
    return {
        "run_id": s.run_id,
        "title": s.title,
        "tags": list(s.tags),
        "started": iso(s.started),
        "state": s.state(live),
        "verdict": s.verdict or s.state(live),
        "exit_code": s.exit_code,
        "reason": s.reason,
        "duration": f"{s.duration_s:.1f}s" if s.duration_s is not None else "",
        "has_journal": s.has_journal,
    }


def history(
    index: RunIndex,
    home: Path,
    *,
    experiment: str = "",
    tag: str = "",
    verdict: str = "",
    page: int = 1,
    per_page: int = 100,
) -> dict[str, Any]:
    """Runs, newest first, filtered by experiment title (substring), tag and verdict."""
    live = live_run_ids(home)
    runs = index.runs()
    titles = sorted({s.title for s in runs})
    tags = sorted({t for s in runs for t in s.tags})
    exp = experiment.lower()
    chosen = [
        s
        for s in runs
        if (not exp or exp in s.title.lower())
        and (not tag or tag in s.tags)
        and (not verdict or (s.verdict or s.state(live)) == verdict)
    ]
    pages = max(1, (len(chosen) + per_page - 1) // per_page)
    page = min(max(1, page), pages)
    shown = chosen[(page - 1) * per_page : page * per_page]
    return {
        "runs": [summary_dict(s, live) for s in shown],
        "total": len(runs),
        "matched": len(chosen),
        "page": page,
        "pages": pages,
        "titles": titles,
        "tags": tags,
        "verdicts": [*VERDICTS, "running", "unfinished"],
        "filters": {"experiment": experiment, "tag": tag, "verdict": verdict},
    }


def gates(roots: Sequence[Path], limit: int = 200) -> list[dict[str, Any]]:
    """Gate results (``gate.json`` written by ``chaoslab gate``) under the run roots,
    oldest first, with their scores (the trend)."""
    found: list[dict[str, Any]] = []
    for root in roots:
        for path in _gate_files(root):
            try:
                raw = json.loads(path.read_text("utf-8"))
                st = path.stat()
            except (OSError, ValueError):
                continue
            if not isinstance(raw, dict):
                continue
            score = raw.get("score")
            found.append(
                {
                    "suite": str(raw.get("suite", "")),
                    "result": str(raw.get("result", "")),
                    "score": float(score) if isinstance(score, int | float) else None,
                    "class": str(raw.get("class", "")),
                    "when": iso(st.st_mtime),
                    "ts": st.st_mtime,
                    "path": str(path),
                }
            )
    found.sort(key=lambda g: g["ts"])
    return found[-limit:]


def _gate_files(root: Path, depth: int = 3) -> list[Path]:
    out: list[Path] = []
    stack = [(root, 0)]
    while stack and len(out) < 10_000:
        d, level = stack.pop()
        if (d / "gate.json").is_file():
            out.append(d / "gate.json")
        if level >= depth:
            continue
        try:
            stack.extend((p, level + 1) for p in d.iterdir() if p.is_dir() and not (p / EVENTS).exists())
        except OSError:
            continue
    return out


def calendar(sources: Sources, count: int = 5) -> dict[str, Any]:
    """Next slots of every scenario, windows and blackouts, and recent misfires."""
    from chaoslab.errors import InvalidInput
    from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
    from chaoslab.scheduler.scenario import load_scenarios
    from chaoslab.scheduler.store import SlotStatus, StoreError, open_store

    files = [p for p in sources.scenarios if p.exists()]
    out: dict[str, Any] = {"scenarios": [], "upcoming": [], "misfires": [], "problems": []}
    if not files:
        out["problems"].append("no scenario files (give --scenarios)")
        return out
    try:
        loaded = load_scenarios(files)
    except InvalidInput as exc:
        out["problems"] += [str(p) for p in exc.problems]
        return out
    for sc in loaded:
        out["scenarios"].append(
            {
                "name": sc.name,
                "kind": sc.kind,
                "trigger": sc.trigger.describe(),
                "timezone": sc.tz.key,
                "windows": [w.describe() for w in sc.calendar.windows] or ["any time"],
                "blackouts": [b.describe() for b in sc.calendar.blackouts],
                "misfire": sc.misfire.policy,
            }
        )
    sched = Scheduler(loaded, open_store(":memory:"), SchedulerConfig(runs_root=Path("."), home=sources.home))
    try:
        for u in sched.upcoming(datetime.now(UTC), count):
            out["upcoming"].append(
                {
                    "scenario": u.scenario,
                    "run_at": u.run_at.strftime("%Y-%m-%d %H:%M:%SZ"),
                    "refusal": u.refusal or "",
                    "dst": u.dst or "",
                }
            )
    finally:
        sched.store.close()
    try:
        store = open_store(sources.store_url or paths_default_store(sources.home))
    except StoreError as exc:
        out["problems"].append(str(exc))
        return out
    try:
        rows = store.history([sc.name for sc in loaded], 500)
    except StoreError as exc:
        out["problems"].append(str(exc))
        rows = []
    finally:
        store.close()
    wanted = {SlotStatus.MISSED.value, SlotStatus.SKIPPED.value, SlotStatus.INTERRUPTED.value}
    out["misfires"] = [
        {"scenario": r.scenario, "slot": r.slot, "status": r.status, "detail": r.detail}
        for r in rows
        if r.status in wanted
    ][:100]
    return out


def paths_default_store(home: Path) -> str:
    from chaoslab.scheduler.store import default_url

    return default_url(home)


@dataclass
class BudgetCache:
    """Budgets from Prometheus, recomputed at most every ``ttl_s`` (a page load must not
    wait for a dozen range queries each time)."""

    sources: Sources
    ttl_s: float = 15.0
    _at: float = 0.0
    _value: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value and time.monotonic() - self._at < self.ttl_s:
                return self._value
            self._value = budgets(self.sources)
            self._at = time.monotonic()
            return self._value


def budgets(sources: Sources) -> dict[str, Any]:
    """Per SLO: budget left and burn rates (what ``chaoslab slo status`` prints)."""
    from chaoslab.errors import InvalidInput, SLIError
    from chaoslab.model.openslo import load_slo_files
    from chaoslab.sli.budget import budget_status
    from chaoslab.sli.prometheus import PrometheusClient, PrometheusSLI

    out: dict[str, Any] = {"slos": [], "problems": [], "evaluated": iso(time.time())}
    if not sources.slo_files:
        out["problems"].append("no SLO files (give --slo FILE)")
        return out
    try:
        slos = load_slo_files(sources.slo_files)
    except InvalidInput as exc:
        out["problems"] += [str(p) for p in exc.problems]
        return out
    for definition in slos:
        target = sources.prometheus_url or definition.prometheus_url
        if not target:
            out["problems"].append(f"{definition.name}: no Prometheus URL (give --prometheus)")
            continue
        try:
            with PrometheusClient(target) as client:
                st = budget_status(PrometheusSLI(client, definition), None)
        except SLIError as exc:
            out["problems"].append(f"{definition.name}: {exc}")
            continue
        d = st.to_dict()
        remaining = d["budget_remaining"]
        out["slos"].append(
            {
                "slo": d["slo"],
                "target": d["target"],
                "window": d["window"],
                "sli": d["sli"],
                "remaining": remaining,
                "remaining_pct": None if remaining is None else round(100 * remaining, 2),
                "exhausted": d["exhausted"],
                "burn": [
                    {"window": k, "rate": None if v is None else round(v, 3)} for k, v in d["burn"].items()
                ],
                "firing": d["firing"],
            }
        )
    return out


def now_halted(home: Path) -> str | None:
    """The halt in force, described, for the banner on every page."""
    from chaoslab.safety.halt import is_halted

    state = is_halted(home)
    return None if state is None else state.describe()
