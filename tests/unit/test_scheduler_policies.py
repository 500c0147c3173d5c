"""Issue 16: the scheduler does exactly what the calendar says.

Concurrency policies, start-up and catch-up under the misfire policy, the monkey's
min_gap from the first minute, max-parallel in ``run --once``, cron across DST changes,
and a dead pod's faults recovered by the next scheduler. Real SQLite store, real
``chaoslab run`` subprocesses (a trivial Chaos Toolkit experiment), a fake clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaoslab.safety.owner import Owner
from chaoslab.scheduler.checks import CheckContext, CheckResult
from chaoslab.scheduler.daemon import Scheduler
from chaoslab.scheduler.store import Claim, SlotRecord, SQLStore, open_store
from chaoslab.scheduler.triggers import CronTrigger, parse_slot_key, slot_key
from tests.conftest import wait_until
from tests.statepaths import env_state
from tests.unit.schedulerkit import MONDAY_10, FakeClock, make, rows, write_scenario


class Refuse:
    """A gate that always refuses: a claim is made and recorded, nothing is run."""

    name = "test-gate"

    def check(self, ctx: CheckContext) -> CheckResult:
        return CheckResult(gate=self.name, ok=False, detail="closed for the test")


# --- concurrency policies ----------------------------------------------------------------


def test_forbid_is_the_default_and_records_a_busy_slot(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, "name: slow\ntrigger: {interval: 1m}\nsteps: [trivial.json]\n", nap="4")
    assert sc.concurrency == "forbid"
    clock = FakeClock(MONDAY_10)
    sched = make([sc], store, clock, tmp_path)
    try:
        sched.tick()  # 10:00 starts and runs for ~4 s
        wait_until(
            lambda: (r := store.get("slow", slot_key(MONDAY_10))) is not None and r.status == "running",
            timeout_s=60.0,
            interval_s=0.05,
        )
        clock.advance(minutes=1)
        sched.tick()  # 10:01 is due while 10:00 still runs
        busy = store.get("slow", "2025-01-13T10:01:00Z")
        assert busy is not None and busy.status == "skipped"
        assert busy.detail.startswith("busy: slot 2025-01-13T10:00:00Z") and "forbid" in busy.detail
        sched.wait_idle(60)
        clock.advance(minutes=1)
        sched.tick()  # 10:02: the scenario is free again
        sched.wait_idle(60)
    finally:
        sched.close()
    got = {r.slot[11:16]: r.status for r in rows(store, "slow")}
    assert got == {"10:00": "finished", "10:01": "skipped", "10:02": "finished"}


def test_allow_runs_beside_the_running_slot(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path, "name: both\ntrigger: {interval: 1m}\nconcurrency: allow\nsteps: [trivial.json]\n", nap="3"
    )
    clock = FakeClock(MONDAY_10)
    sched = make([sc], store, clock, tmp_path)
    try:
        sched.tick()
        clock.advance(minutes=1)
        sched.tick()
        assert len(store.active()) == 2  # both claimed and running at once
        sched.wait_idle(60)
    finally:
        sched.close()
    assert [r.status for r in rows(store, "both")] == ["finished", "finished"]


def test_replace_stops_the_running_slot_which_reverts_then_runs_the_new_one(
    tmp_path: Path, store: SQLStore
) -> None:
    sc = write_scenario(
        tmp_path,
        "name: newest\ntrigger: {interval: 1m}\nconcurrency: replace\nsteps: [trivial.json]\n",
        nap="60",
    )
    clock = FakeClock(MONDAY_10)
    sched = make([sc], store, clock, tmp_path, stop_grace_s=20)
    try:
        sched.tick()
        events = sched.slot_root("newest", MONDAY_10) / "0-trivial" / "events.ndjson"
        wait_until(
            lambda: events.exists() and '"name": "nap"' in events.read_text(), timeout_s=60.0, interval_s=0.05
        )
        clock.advance(minutes=1)
        started = time.monotonic()
        sched.tick()
        old = slot_key(MONDAY_10)
        wait_until(
            lambda: (r := store.get("newest", old)) is not None and r.status == "interrupted",
            timeout_s=60.0,
            interval_s=0.05,
        )
        assert time.monotonic() - started < 20  # stopped, not waited out
        new = store.get("newest", "2025-01-13T10:01:00Z")
        wait_until(
            lambda: (r := store.get("newest", "2025-01-13T10:01:00Z")) is not None and r.status == "running",
            timeout_s=60.0,
            interval_s=0.05,
        )
        assert new is not None
    finally:
        sched.stop()
        sched.close()
    first = store.get("newest", old)
    assert first is not None and first.verdict == "interrupted"
    assert first.detail.startswith("replaced by slot 2025-01-13T10:01:00Z (concurrency: replace)")
    journal = json.loads((Path(first.step_results()[0]["run_dir"]) / "journal.json").read_text())
    assert journal["chaoslab"]["verdict"] == "interrupted"  # it reverted and wrote its journal


def test_claim_exclusive_lets_one_of_many_racing_claims_win(tmp_path: Path, store: SQLStore) -> None:
    """Eight connections claim eight different slots of one forbid scenario at once."""
    stores = [open_store(store.url) for _ in range(8)]
    results: list[tuple[Claim, str | None]] = []
    barrier = threading.Barrier(len(stores))

    def claim(i: int, st_: SQLStore) -> None:
        slot = slot_key(MONDAY_10 + timedelta(seconds=i))
        rec = SlotRecord(scenario="race", slot=slot, run_at=slot, kind="gameday", status="claimed",
                         scheduler=f"s{i}", token=uuid.uuid4().hex)  # fmt: skip
        barrier.wait(10)
        results.append(st_.claim_exclusive(rec, lambda h: f"busy: {h}"))

    threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for s in stores:
            s.close()
    assert sorted(c.value for c, _ in results) == ["busy"] * 7 + ["won"]
    got = rows(store, "race")
    assert len(got) == 8 and [r.status for r in got].count("claimed") == 1
    winner = next(r.slot for r in got if r.status == "claimed")
    assert all(r.detail == f"busy: {winner}" for r in got if r.status == "skipped")


# --- start-up, catch-up, max-parallel ------------------------------------------------------


def test_a_fresh_store_starts_only_the_latest_slot(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, "name: fresh\ntrigger: {interval: 5s}\nsteps: [trivial.json]\n")
    clock = FakeClock(MONDAY_10 + timedelta(seconds=3))
    sched = make([sc], store, clock, tmp_path)
    try:
        made = sched.tick()
        sched.wait_idle(60)
    finally:
        sched.close()
    # Not the twelve slots of the last minute: they predate the scenario.
    assert [d.slot for d in made] == [MONDAY_10]
    assert [(r.slot, r.status) for r in rows(store, "fresh")] == [(slot_key(MONDAY_10), "finished")]


@pytest.mark.parametrize("policy", ["skip", "run-once"])
def test_a_catch_up_is_one_run_and_the_rest_is_recorded(tmp_path: Path, store: SQLStore, policy: str) -> None:
    sc = write_scenario(
        tmp_path,
        f"name: catch\ntrigger: {{interval: 5s}}\nmisfire: {{policy: {policy}, grace: 10m}}\n"
        "concurrency: allow\nsteps: [trivial.json]\n",
    )
    clock = FakeClock(MONDAY_10)
    first = make([sc], store, clock, tmp_path)
    first.tick()
    first.wait_idle(60)
    first.close()
    clock.advance(seconds=50)  # no scheduler for 50 s: ten slots fell due, all within on-time
    second = make([sc], store, clock, tmp_path)
    try:
        second.tick()
        second.wait_idle(60)
    finally:
        second.close()
    got = rows(store, "catch")
    assert len(got) == 11 and len({r.slot for r in got}) == 11  # every slot has its row
    ran = [r for r in got if r.status == "finished"]
    assert [r.slot for r in ran] == ["2025-01-13T10:00:00Z", "2025-01-13T10:00:50Z"]
    assert all(
        r.status == "missed" and "coalesced into slot 2025-01-13T10:00:50Z" in r.detail
        for r in got
        if r not in ran
    )


def test_run_once_records_what_max_parallel_leaves_out(tmp_path: Path, store: SQLStore) -> None:
    scenarios = [
        write_scenario(tmp_path, f"name: p{i}\ntrigger: {{interval: 1h}}\nsteps: [trivial.json]\n",
                       name=f"p{i}.yaml", nap="1")
        for i in range(5)
    ]  # fmt: skip
    clock = FakeClock(MONDAY_10)
    sched = make(scenarios, store, clock, tmp_path, max_parallel=4)
    sched.run_once(wait_jitter=False)
    got = {sc.name: store.get(sc.name, slot_key(MONDAY_10)) for sc in scenarios}
    assert all(r is not None for r in got.values())  # the fifth is not dropped silently
    statuses = sorted((r.status, r.detail) for r in got.values() if r is not None)
    assert [s for s, _ in statuses] == ["finished"] * 4 + ["skipped"]
    assert statuses[-1][1] == "over max-parallel: all 4 workers busy"


def test_the_daemon_waits_for_a_worker_then_records_over_max_parallel(
    tmp_path: Path, store: SQLStore
) -> None:
    long = write_scenario(tmp_path, "name: hog\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n",
                          name="hog.yaml", nap="60")  # fmt: skip
    other = write_scenario(tmp_path, "name: other\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n",
                           name="other.yaml")  # fmt: skip
    clock = FakeClock(MONDAY_10)
    sched = make([long, other], store, clock, tmp_path, max_parallel=1, stop_grace_s=20)
    try:
        sched.tick()  # hog takes the only worker; other waits (still on time)
        assert store.get("other", slot_key(MONDAY_10)) is None
        clock.advance(seconds=30)
        sched.tick()
        assert store.get("other", slot_key(MONDAY_10)) is None
        clock.advance(seconds=31)  # now 61 s late: the misfire policy (skip) gives up
        sched.tick()
        rec = store.get("other", slot_key(MONDAY_10))
        assert rec is not None and rec.status == "skipped"
        assert rec.detail.startswith("over max-parallel: all 1 workers busy for 61s; late by 61s")
    finally:
        sched.stop()
        sched.close()


# --- the monkey ------------------------------------------------------------------------------


MONKEY = """name: chimp
monkey:
  targets: [{target: "lab:replica-1", labels: {chaos: opt-in}}]
  select: {chaos: opt-in}
  mean_time_between_kills: 30s
  min_gap: 10s
  leashed: true
