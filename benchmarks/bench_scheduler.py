"""Scheduler scale: one scheduling tick and memory for 100, 1,000 and 10,000 scenarios.

Scenarios are real files loaded by the real loader (a third cron with a time zone and
weekday windows, a third intervals with jitter, a third leashed monkeys), scheduled
against a real SQLite store on disk.

Measured per size:
- plan: building the schedule (one ``next_after`` per scenario, heapify);
- idle tick: a tick with nothing due (the common case: a daemon ticks every second);
- anchor: a naive tick that asks every scenario's trigger "are you due?" — what a
  scheduler without a heap does every tick; the ratio is anchor / idle tick;
- busy tick: a tick where every scenario has one due slot (all decided and recorded:
  outside their windows, or leashed), i.e. n inserts into the store;
- memory: RSS growth of a fresh process from loading the scenarios and planning them.

Each size runs in a fresh subprocess. Run: ``.venv/bin/python benchmarks/bench_scheduler.py``
(about 45 s; most of it is loading 10,000 YAML files).
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
from chaoslab.scheduler.scenario import Scenario, load_scenarios
from chaoslab.scheduler.store import open_store
from chaoslab.scheduler.triggers import run_at

SIZES = (100, 1_000, 10_000)
# Saturday 2025-01-18 12:00 UTC: outside every weekday window, so due slots are recorded
# as skipped (or leashed for monkeys) and nothing is executed.
SATURDAY = datetime(2025, 1, 18, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t


def write_scenarios(directory: Path, n: int) -> None:
    (directory.parent / "exp.yaml").write_text("title: t\ndescription: d\nmethod: []\n")
    zones = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")
    for i in range(n):
        kind = i % 3
        if kind == 0:
            body = (
                f"name: cron-{i}\ntimezone: {zones[i % 4]}\n"
                f'trigger: {{cron: "{i % 60} */2 * * *", jitter: 5m}}\n'
                'windows: [{days: mon-fri, start: "09:00", end: "17:00"}]\n'
                "blackouts: [{date: 2025-12-24}]\nsteps: [../exp.yaml]\n"
            )
        elif kind == 1:
            body = (
                f"name: interval-{i}\ntrigger: {{interval: {300 + i % 7 * 60}s, jitter: 30s}}\n"
                'windows: [{days: mon-fri, start: "10:00", end: "16:00"}]\n'
                "misfire: {policy: run-once, grace: 10m}\nsteps: [../exp.yaml]\n"
            )
        else:
            body = (
                f"name: monkey-{i}\nmonkey:\n"
                f"  targets: [{{target: 'lab:replica-{i % 3 + 1}', labels: {{chaos: opt-in}}}}]\n"
                "  select: {chaos: opt-in}\n  mean_time_between_kills: 30m\n  min_gap: 5m\n  leashed: true\n"
            )
        (directory / f"s{i:05d}.yaml").write_text(body)


def naive_tick(scenarios: list[Scenario], cursor: dict[str, datetime], now: datetime) -> int:
    """The anchor: every scenario's trigger is asked each tick (no heap)."""
    due = 0
    for sc in scenarios:
        nxt = sc.trigger.next_after(cursor[sc.name])
        if nxt is not None and run_at(sc.name, nxt, sc.jitter_s) <= now:
            due += 1
    return due


def measure(n: int, workdir: Path) -> dict[str, float]:
    """One size, in this process (a fresh one per size, so memory is this size's alone)."""
    scen_dir = workdir / f"scenarios-{n}"
    scen_dir.mkdir()
    write_scenarios(scen_dir, n)
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    scenarios = load_scenarios([scen_dir])
    load_s = time.perf_counter() - t
    store = open_store(f"sqlite:///{workdir / f'store-{n}.db'}")
    clock = Clock(SATURDAY)
    config = SchedulerConfig(runs_root=workdir / "runs", home=workdir / "home", max_parallel=1, max_catchup=1)
    t = time.perf_counter()
    sched = Scheduler(scenarios, store, config, clock=clock)
    sched.start()
    plan_s = time.perf_counter() - t
    sched.tick()  # slots due between "now - on_time" and now: decided once
    gc.collect()
    rss = psutil.Process().memory_info().rss - rss0

    idle = []
    for _ in range(200):
        t = time.perf_counter()
        made = sched.tick()
        idle.append(time.perf_counter() - t)
        assert not made
    cursor = {sc.name: SATURDAY for sc in scenarios}
    anchor = []
    for _ in range(5):
        t = time.perf_counter()
        naive_tick(scenarios, cursor, SATURDAY)
        anchor.append(time.perf_counter() - t)

    # Move to when every scenario has a due slot; max_catchup=1 decides one per scenario.
    clock.t = max(ra for ra, _, _ in sched._heap)
    t = time.perf_counter()
    made = sched.tick()
    busy_s = time.perf_counter() - t
    sched.close()
    store.close()
    return {
        "n": n,
        "load_s": load_s,
        "plan_ms": plan_s * 1e3,
        "idle_us": statistics.median(idle) * 1e6,
        "anchor_ms": statistics.median(anchor) * 1e3,
        "busy_ms": busy_s * 1e3,
        "due": len(made),
        "rss_mb": rss / 2**20,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
            print(json.dumps(measure(int(sys.argv[2]), Path(tmp))))
        return
    rows = []
    for n in SIZES:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        rows.append(json.loads(out.stdout))
    print(
        f"{'scenarios':>9} {'load s':>7} {'plan ms':>8} {'idle tick µs':>13} {'anchor ms':>10}"
        f" {'anchor/idle':>12} {'busy tick ms':>13} {'due':>6} {'µs/due':>7} {'RSS MB':>7} {'KB/scen.':>9}"
    )
    for r in rows:
        ratio = r["anchor_ms"] * 1e3 / r["idle_us"]
        per_due = r["busy_ms"] * 1e3 / max(1, r["due"])
        print(
            f"{r['n']:>9} {r['load_s']:>7.2f} {r['plan_ms']:>8.1f} {r['idle_us']:>13.1f}"
            f" {r['anchor_ms']:>10.2f} {ratio:>11.0f}x {r['busy_ms']:>13.1f} {r['due']:>6} {per_due:>7.0f}"
            f" {r['rss_mb']:>7.1f} {r['rss_mb'] * 1024 / r['n']:>9.1f}"
        )
    small, big = rows[0], rows[-1]
    growth = big["n"] / small["n"]
    print()
    print(f"growth {small['n']} → {big['n']} scenarios ({growth:.0f}x):")
    print(f"  idle tick   {big['idle_us'] / small['idle_us']:.1f}x   (heap peek: independent of n)")
    print(
        f"  anchor tick {big['anchor_ms'] / small['anchor_ms']:.1f}x   (naive scan of every trigger: linear)"
    )
    print(f"  busy tick   {big['busy_ms'] / small['busy_ms']:.1f}x   (one decision per due slot, one commit)")
    print(f"  plan        {big['plan_ms'] / small['plan_ms']:.1f}x   (at start: one next_after per scenario)")
    print(f"  memory      {big['rss_mb'] / max(0.1, small['rss_mb']):.1f}x   (RSS: scenarios + schedule)")


if __name__ == "__main__":
    main()
