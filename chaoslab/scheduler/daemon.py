"""The scheduler: a tick loop that decides, claims, runs and records every slot.

One tick, at ``clock.now()``:

1. heartbeat; adopt the active claims of schedulers that are provably dead (same host,
   process gone) or silent past the lease (another host); stop our runs that a newer
   slot of a ``replace`` scenario took over;
2. pop every scenario whose next slot is due (``run_at <= now``; a heap keyed on run_at,
   so a tick costs O(due · log n), not O(n));
3. decide each due slot, in slot order: in a blackout or outside the windows → skipped;
   on time (late ≤ ``on_time_s``) → run; late → the misfire policy (``skip`` → missed,
   ``run-once`` → run if late ≤ grace). At most one slot of a scenario starts per tick:
   when several are due at once (a catch-up), the latest runs and the others are
   recorded missed, "coalesced into" it — a catch-up is never a burst;
4. a slot to run meets the scenario's concurrency policy (``forbid``: skipped "busy"
   while another slot of it is claimed or running, by any scheduler — checked and
   claimed in one transaction; ``allow``; ``replace``: the running slot is stopped, it
   reverts, then the new one runs), the monkey's ``min_gap`` (counted from the previous
   kill's actual start), and ``max_parallel`` (no free worker: it waits while the misfire
   policy would still run it, then is recorded skipped "over max-parallel";
   ``run_once`` records it at once, as it has no later tick);
5. every decision is a row written with ``INSERT … ON CONFLICT DO NOTHING`` on the
   store's unique (scenario, slot) key: only the scheduler whose insert wrote the row
   acts on it; a won "run" goes to a worker thread: gates (refused → recorded,
   ``abort`` notice), then each step as a ``chaoslab run`` subprocess, results recorded
   under the claim's token.

So nothing due is dropped without a row saying why: skipped (outside the windows, a
blackout, busy, over max-parallel, min_gap), missed (the misfire policy, coalesced),
refused (a gate), or a run's outcome.

Start-up: a scenario with history resumes right after its latest recorded slot (what
fell due while no scheduler ran is decided by the misfire policy, and coalesced as
above). A scenario without history starts with its latest slot that the misfire policy
would still run (on time, or within ``run-once``'s grace), if any: the slots before it
predate the scenario and are not owed (a fresh store does not start every slot of the
last minute).

Failure semantics:

- SIGTERM (``stop()``): no new claims; running steps get SIGTERM (the engine reverts
  and writes its journal); their slots are recorded ``interrupted``; the scheduler's
  registration is removed. Nothing is left claimed.
- SIGKILL: the runs it started live on in their own sessions and finish by themselves.
  The next scheduler to notice (another one, or this one restarted) adopts each claim:
  it waits for the orphaned run, reads its outcome from the run directory and records
  it. A step that left no outcome (it died too) has its faults reverted by
  ``chaoslab.safety.recover`` — that run's ledger entries even when they were written on
  another host (a dead pod): its scheduler is dead by the lease, and the run died with
  it — and runs again if the slot is still within grace; otherwise the slot is recorded
  ``interrupted``. A slot is never claimed twice and never left without a record.

Why hand-written rather than APScheduler 4 (considered: it has cron/interval triggers,
PostgreSQL data stores shared by several schedulers, ``misfire_grace_time``, coalescing
and ``max_running_jobs``). What this job needs and APScheduler lacks:

- a history row for every slot, including the ones that do not run and why (skipped by
  a window, a blackout, busy, over max-parallel; missed; refused by a gate): APScheduler
  emits events for missed runs and keeps job results only until they expire;
- slots identified by (scenario, nominal time) so that a slot runs at most once across
  daemons, restarts and short-lived external runs (``schedule run --once`` from cron, a
  CronJob pod) that share nothing but the table and keep no schedule state of their
  own; APScheduler's jobs are identified by random UUIDs and its schedules advance
  inside its data store, so a process that only looks at "what is due now" has no key
  to claim;
- deterministic jitter (a hash of the slot), which such a process can recompute;
  APScheduler draws its jitter at random;
- allowed windows and blackouts in the scenario's time zone, the monkey's kill schedule
  (random but reproducible, ``min_gap``), and documented DST rules for cron (see
  ``triggers``);
- ``replace``: stop the running slot, let it revert, then start (APScheduler only limits
  how many run);
- adopting a dead scheduler's run, which lives on in its own session: wait for it, read
  its outcome from its run directory, or recover its faults from the ledger and run the
  step again;
- a synchronous, dependency-light core for a CLI whose start-up time is benchmarked;
  APScheduler 4 is anyio-based and still a pre-release whose README says not to use it
  in production.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from chaoslab import paths
from chaoslab.scheduler.checks import Check, CheckContext, first_refusal
from chaoslab.scheduler.monkey import kill_experiment, leashed_line, pick_victim
from chaoslab.scheduler.notify import Notice, Notifier
from chaoslab.scheduler.runs import StepPlan, StepResult, overall, read_result, run_step, step_dir
from chaoslab.scheduler.scenario import Scenario
from chaoslab.scheduler.store import Claim, SlotRecord, SlotStatus, Store, StoreError, Update
from chaoslab.scheduler.triggers import CronTrigger, human, parse_slot_key, run_at, slot_key
from chaoslab.verdict import Verdict

log = logging.getLogger("chaoslab.scheduler")

_ABORT_VERDICTS = frozenset({Verdict.ABORTED, Verdict.INTERRUPTED, Verdict.NOT_CLEAN, Verdict.ERROR})
_CHILD_POLL_S = 0.2
_FRESH_SCAN_LIMIT = 100_000  # slots walked to find a new scenario's latest on-time slot


class Clock(Protocol):
    """Where the scheduler reads the time (tests inject a controllable one)."""

    def now(self) -> datetime:
        """An aware datetime."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Knobs of one scheduler process.

    ``on_time_s``: a slot found at most this late is on time (not a misfire).
    ``lease_s``: a scheduler on another host whose heartbeat is older is presumed dead.
    ``stop_grace_s``: after SIGTERM, how long a run gets to revert before SIGKILL.
    ``home``: chaoslab's home (``StatePaths.home``), given by the CLI; the runs' children
    get it as their ``CHAOSLAB_HOME``.
    """

    runs_root: Path
    max_parallel: int = 4
    on_time_s: float = 60.0
    lease_s: float = 60.0
    stop_grace_s: float = 60.0
    adopt_every_s: float = 2.0
    max_catchup: int = 10_000
    home: Path  # chaoslab's home: ledger, locks, halt for the checks and recover; the runs' too


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a tick decided for one slot. ``run`` slots are claimed, the rest recorded."""

    scenario: str
    slot: datetime
    run_at: datetime
    status: SlotStatus  # CLAIMED means "run it"
    detail: str = ""
    late_s: float = 0.0

    @property
    def run(self) -> bool:
        return self.status is SlotStatus.CLAIMED