"""


def test_the_monkey_keeps_min_gap_and_its_mean_from_the_first_minute(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, MONKEY)
    clock = FakeClock(MONDAY_10 + timedelta(seconds=7))
    # A long on-time tolerance: the start-up must still not fire the kills of the last ten minutes.
    sched = make([sc], store, clock, tmp_path, on_time_s=600)
    try:
        for _ in range(3600):
            sched.tick()
            clock.advance(seconds=1)
    finally:
        sched.close()
    # A 45 s outage, then a new scheduler: the catch-up is at most one kill, min_gap apart.
    clock.advance(seconds=45)
    again = make([sc], store, clock, tmp_path, on_time_s=600)
    try:
        for _ in range(600):
            again.tick()
            clock.advance(seconds=1)
    finally:
        again.close()
    kills = sorted(r.claimed_at for r in rows(store, "chimp") if r.status == "leashed")
    gaps = [b - a for a, b in zip(kills, kills[1:], strict=False)]
    assert min(gaps) >= 10, gaps
    start = (MONDAY_10 + timedelta(seconds=7)).timestamp()
    assert len([k for k in kills if k < start + 60]) <= 3  # no burst in the first minute
    # 4,245 s at one kill per 30 s on average (a seeded, reproducible schedule).
    assert 0.75 * 4245 / 30 <= len(kills) <= 1.25 * 4245 / 30, len(kills)
    assert all(r.status in ("leashed", "missed", "skipped") for r in rows(store, "chimp"))


# --- daylight saving time --------------------------------------------------------------------


BERLIN_DAILY = """name: {name}
timezone: Europe/Berlin
trigger: {{cron: "30 2 * * *"{gap}}}
steps: [trivial.json]
"""


@pytest.mark.parametrize("gap", ["shift", "skip"])
def test_a_berlin_0230_daily_across_both_dst_changes(tmp_path: Path, store: SQLStore, gap: str) -> None:
    extra = ", dst_gap: skip" if gap == "skip" else ""
    slots: list[str] = []
    for season, first_day in (
        ("spring", datetime(2026, 3, 27, tzinfo=UTC)),
        ("autumn", datetime(2026, 10, 23, tzinfo=UTC)),
    ):
        sc = write_scenario(tmp_path, BERLIN_DAILY.format(name=season, gap=extra), name=f"{season}.yaml")
        clock = FakeClock(first_day)
        sched = make([sc], store, clock, tmp_path, gates_for=lambda s: [Refuse()])
        try:
            for _ in range(5 * 24 * 6):  # five days, a tick every ten minutes
                sched.tick()
                sched.wait_idle(30)
                clock.advance(minutes=10)
        finally:
            sched.close()
        got = rows(store, season)
        assert all(r.status == "refused" for r in got)  # each one claimed, none missed
        slots += [r.slot for r in got]
    berlin = [parse_slot_key(s).astimezone(ZoneInfo("Europe/Berlin")) for s in slots]
    spring = "2026-03-29T01:00:00Z"  # 02:30 does not exist: 03:00 CEST, right after the gap
    assert (spring in slots) == (gap == "shift")
    assert slots.count("2026-10-25T00:30:00Z") == 1 and "2026-10-25T01:30:00Z" not in slots  # once
    expected_days = 10 if gap == "shift" else 9  # five days around each change
    assert len(slots) == expected_days
    assert len({b.date() for b in berlin}) == len(berlin)  # never twice a day
    assert all((b.hour, b.minute) == (2, 30) for b in berlin if slot_key(b) != spring)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    minute=st.integers(0, 59),
    hour=st.sampled_from(["*", "1", "2", "3", "*/2", "1-3"]),
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
    gap=st.sampled_from(["shift", "skip"]),
)
def test_cron_slots_are_strictly_increasing_and_each_wall_time_runs_at_most_once(
    minute: int, hour: str, tz: str, start: datetime, gap: str
) -> None:
    trig = CronTrigger(expression=f"{minute} {hour} * * *", tz=ZoneInfo(tz), dst_gap=gap)
    cursor = start.replace(tzinfo=UTC)
    walls: list[tuple[Any, ...]] = []
    for _ in range(30):
        nxt = trig.next_after(cursor)
        assert nxt is not None and nxt > cursor and nxt.microsecond == 0
        local = nxt.astimezone(ZoneInfo(tz))
        walls.append((local.date(), local.hour, local.minute))
        cursor = nxt
    assert len(walls) == len(set(walls))  # a repeated wall time never runs twice


def test_schedule_next_marks_the_slots_a_dst_change_touched(tmp_path: Path) -> None:
    (tmp_path / "trivial.json").write_text("{}")
    (tmp_path / "s.yaml").write_text(BERLIN_DAILY.format(name="nightly", gap=""))
    proc = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", "schedule", "next", "-s", str(tmp_path / "s.yaml"),
         "--after", "2026-03-28T12:00", "-n", "2", "--output", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    first, second = json.loads(proc.stdout)
    assert first["run_at"] == "2026-03-29T01:00:00+00:00"
    assert first["dst"] == (
        "02:30 does not exist on 2026-03-29 (DST starts in Europe/Berlin): runs at 03:00 CEST, right after the gap"
    )
    assert second["dst"] is None
    text = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", "schedule", "next", "-s", str(tmp_path / "s.yaml"),
         "--after", "2026-10-24T12:00", "-n", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert text.returncode == 0
    assert text.stdout.strip() == (
        "2026-10-25T00:30:00+00:00  nightly  [DST: 02:30 occurs twice on 2026-10-25 (DST ends in"
        " Europe/Berlin): runs once, at the first (CEST)]"
    )


# --- a dead pod's faults ---------------------------------------------------------------------


def test_a_dead_pods_faults_are_recovered_by_the_next_scheduler(tmp_path: Path, store: SQLStore) -> None:
    """A pod (another host) died mid-run with a process suspended: its ledger and run
    directory live on the volume. The next scheduler adopts the claim once the lease is
    over, reverts that run's fault although its owner is on another host, and runs the
    step again."""
    from chaoslab import paths
    from chaoslab.drivers import _proc
    from chaoslab.drivers.base import DriverContext
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.safety.ledger import Ledger

    home = tmp_path / "home"
    sc = write_scenario(tmp_path, "name: podded\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    clock = FakeClock(MONDAY_10 + timedelta(minutes=5))
    try:
        driver = DriverRegistry().get("process")
        op = next(o for o in driver.operations() if o.name == "suspend")
        ctx = DriverContext(run_id="pod-run", state_dir=tmp_path / "state", lab_dir=env_state().lab)
        rec = driver.prepare(ctx, op, {}, f"pid:{victim.pid}", 300.0)
        pod = msgspec.structs.replace(Owner.current("pod-run"), hostname="chaoslab-pod-7f9c")
        ledger = Ledger(paths.ledger_dir(home))
        ledger.open_entry(rec, owner=pod)
        rec = driver.inject(ctx, rec)
        ledger.update_entry(rec)
        _proc.kill_watchdogs(rec.fault_id)  # the pod died: its watchdog with it
        assert psutil.Process(victim.pid).status() == psutil.STATUS_STOPPED

        sched = make([sc], store, clock, tmp_path, home=home)
        dead = msgspec.structs.replace(Owner.current("scheduler"), hostname="chaoslab-pod-7f9c")
        store.register("chaoslab-pod-7f9c:1:0", dead.to_dict(), time.time() - 3600)  # silent for an hour
        slot = slot_key(MONDAY_10)
        root = sched.slot_root("podded", MONDAY_10)
        (root / "0-trivial").mkdir(parents=True)
        (root / "0-trivial" / "events.ndjson").write_text(
            json.dumps({"kind": "run-started", "run_id": "pod-run", "ts": time.time()}) + "\n"
        )
        child = msgspec.structs.replace(Owner.current("pod-run"), hostname="chaoslab-pod-7f9c")
        assert store.insert(
            SlotRecord(scenario="podded", slot=slot, run_at=slot, kind="gameday", status="running",
                       scheduler="chaoslab-pod-7f9c:1:0", token="pod-token", run_dir=str(root),
                       child=json.dumps(child.to_dict()))
        )  # fmt: skip
        sched.run_once(wait_jitter=False)
        assert psutil.Process(victim.pid).status() != psutil.STATUS_STOPPED  # resumed
        assert not ledger.scan().entries  # closed
        row = store.get("podded", slot)
        assert row is not None and row.status == "finished" and row.verdict == "passed" and row.attempt == 2
        assert (root / "0-trivial.crashed-1" / "events.ndjson").exists()
    finally:
        victim.kill()
        victim.wait()


def test_scheduler_docstring_says_why_not_apscheduler() -> None:
    import chaoslab.scheduler.daemon as daemon

    assert "APScheduler" in (daemon.__doc__ or "") and "lacks" in (daemon.__doc__ or "")
    assert Scheduler.__doc__


def test_run_once_honours_forbid_against_another_schedulers_run(tmp_path: Path, store: SQLStore) -> None:
    """An external cron's ``run --once`` finds the scenario's previous slot still running
    under a live scheduler: the due slot is recorded busy, not run beside it."""
    sc = write_scenario(tmp_path, "name: cronned\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    store.register("live-scheduler", Owner.current("scheduler").to_dict(), time.time())  # this process: alive
    earlier = slot_key(MONDAY_10 - timedelta(hours=1))
    assert store.insert(
        SlotRecord(scenario="cronned", slot=earlier, run_at=earlier, kind="gameday", status="running",
                   scheduler="live-scheduler", token="t")
    )  # fmt: skip
    sched = make([sc], store, FakeClock(MONDAY_10 + timedelta(seconds=2)), tmp_path)
    sched.run_once(wait_jitter=False)
    rec = store.get("cronned", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "skipped"
    assert rec.detail == f"busy: slot {earlier} of this scenario is still running (concurrency: forbid)"
    assert not (tmp_path / "runs" / "cronned" / "20250113T100000Z").exists()  # nothing ran


def test_cron_dst_notes_and_wall_times_landing_on_one_instant() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    skip = CronTrigger(expression="30 2 * * *", tz=berlin, dst_gap="skip")
    slot, note = skip.next_with_note(datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert slot_key(slot) == "2026-03-30T00:30:00Z"  # (slot is not None)
    assert note == "02:30 does not exist on 2026-03-29 (DST starts in Europe/Berlin): skipped (dst_gap: skip)"
    # */20 in the skipped hour: 02:00, 02:20, 02:40 and 03:00 are one instant, run once.
    every = CronTrigger(expression="*/20 * * * *", tz=berlin)
    cursor, got = datetime(2026, 3, 29, 0, 30, tzinfo=UTC), []
    for _ in range(4):
        nxt = every.next_after(cursor)
        assert nxt is not None
        got.append(nxt.astimezone(berlin).strftime("%H:%M %Z"))
        cursor = nxt
    assert got == ["01:40 CET", "03:00 CEST", "03:20 CEST", "03:40 CEST"]
    # The repeated hour of the autumn change runs once: no 02:xx CET slots.
    cursor, got = datetime(2026, 10, 24, 23, 50, tzinfo=UTC), []
    for _ in range(5):
        nxt = every.next_after(cursor)
        assert nxt is not None
        got.append(nxt.astimezone(berlin).strftime("%H:%M %Z"))
        cursor = nxt
    assert got == ["02:00 CEST", "02:20 CEST", "02:40 CEST", "03:00 CET", "03:20 CET"]


@pytest.mark.parametrize(("policy", "runs"), [("skip", False), ("run-once", True)])
def test_a_fresh_store_started_late_follows_the_misfire_policy(
    tmp_path: Path, store: SQLStore, policy: str, runs: bool
) -> None:
    """A CronJob pod Kubernetes starts five minutes late, on a fresh store."""
    sc = write_scenario(
        tmp_path,
        f"name: late\ntrigger: {{cron: '0 10 * * *'}}\nmisfire: {{policy: {policy}, grace: 10m}}\nsteps: [trivial.json]\n",
    )
    sched = make([sc], store, FakeClock(MONDAY_10 + timedelta(minutes=5)), tmp_path)
    sched.run_once(wait_jitter=False)
    got = [(r.slot, r.status) for r in rows(store, "late")]
    if runs:
        assert got == [(slot_key(MONDAY_10), "finished")]
    else:
        assert got == []  # on a fresh store a late slot under `skip` predates the scenario