@dataclass(frozen=True, kw_only=True)
class Upcoming:
    scenario: str
    slot: datetime
    run_at: datetime
    refusal: str | None
    dst: str | None = None  # how a DST change touched this slot (cron in a time zone)


class _SlotStop:
    """A running slot's stop flag: set when the scheduler stops, or when a newer slot of a
    ``replace`` scenario takes over (``replaced_by``)."""

    def __init__(self, scheduler_stop: threading.Event) -> None:
        self._scheduler = scheduler_stop
        self._own = threading.Event()
        self.replaced_by: str | None = None

    def replace(self, slot: str) -> None:
        if self.replaced_by is None:
            self.replaced_by = slot
        self._own.set()

    def is_set(self) -> bool:
        return self._scheduler.is_set() or self._own.is_set()


GatesFor = Callable[[Scenario], Sequence[Check]]


def scheduler_owner_dict() -> dict[str, object]:
    from chaoslab.safety.owner import Owner

    return dict(Owner.current("scheduler").to_dict())


class Scheduler:
    """Schedules ``scenarios`` against ``store``. Thread-safe ``stop()``; one tick at a time."""

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        store: Store,
        config: SchedulerConfig,
        *,
        clock: Clock | None = None,
        scheduler_id: str | None = None,
        gates_for: GatesFor | None = None,
        notifier_env: Mapping[str, str] | None = None,
    ) -> None:
        self.scenarios = {s.name: s for s in scenarios}
        self.store = store
        self.config = config
        self.clock = clock or SystemClock()
        self.id = scheduler_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._gates_for: GatesFor = gates_for or (lambda sc: sc.gates())
        self._notifier_env = notifier_env
        self._heap: list[tuple[datetime, str, datetime]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], Future[None]] = {}
        self._slot_stops: dict[tuple[str, str], _SlotStop] = {}
        # Due slots waiting for a free worker, and since when (recorded "over max-parallel"
        # once the misfire policy would no longer run them).
        self._starved: dict[tuple[str, datetime], datetime] = {}
        # When each monkey's latest kill (or leashed would-be kill) started: min_gap counts from it.
        self._last_start: dict[str, datetime] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.max_parallel), thread_name_prefix="slot")
        self._started = False
        self._last_heartbeat = 0.0
        self._last_adopt = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Register with the store and plan each scenario's next slot."""
        if self._started:
            return
        self.store.register(self.id, scheduler_owner_dict(), time.time())
        self._last_heartbeat = time.time()
        self._plan(self.clock.now())
        self._started = True
        log.info(
            "scheduler %s: %d scenario(s), store %s", self.id, len(self.scenarios), _safe_url(self.store.url)
        )

    def _plan(self, now: datetime) -> None:
        last = self.store.last_slots()
        self._heap = []
        for name, sc in self.scenarios.items():
            recorded = last.get(name)
            if recorded:
                # With history: resume right after the latest recorded slot.
                cursor = parse_slot_key(recorded)
                if sc.monkey is not None:
                    prev = self.store.last_started(name)
                    if prev is not None:
                        self._last_start[name] = datetime.fromtimestamp(prev.claimed_at, UTC)
            else:
                cursor = self._fresh_cursor(sc, now)
            nxt = sc.trigger.next_after(cursor)
            if nxt is not None:
                self._heap.append((run_at(name, nxt, sc.jitter_s), name, nxt))
        heapq.heapify(self._heap)

    def _fresh_cursor(self, sc: Scenario, now: datetime) -> datetime:
        """Where a scenario without history starts: just before its latest slot that the
        misfire policy would still run (within the on-time tolerance, or ``run-once``'s
        grace: a CronJob pod started late on a fresh store); the earlier ones predate the
        scenario and are not owed."""
        lookback = self.config.on_time_s
        if sc.misfire.policy == "run-once":
            lookback = max(lookback, sc.misfire.grace_s)
        before = now - timedelta(seconds=lookback)
        slot = sc.trigger.next_after(before)
        for _ in range(_FRESH_SCAN_LIMIT):
            if slot is None or slot > now:
                break
            nxt = sc.trigger.next_after(slot)
            if nxt is None or nxt > now:
                break  # ``slot`` is the latest slot ≤ now: start with it
            before, slot = slot, nxt
        return before

    def stop(self) -> None:
        """Ask for a graceful stop (signal-safe: only sets an event)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait for every running slot to end; True if none is left."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                futures = list(self._inflight.values())
            if not futures:
                return True
            for f in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    f.result(timeout=remaining)
                except TimeoutError:
                    return False
                except Exception:  # logged by the worker itself
                    pass

    def close(self) -> None:
        """Finish: wait for running slots (they were told to stop, if ``stop()`` was called),
        then leave the store."""
        self.wait_idle()
        self._pool.shutdown(wait=True)
        if self._started:
            try:
                self.store.unregister(self.id)
            except StoreError as exc:
                log.warning("could not unregister scheduler %s: %s", self.id, exc)

    def run_forever(self, tick_s: float = 1.0) -> None:
        """Tick until ``stop()``; then let running slots revert and end, and leave."""
        self.start()
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except StoreError as exc:
                    # A store outage: claim nothing (we cannot know what others did); retry.
                    log.error("tick failed, retrying: %s", exc)
                self._stop.wait(tick_s)
        finally:
            self._stop.set()
            self.close()

    def run_once(self, *, wait_jitter: bool = True) -> list[Decision]:
        """One pass for an external cron: adopt orphans, decide what is due now, wait
        for jittered slots whose nominal time has come, run, wait for the runs, leave.
        There is no later tick: a due slot with no free worker is recorded skipped
        ("over max-parallel") at once."""
        self.start()
        decisions: list[Decision] = []
        try:
            self._adopt_stale(force=True)
            decisions += self.tick(final=True)
            if wait_jitter:
                now = self.clock.now()
                pending = [ra for ra, _, slot in self._heap if slot <= now < ra]
                if pending:
                    self._stop.wait((max(pending) - now).total_seconds())
                    if not self._stop.is_set():
                        decisions += self.tick(final=True)
            self.wait_idle()
        finally:
            self.close()
        return decisions

    # --- one tick ----------------------------------------------------------------------

    def tick(self, *, final: bool = False) -> list[Decision]:
        """Decide and record every due slot; start the runs. Returns the decisions made.

        ``final``: no tick follows (``run_once``), so a slot with no free worker is
        recorded "over max-parallel" now instead of waiting for one."""
        if not self._started:
            self.start()
        now = self.clock.now()
        real = time.time()
        if real - self._last_heartbeat >= min(5.0, self.config.lease_s / 3):
            self.store.heartbeat(self.id, real)
            self._last_heartbeat = real
        self._adopt_stale()
        made: list[Decision] = []
        deferred: list[tuple[datetime, str, datetime]] = []
        batch: list[SlotRecord] = []
        seen: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            _, name, first = entry
            if name in seen:  # caught up max_catchup slots this tick: the rest next tick
                deferred.append(entry)
                continue
            seen.add(name)
            sc = self.scenarios[name]
            due = [first]
            nxt = sc.trigger.next_after(first)
            while (
                nxt is not None
                and run_at(name, nxt, sc.jitter_s) <= now
                and len(due) < self.config.max_catchup
            ):
                due.append(nxt)
                nxt = sc.trigger.next_after(nxt)
            blocked_at: datetime | None = None
            for d in self.decide(sc, due, now):
                if self._stop.is_set():
                    blocked_at = d.slot  # leave it (and what follows) to the next scheduler
                    break
                key = (name, d.slot)
                if d.run and not self._has_capacity() and not self._locally_busy(sc):
                    if not final:
                        self._starved.setdefault(key, now)
                        blocked_at = d.slot  # wait for a worker while it may still run
                        break
                    d = self._over_max_parallel(d, now, now)
                elif key in self._starved:
                    since = self._starved.pop(key)
                    if not d.run:  # it waited for a worker until the misfire policy gave up
                        d = self._over_max_parallel(d, since, now)
                self._apply(sc, d, batch, now)
                made.append(d)
            if blocked_at is not None:
                deferred.append((run_at(name, blocked_at, sc.jitter_s), name, blocked_at))
            elif nxt is not None:
                heapq.heappush(self._heap, (run_at(name, nxt, sc.jitter_s), name, nxt))
        for entry in deferred:
            heapq.heappush(self._heap, entry)
        self._record(batch)
        return made

    def _record(self, batch: list[SlotRecord]) -> None:
        """Write a tick's terminal decisions in one transaction."""
        for rec, wrote in zip(batch, self.store.insert_many(batch), strict=True):
            if wrote:  # else another scheduler decided this slot first
                log.info(
                    "%s %s: %s%s",
                    rec.scenario,
                    rec.slot,
                    rec.status,
                    f" ({rec.detail})" if rec.detail else "",
                )

    def decide(self, sc: Scenario, slots: Sequence[datetime], now: datetime) -> list[Decision]:
        """Pure: what to do with each of ``slots`` (all due, in order) at ``now``."""
        out: list[Decision] = []
        for slot in slots:
            ra = run_at(sc.name, slot, sc.jitter_s)
            late = (now - ra).total_seconds()
            refusal = sc.calendar.refusal(ra)
            if refusal is not None:
                out.append(
                    Decision(
                        scenario=sc.name,
                        slot=slot,
                        run_at=ra,
                        status=SlotStatus.SKIPPED,
                        detail=refusal,
                        late_s=late,
                    )
                )
            elif late <= self.config.on_time_s:
                out.append(
                    Decision(scenario=sc.name, slot=slot, run_at=ra, status=SlotStatus.CLAIMED, late_s=late)
                )
            elif sc.misfire.policy == "run-once" and late <= sc.misfire.grace_s:
                out.append(
                    Decision(
                        scenario=sc.name,
                        slot=slot,
                        run_at=ra,
                        status=SlotStatus.CLAIMED,
                        detail=f"late by {late:.0f}s, within the {sc.misfire.grace_s:g}s grace",
                        late_s=late,
                    )
                )
            else:
                why = (
                    f"late by {late:.0f}s; misfire policy skip"
                    if sc.misfire.policy == "skip"
                    else f"late by {late:.0f}s, beyond the {sc.misfire.grace_s:g}s grace"
                )
                out.append(
                    Decision(
                        scenario=sc.name,
                        slot=slot,
                        run_at=ra,
                        status=SlotStatus.MISSED,
                        detail=why,
                        late_s=late,
                    )
                )
        # At most one start per scenario per decision: due slots that would run coalesce
        # into the latest one (a catch-up after an outage or a slow tick is one run, not
        # a burst; a monkey keeps its min_gap).
        runs = [i for i, d in enumerate(out) if d.run]
        for i in runs[:-1]:
            d = out[i]
            out[i] = Decision(
                scenario=d.scenario,
                slot=d.slot,
                run_at=d.run_at,
                status=SlotStatus.MISSED,
                late_s=d.late_s,
                detail=f"late by {d.late_s:.0f}s; coalesced into slot {slot_key(out[runs[-1]].slot)}",
            )
        return out

    def _has_capacity(self) -> bool:
        with self._lock:
            return len(self._inflight) < self.config.max_parallel

    def _locally_busy(self, sc: Scenario) -> bool:
        """A ``forbid`` scenario with a run of ours in flight: its due slot is recorded
        "busy" (by ``claim_exclusive``), whether or not a worker is free."""
        if sc.concurrency != "forbid":
            return False
        with self._lock:
            return any(name == sc.name for name, _ in self._inflight)

    def _over_max_parallel(self, d: Decision, since: datetime, now: datetime) -> Decision:
        waited = (now - since).total_seconds()
        why = f"over max-parallel: all {self.config.max_parallel} workers busy"
        why += f" for {waited:.0f}s" if waited > 0 else ""
        if d.detail and not d.run:
            why += f"; {d.detail}"
        return Decision(
            scenario=d.scenario,
            slot=d.slot,
            run_at=d.run_at,
            status=SlotStatus.SKIPPED,
            detail=why,
            late_s=d.late_s,
        )

    def _apply(self, sc: Scenario, d: Decision, batch: list[SlotRecord], now: datetime) -> None:
        """Record a decision: terminal ones go to ``batch``; a run is claimed now (under
        the scenario's concurrency policy and, for a monkey, its min_gap)."""
        now_ts = now.timestamp()
        status, detail = d.status, d.detail
        victim = None
        if d.run and sc.monkey is not None:
            last = self._last_start.get(sc.name)
            gap = sc.monkey.min_gap_s
            if last is not None and (now - last).total_seconds() < gap:
                status = SlotStatus.SKIPPED
                detail = (
                    f"min_gap: the previous kill started {(now - last).total_seconds():.0f}s ago"
                    f" ({slot_key(last)}), less than min_gap {human(gap)}"
                )
            else:
                victim = pick_victim(sc.monkey, sc.name, d.slot)
                if victim is None:
                    status, detail = SlotStatus.SKIPPED, "no target is opted in"
                elif sc.monkey.leashed:
                    status, detail = SlotStatus.LEASHED, leashed_line(sc.monkey, victim)
                    self._last_start[sc.name] = now
        rec = SlotRecord(
            scenario=sc.name,
            slot=slot_key(d.slot),
            run_at=slot_key(d.run_at),
            kind=sc.kind,
            status=status.value,
            scheduler=self.id,
            token=uuid.uuid4().hex,
            claimed_at=now_ts,
            updated_at=now_ts,
            finished_at=None if status is SlotStatus.CLAIMED else now_ts,
            run_dir=str(self.slot_root(sc.name, d.slot)) if status is SlotStatus.CLAIMED else None,
            detail=detail,
        )
        if status is not SlotStatus.CLAIMED:
            batch.append(rec)
            return
        if sc.concurrency == "forbid":
            outcome, holder = self.store.claim_exclusive(
                rec, lambda h: f"busy: slot {h} of this scenario is still running (concurrency: forbid)"
            )
            won = outcome is Claim.WON
            if outcome is Claim.BUSY:
                log.info(
                    "%s %s: skipped, slot %s still runs (concurrency: forbid)", sc.name, rec.slot, holder
                )
        else:
            won = self.store.insert(rec)  # else another scheduler claimed this slot first
        if not won:
            return
        if sc.monkey is not None:
            self._last_start[sc.name] = now
        if sc.concurrency == "replace":
            self._replace_older(sc.name, rec.slot)
        self._submit(sc, rec, resume=False)

    def _replace_older(self, scenario: str, slot: str) -> None:
        """Stop our runs of ``scenario`` older than ``slot`` (they revert and are recorded
        interrupted, "replaced by")."""
        with self._lock:
            older = [stop for (name, s), stop in self._slot_stops.items() if name == scenario and s < slot]
        for stop in older:
            stop.replace(slot)

    def _submit(self, sc: Scenario, rec: SlotRecord, *, resume: bool) -> None:
        key = (rec.scenario, rec.slot)
        stop = _SlotStop(self._stop)
        with self._lock:
            self._slot_stops[key] = stop
            future = self._pool.submit(self._work, sc, rec, resume, stop)
            self._inflight[key] = future

        def done(_: Future[None]) -> None:
            with self._lock:
                self._inflight.pop(key, None)
                self._slot_stops.pop(key, None)

        future.add_done_callback(done)

    # --- running a slot ----------------------------------------------------------------

    def slot_root(self, scenario: str, slot: datetime) -> Path:
        return self.config.runs_root / scenario / slot_key(slot).replace("-", "").replace(":", "")

    def steps_for(self, sc: Scenario, slot: datetime, root: Path) -> list[StepPlan]:
        """The runs of a slot. A monkey slot writes its one-step kill experiment first."""
        if sc.monkey is not None:
            victim = pick_victim(sc.monkey, sc.name, slot)
            if victim is None:
                return []
            root.mkdir(parents=True, exist_ok=True)
            path = root / "monkey-kill.json"
            if not path.exists():
                path.write_text(json.dumps(kill_experiment(sc.monkey, sc.name, victim, slot), indent=2))
            return [StepPlan(name="monkey-kill", experiment=path, vars={}, continue_on=frozenset())]
        return [
            StepPlan(
                name=s.name,
                experiment=s.experiment,
                vars=s.vars,
                continue_on=s.continue_on,
                timeout_s=s.timeout_s,
            )
            for s in sc.steps
        ]

    def _work(self, sc: Scenario, rec: SlotRecord, resume: bool, stop: _SlotStop) -> None:
        try:
            if resume:
                self._resume(sc, rec, stop)
            else:
                self._execute(sc, rec, [], 0, stop)
        except Exception:
            log.exception("slot %s %s failed in the scheduler", rec.scenario, rec.slot)
            try:
                self.store.update(
                    rec.scenario,
                    rec.slot,
                    rec.token,
                    Update(
                        status=SlotStatus.INTERRUPTED.value,
                        detail="the scheduler failed while running it; see its log",
                        finished_at=time.time(),
                    ),
                )
            except StoreError:
                pass

    def _wait_for_older(self, sc: Scenario, rec: SlotRecord, stop: _SlotStop) -> str | None:
        """``replace``: wait until no older slot of the scenario is active (they were told
        to stop and revert); why not, if they did not end in time."""
        deadline = time.monotonic() + self.config.stop_grace_s + self.config.lease_s + 30.0
        while True:
            older = [r.slot for r in self.store.active() if r.scenario == sc.name and r.slot < rec.slot]
            if not older:
                return None
            if stop.is_set():
                return f"stopped while waiting for slot {older[0]} to end"
            if time.monotonic() > deadline:
                return f"replace: slot {older[0]} did not end in time; not run"
            time.sleep(_CHILD_POLL_S)

    def _execute(
        self, sc: Scenario, rec: SlotRecord, done: list[StepResult], start: int, stop: _SlotStop
    ) -> None:
        slot = parse_slot_key(rec.slot)
        root = Path(rec.run_dir or self.slot_root(sc.name, slot))
        steps = self.steps_for(sc, slot, root)
        notifier = Notifier(targets=sc.notify, env=self._notifier_env)
        if start == 0 and sc.concurrency == "replace":
            why = self._wait_for_older(sc, rec, stop)
            if why is not None:
                status = SlotStatus.INTERRUPTED if stop.is_set() else SlotStatus.SKIPPED
                self.store.update(
                    rec.scenario,
                    rec.slot,
                    rec.token,
                    Update(status=status.value, detail=why, finished_at=time.time()),
                )
                return
        if start == 0:
            targets = sc.lock_targets()
            if sc.monkey is not None:
                victim = pick_victim(sc.monkey, sc.name, slot)
                targets = (victim,) if victim else ()
            ctx = CheckContext(
                scenario=sc.name, slot=slot, now=self.clock.now(), targets=targets, home=self.config.home
            )
            refusal, _ = first_refusal(list(self._gates_for(sc)), ctx)
            if refusal is not None:
                self.store.update(
                    rec.scenario,
                    rec.slot,
                    rec.token,
                    Update(status=SlotStatus.REFUSED.value, detail=refusal.line(), finished_at=time.time()),
                )
                log.info("%s %s: refused by %s", sc.name, rec.slot, refusal.line())
                notifier.send(
                    Notice(
                        event="abort",
                        scenario=sc.name,
                        slot=rec.slot,
                        status="refused",
                        detail=refusal.line(),
                    )
                )
                return
        if not self.store.update(rec.scenario, rec.slot, rec.token, Update(status=SlotStatus.RUNNING.value)):
            log.warning("%s %s: lost the claim before running; not running it", sc.name, rec.slot)
            return
        log.info("%s %s: running %d step(s)", sc.name, rec.slot, len(steps) - start)
        if start == 0:
            notifier.send(
                Notice(
                    event="start", scenario=sc.name, slot=rec.slot, status="running", detail=sc.description
                )
            )
        results = list(done)
        for i in range(start, len(steps)):
            if stop.is_set():
                break
            step = steps[i]

            def on_child(pid: int, _i: int = i) -> None:
                from chaoslab.safety.owner import Owner

                child = Owner.of_pid(pid, f"{sc.name}@{rec.slot}#{_i}").to_dict()
                self.store.update(rec.scenario, rec.slot, rec.token, Update(child=json.dumps(child)))

            result = run_step(
                step,
                step_dir(root, i, step),
                stop=stop,
                on_child=on_child,
                stop_grace_s=self.config.stop_grace_s,
                home=self.config.home,
            )
            results.append(result)
            self.store.update(
                rec.scenario, rec.slot, rec.token, Update(steps=json.dumps([r.to_dict() for r in results]))
            )
            if result.verdict not in step.continue_on:
                break
        self._finish(
            sc, rec, results, notifier, stop, complete=len(results) == len(steps) or not stop.is_set()
        )

    def _finish(
        self,
        sc: Scenario,
        rec: SlotRecord,
        results: list[StepResult],
        notifier: Notifier,
        stop: _SlotStop,
        *,
        complete: bool,
        detail: str = "",
    ) -> None:
        verdict = overall(results) if results else Verdict.INTERRUPTED
        interrupted = stop.is_set() and (not complete or verdict is Verdict.INTERRUPTED)
        status = SlotStatus.INTERRUPTED if interrupted else SlotStatus.FINISHED
        if interrupted and stop.replaced_by is not None and not self._stop.is_set():
            last = results[-1] if results else None
            reason = (last.reason if last else "") or ""
            detail = detail or f"replaced by slot {stop.replaced_by} (concurrency: replace)" + (
                f"; {reason}" if reason else ""
            )
        if not detail:
            last = results[-1] if results else None
            detail = (last.reason if last else "") or ("stopped by SIGTERM" if interrupted else "")
        ok = self.store.update(
            rec.scenario,
            rec.slot,
            rec.token,
            Update(
                status=status.value,
                verdict=verdict.value,
                exit_code=int(verdict.exit_code),
                detail=detail,
                steps=json.dumps([r.to_dict() for r in results]),
                finished_at=time.time(),
                child="",
            ),
        )
        if not ok:
            log.warning("%s %s: the claim was taken over; outcome not recorded by us", sc.name, rec.slot)
        log.info("%s %s: %s, verdict %s", sc.name, rec.slot, status.value, verdict.value)
        event = "abort" if interrupted or verdict in _ABORT_VERDICTS else "finish"
        notifier.send(
            Notice(
                event=event,
                scenario=sc.name,
                slot=rec.slot,
                status=status.value,
                verdict=verdict.value,
                detail=detail,
                steps=[r.to_dict() for r in results],
            )
        )

    # --- adopting the slots of dead schedulers -----------------------------------------

    def _adopt_stale(self, *, force: bool = False) -> None:
        real = time.time()
        if not force and real - self._last_adopt < self.config.adopt_every_s:
            return
        self._last_adopt = real
        if self._stop.is_set():
            return
        from chaoslab.safety.owner import Life, Owner

        schedulers = self.store.schedulers()
        active = self.store.active()
        self._stop_replaced(active)
        holding = {rec.scheduler for rec in active}
        for sid, srow in schedulers.items():
            # A dead scheduler that holds nothing any more: forget it (keeps the table small).
            if (
                sid != self.id
                and sid not in holding
                and Owner.from_dict(srow.owner).liveness().life is Life.DEAD
            ):
                self.store.unregister(sid)
        for rec in active:
            if rec.scheduler == self.id or rec.scenario not in self.scenarios:
                continue
            with self._lock:
                if (rec.scenario, rec.slot) in self._inflight:
                    continue
            row = schedulers.get(rec.scheduler)
            if row is None:
                dead, why = True, "its scheduler is no longer registered"
            else:
                life = Owner.from_dict(row.owner).liveness()
                silent = real - row.heartbeat_at > self.config.lease_s
                dead = life.life is Life.DEAD or (life.life is Life.UNKNOWN and silent)
                why = (
                    life.reason
                    if life.life is Life.DEAD
                    else f"no heartbeat for {real - row.heartbeat_at:.0f}s"
                )
            if not dead or not self._has_capacity():
                continue
            token = uuid.uuid4().hex
            if self.store.adopt(rec, scheduler=self.id, token=token, now=real):
                log.warning(
                    "%s %s: adopting the claim of scheduler %s (%s)",
                    rec.scenario,
                    rec.slot,
                    rec.scheduler,
                    why,
                )
                adopted = SlotRecord(**{**rec.__dict__, "token": token, "scheduler": self.id})
                self._submit(self.scenarios[rec.scenario], adopted, resume=True)

    def _stop_replaced(self, active: Sequence[SlotRecord]) -> None:
        """``replace`` across schedulers: a newer active slot of a scenario, claimed by any
        scheduler, stops our older run of it."""
        newest: dict[str, str] = {}
        for r in active:
            sc = self.scenarios.get(r.scenario)
            if sc is not None and sc.concurrency == "replace" and r.slot > newest.get(r.scenario, ""):
                newest[r.scenario] = r.slot
        if not newest:
            return
        with self._lock:
            mine = [(name, s, stop) for (name, s), stop in self._slot_stops.items() if name in newest]
        for name, s, stop in mine:
            if s < newest[name]:
                stop.replace(newest[name])

    def _resume(self, sc: Scenario, rec: SlotRecord, stop: _SlotStop) -> None:
        from chaoslab.safety.owner import Life, Owner

        if rec.status == SlotStatus.CLAIMED.value:
            self._execute(sc, rec, [], 0, stop)  # it died before running anything: run it now
            return
        if rec.child:
            child = Owner.from_dict(json.loads(rec.child))
            while child.liveness().life is Life.ALIVE and not self._stop.is_set():
                time.sleep(_CHILD_POLL_S)  # the orphaned run finishes on its own; wait for it
            if self._stop.is_set():
                return  # still ours, still running: the next scheduler adopts it again
        slot = parse_slot_key(rec.slot)
        root = Path(rec.run_dir or self.slot_root(sc.name, slot))
        steps = self.steps_for(sc, slot, root)
        results: list[StepResult] = []
        resume_at: int | None = None
        for i, step in enumerate(steps):
            r = read_result(step, step_dir(root, i, step))
            if r is None:
                resume_at = i
                break
            results.append(r)
            if r.verdict not in step.continue_on:
                break
        notifier = Notifier(targets=sc.notify, env=self._notifier_env)
        if resume_at is None:
            self._finish(sc, rec, results, notifier, stop, complete=True)
            return
        # The step's run died with its scheduler (dead, or silent past the lease): revert
        # its faults even if its ledger entries name another host (a dead pod).
        self._recover_ledger(_run_ids(step_dir(root, resume_at, steps[resume_at])))
        late = (self.clock.now() - parse_slot_key(rec.run_at)).total_seconds()
        if late > max(sc.misfire.grace_s, self.config.on_time_s):
            self._finish(
                sc,
                rec,
                results,
                notifier,
                stop,
                complete=False,
                detail=f"its scheduler died mid-run and it is {late:.0f}s late, past grace; not resumed",
            )
            return
        crashed = step_dir(root, resume_at, steps[resume_at])
        if crashed.exists():
            n = 1
            while crashed.with_name(f"{crashed.name}.crashed-{n}").exists():
                n += 1
            crashed.rename(crashed.with_name(f"{crashed.name}.crashed-{n}"))
        log.warning(
            "%s %s: step %d left no outcome; faults recovered, running it again", sc.name, rec.slot, resume_at
        )
        self._execute(sc, rec, results, resume_at, stop)

    def _recover_ledger(self, run_ids: frozenset[str] = frozenset()) -> None:
        from chaoslab.drivers.registry import DriverRegistry
        from chaoslab.safety.ledger import Ledger
        from chaoslab.safety.recover import recover

        report = recover(
            DriverRegistry(),
            ledger=Ledger(paths.ledger_dir(self.config.home)),
            force_run_ids=run_ids,
            home=self.config.home,
        )
        for line in report.lines():
            log.info("recover: %s", line)

    # --- views -------------------------------------------------------------------------

    def upcoming(self, now: datetime, count: int = 1) -> list[Upcoming]:
        """The next ``count`` slots of each scenario after ``now``, with their refusals."""
        out: list[Upcoming] = []
        for sc in self.scenarios.values():
            cursor = now
            for _ in range(count):
                if isinstance(sc.trigger, CronTrigger):
                    slot, note = sc.trigger.next_with_note(cursor)
                else:
                    slot, note = sc.trigger.next_after(cursor), None
                if slot is None:
                    break
                ra = run_at(sc.name, slot, sc.jitter_s)
                out.append(
                    Upcoming(
                        scenario=sc.name, slot=slot, run_at=ra, refusal=sc.calendar.refusal(ra), dst=note
                    )
                )
                cursor = slot
        return sorted(out, key=lambda u: (u.run_at, u.scenario))


def _run_ids(step: Path) -> frozenset[str]:
    """The run ids a (dead) step's ``chaoslab run`` wrote in its event log."""
    ids: set[str] = set()
    try:
        with open(step / "events.ndjson", encoding="utf-8", errors="replace") as f:
            for line in itertools.islice(f, 1000):
                try:
                    rid = json.loads(line).get("run_id")
                except (ValueError, AttributeError):
                    continue
                if isinstance(rid, str) and rid:
                    ids.add(rid)
    except OSError:
        pass
    return frozenset(ids)


def _safe_url(url: str) -> str:
    from chaoslab.scheduler.store import redact

    return redact(url)
