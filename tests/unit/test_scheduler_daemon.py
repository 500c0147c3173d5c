"""The scheduler's decisions and runs under a controllable clock, against a real SQLite
store and real ``chaoslab run`` subprocesses of a trivial Chaos Toolkit experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from chaoslab.errors import SLIError
from chaoslab.safety.owner import Owner
from chaoslab.scheduler.checks import CheckContext, CheckResult, ErrorBudgetCheck
from chaoslab.scheduler.daemon import Scheduler
from chaoslab.scheduler.runs import run_step, step_dir
from chaoslab.scheduler.scenario import Scenario
from chaoslab.scheduler.store import SlotRecord, SlotStatus, SQLStore, open_store
from chaoslab.scheduler.triggers import slot_key
from tests.conftest import wait_until
from tests.statepaths import env_state
from tests.unit.schedulerkit import MONDAY_10, FakeClock, make, rows, write_scenario


@dataclass
class FakeBudgetCheck:
    """A pre-run check implementing the Check protocol: refuses when ``remaining`` < ``minimum``."""

    remaining: float
    minimum: float
    calls: int = 0
    name: str = "error-budget"

    def check(self, ctx: CheckContext) -> CheckResult:
        self.calls += 1
        ok = self.remaining >= self.minimum
        return CheckResult(gate=self.name, ok=ok, detail=f"{self.remaining:.0%} of the budget left")


def test_windows_and_blackouts_skip_slots_with_the_reason(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path,
        """name: office
trigger: {interval: 1h}
windows: [{days: mon-fri, start: "10:00", end: "16:00"}]
blackouts: [{date: 2025-01-18}]
steps: [trivial.json]
""",
    )
    clock = FakeClock(datetime(2025, 1, 17, 16, 30, tzinfo=UTC))  # Friday after hours
    sched = make([sc], store, clock, tmp_path)
    try:
        sched.start()
        for _ in range(3):
            clock.advance(hours=1)
            sched.tick()
    finally:
        sched.close()
    got = rows(store, "office")
    assert [r.slot for r in got] == ["2025-01-17T17:00:00Z", "2025-01-17T18:00:00Z", "2025-01-17T19:00:00Z"]
    assert all(r.status == "skipped" and "outside the allowed windows" in r.detail for r in got)
    # Saturday inside 10-16 is still refused by the window; a blackout names itself.
    clock2 = FakeClock(datetime(2025, 1, 18, 12, 0, tzinfo=UTC))
    d = make([sc], store, clock2, tmp_path).decide(sc, [clock2.t], clock2.t)[0]
    assert d.status is SlotStatus.SKIPPED and "blackout" in d.detail


def test_misfire_skip_runs_only_the_on_time_slot(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path, "name: hourly\ntrigger: {interval: 1h}\nmisfire: {policy: skip}\nsteps: [trivial.json]\n"
    )
    clock = FakeClock(MONDAY_10 + timedelta(seconds=1))
    sched = make([sc], store, clock, tmp_path)
    try:
        sched.start()  # plans from now: the 10:00 slot is on time
        clock.advance(hours=3)  # the scheduler was asleep for three hours
        sched.tick()
        sched.wait_idle(60)
    finally:
        sched.close()
    got = {r.slot: r for r in rows(store, "hourly")}
    assert got["2025-01-13T10:00:00Z"].status == "missed"
    assert got["2025-01-13T11:00:00Z"].status == "missed"
    assert "misfire policy skip" in got["2025-01-13T12:00:00Z"].detail
    ran = got["2025-01-13T13:00:00Z"]
    assert ran.status == "finished" and ran.verdict == "passed"
    journal = json.loads((Path(ran.step_results()[0]["run_dir"]) / "journal.json").read_text())
    assert journal["chaoslab"]["verdict"] == "passed"


def test_misfire_run_once_coalesces_late_slots_within_grace(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path,
        "name: grace\ntrigger: {interval: 1h}\nmisfire: {policy: run-once, grace: 150m}\nsteps: [trivial.json]\n",
    )
    clock = FakeClock(MONDAY_10 + timedelta(seconds=1))
    sched = make([sc], store, clock, tmp_path)
    d = sched.decide(
        sc, [MONDAY_10 + timedelta(hours=h) for h in range(4)], MONDAY_10 + timedelta(hours=3, minutes=30)
    )
    assert [x.status for x in d] == [
        SlotStatus.MISSED,
        SlotStatus.MISSED,
        SlotStatus.MISSED,
        SlotStatus.CLAIMED,
    ]
    assert "beyond the 9000s grace" in d[0].detail
    assert "coalesced into slot 2025-01-13T13:00:00Z" in d[1].detail
    assert d[3].late_s == 1800
    try:
        sched.start()
        clock.advance(hours=2, minutes=30)  # 10:00 and 11:00 late within grace, 12:00 late too
        sched.tick()
        sched.wait_idle(60)
    finally:
        sched.close()
    got = {r.slot: r.status for r in rows(store, "grace")}
    assert got == {
        "2025-01-13T10:00:00Z": "missed",
        "2025-01-13T11:00:00Z": "missed",
        "2025-01-13T12:00:00Z": "finished",  # 30 min late, within grace: run once
    }


def test_jitter_delays_the_run_the_same_way_for_everyone(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path, "name: jittery\ntrigger: {interval: 1h, jitter: 30m}\nsteps: [trivial.json]\n"
    )
    clock = FakeClock(MONDAY_10 - timedelta(minutes=1))
    sched = make([sc], store, clock, tmp_path)
    try:
        sched.start()
        (ra, _, slot) = sched._heap[0]
        assert slot == MONDAY_10 and MONDAY_10 <= ra < MONDAY_10 + timedelta(minutes=30)
        assert ra == make([sc], store, clock, tmp_path).upcoming(clock.t)[0].run_at  # same for everyone
        clock.t = MONDAY_10
        if ra > MONDAY_10:
            assert sched.tick() == []  # nominal time reached, but the slot runs at its jittered time
        clock.t = ra
        made = sched.tick()
        assert [d.slot for d in made] == [MONDAY_10] and made[0].run
        sched.wait_idle(60)
    finally:
        sched.close()
    rec = store.get("jittery", slot_key(MONDAY_10))
    assert rec is not None and rec.run_at == slot_key(ra) and rec.status == "finished"


def test_budget_gate_refuses_and_the_abort_is_notified(tmp_path: Path, store: SQLStore) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        sc = write_scenario(
            tmp_path,
            f"name: gated\ntrigger: {{interval: 1h}}\nnotify: [{{webhook: '{url}'}}]\nsteps: [trivial.json]\n",
        )
        low = FakeBudgetCheck(remaining=0.10, minimum=0.25)
        clock = FakeClock(MONDAY_10)
        sched = make([sc], store, clock, tmp_path, gates_for=lambda s: [low])
        try:
            sched.tick()
            sched.wait_idle(30)
            low.remaining = 0.40  # the budget recovered by the next slot
            clock.advance(hours=1)
            sched.tick()
            sched.wait_idle(60)
        finally:
            sched.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    first, second = rows(store, "gated")
    assert first.status == "refused" and "error-budget: closed — 10% of the budget left" in first.detail
    assert first.step_results() == [] and not (tmp_path / "runs" / "gated" / "20250113T100000Z").exists()
    assert second.status == "finished" and second.verdict == "passed"
    assert low.calls == 2
    events = [(b["chaoslab"]["event"], b["chaoslab"]["slot"]) for b in received]
    assert events == [
        ("abort", "2025-01-13T10:00:00Z"),
        ("start", "2025-01-13T11:00:00Z"),
        ("finish", "2025-01-13T11:00:00Z"),
    ]
    assert received[0]["text"].startswith(":octagonal_sign: chaoslab abort")
    assert (
        received[2]["blocks"][0]["text"]["type"] == "mrkdwn"
        and "passed" in received[2]["blocks"][0]["text"]["text"]
    )


class _Status:
    def __init__(self, slo: str, remaining: float) -> None:
        self.slo = slo
        self.budget_remaining = remaining


class _Decision:
    def __init__(self, allowed: bool, statuses: list[_Status], reasons: tuple[str, ...] = ()) -> None:
        self.allowed = allowed
        self.statuses = statuses
        self.reasons = reasons


def test_error_budget_gate_applies_the_scenarios_threshold() -> None:
    ctx = CheckContext(scenario="s", slot=MONDAY_10, now=MONDAY_10, home=env_state().home)

    def gate(answer: Any) -> CheckResult:
        def reader(files: tuple[Path, ...], url: str | None) -> Any:
            if isinstance(answer, Exception):
                raise answer
            return answer

        return ErrorBudgetCheck(slo_files=(Path("/x.yaml"),), min_remaining=0.25, reader=reader).check(ctx)

    ok = gate(_Decision(True, [_Status("avail", 0.30), _Status("latency", 0.9)]))
    assert ok.ok and "avail 30.0% left" in ok.detail
    low = gate(_Decision(True, [_Status("avail", 0.20)]))
    assert not low.ok and "avail: 20.0% of the error budget left, below the scenario's 25%" in low.detail
    burning = gate(_Decision(False, [], ("avail: page-level burn active",)))
    assert not burning.ok and "page-level burn" in burning.detail
    down = gate(SLIError("Prometheus at http://127.0.0.1:9 is unreachable"))
    assert not down.ok and "unreachable" in down.detail


def test_two_schedulers_share_a_store_and_each_slot_runs_once(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path, "name: shared\ntrigger: {interval: 1m}\nconcurrency: allow\nsteps: [trivial.json]\n"
    )
    clock = FakeClock(MONDAY_10)
    other = open_store(store.url)
    a = make([sc], store, clock, tmp_path, max_parallel=2)
    b = make([sc], other, clock, tmp_path, max_parallel=2)
    try:
        for _ in range(3):
            a.tick()
            b.tick()
            clock.advance(minutes=1)
        a.wait_idle(60)
        b.wait_idle(60)
    finally:
        a.close()
        b.close()
        other.close()
    got = rows(store, "shared")
    assert [r.slot for r in got] == ["2025-01-13T10:00:00Z", "2025-01-13T10:01:00Z", "2025-01-13T10:02:00Z"]
    assert all(r.status == "finished" and r.verdict == "passed" for r in got)
    journals = sorted((tmp_path / "runs" / "shared").glob("*/*/journal.json"))
    assert len(journals) == 3  # one run per slot, whoever claimed it


def test_restart_resumes_after_the_last_recorded_slot(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path,
        'name: nightly\ntrigger: {interval: 1h}\nwindows: [{days: sun, start: "00:00", end: "00:01"}]\nsteps: [trivial.json]\n',
    )
    clock = FakeClock(MONDAY_10)
    first = make([sc], store, clock, tmp_path)
    first.tick()
    first.close()
    clock.advance(hours=5)  # no scheduler ran for five hours
    second = make([sc], store, clock, tmp_path)
    second.tick()
    second.close()
    got = rows(store, "nightly")
    assert [r.slot[11:13] for r in got] == ["10", "11", "12", "13", "14", "15"]  # none lost, none twice
    assert all(r.status == "skipped" for r in got)


def test_sigterm_interrupts_runs_which_revert_and_are_recorded(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, "name: long\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n", nap="60")
    clock = FakeClock(MONDAY_10)
    sched = make([sc], store, clock, tmp_path, stop_grace_s=20)
    sched.tick()
    child = _wait_for_child(store, "long", slot_key(MONDAY_10))
    assert child.liveness().life.value == "alive"
    events = sched.slot_root("long", MONDAY_10) / "0-trivial" / "events.ndjson"
    wait_until(
        lambda: events.exists() and '"name": "nap"' in events.read_text(), timeout_s=30.0, interval_s=0.05
    )  # mid-method
    started = time.monotonic()
    sched.stop()
    sched.close()
    assert time.monotonic() - started < 20
    rec = store.get("long", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "interrupted" and rec.verdict == "interrupted"
    assert not psutil.pid_exists(child.pid) or child.liveness().life.value == "dead"
    journal = json.loads((Path(rec.step_results()[0]["run_dir"]) / "journal.json").read_text())
    assert journal["chaoslab"]["verdict"] == "interrupted"
    assert store.schedulers() == {}  # it left the store


def _wait_for_child(store: SQLStore, scenario: str, slot: str, timeout: float = 30.0) -> Owner:
    """The run's child process, once the store records it."""
    rec = wait_until(
        lambda: (r := store.get(scenario, slot)) is not None and r.child and r,
        timeout_s=timeout,
        interval_s=0.05,
        what="the run to start",
    )
    return Owner.from_dict(json.loads(rec.child))


def _dead_owner() -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    owner = Owner.of_pid(proc.pid, "scheduler").to_dict()
    proc.kill()
    proc.wait()
    return owner


def _orphaned_claim(store: SQLStore, sched: Scheduler, sc: Scenario, slot: datetime) -> SlotRecord:
    dead = _dead_owner()
    store.register("dead-scheduler", dead, time.time())
    rec = SlotRecord(
        scenario=sc.name, slot=slot_key(slot), run_at=slot_key(slot), kind="gameday", status="running",
        scheduler="dead-scheduler", token="old-token", claimed_at=time.time(), updated_at=time.time(),
        run_dir=str(sched.slot_root(sc.name, slot)),
    )  # fmt: skip
    assert store.insert(rec)
    return rec


def test_adopting_a_dead_schedulers_finished_run_does_not_run_it_again(
    tmp_path: Path, store: SQLStore
) -> None:
    sc = write_scenario(tmp_path, "name: adopt\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    clock = FakeClock(MONDAY_10 + timedelta(minutes=5))
    sched = make([sc], store, clock, tmp_path)
    _orphaned_claim(store, sched, sc, MONDAY_10)
    # The dead scheduler's run finished on its own after the scheduler died.
    plan = sched.steps_for(sc, MONDAY_10, sched.slot_root("adopt", MONDAY_10))[0]
    done = run_step(
        plan,
        step_dir(sched.slot_root("adopt", MONDAY_10), 0, plan),
        stop=threading.Event(),
        home=env_state().home,
    )
    journal = Path(done.run_dir) / "journal.json"
    before = journal.stat().st_mtime_ns
    sched.run_once(wait_jitter=False)
    rec = store.get("adopt", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "finished" and rec.verdict == "passed"
    assert rec.attempt == 2 and rec.scheduler == sched.id and rec.token != "old-token"
    assert journal.stat().st_mtime_ns == before  # read, not run again
    make([sc], store, clock, tmp_path).run_once(wait_jitter=False)
    assert "dead-scheduler" not in store.schedulers()  # once it holds nothing, it is forgotten


def test_adopting_a_run_that_died_recovers_and_runs_it_again(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, "name: crashed\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    clock = FakeClock(MONDAY_10 + timedelta(minutes=5))
    sched = make([sc], store, clock, tmp_path)
    _orphaned_claim(store, sched, sc, MONDAY_10)
    partial = sched.slot_root("crashed", MONDAY_10) / "0-trivial"
    partial.mkdir(parents=True)
    (partial / "events.ndjson").write_text('{"kind": "run-started"}\n')  # died mid-run: no journal
    sched.run_once(wait_jitter=False)
    rec = store.get("crashed", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "finished" and rec.verdict == "passed"
    assert (partial.parent / "0-trivial.crashed-1" / "events.ndjson").exists()  # kept, not overwritten
    assert (partial / "journal.json").exists()
    # The 11:00 slot is not due yet and nothing else was recorded.
    assert [r.slot for r in rows(store, "crashed")] == [slot_key(MONDAY_10)]


def test_monkey_leashed_logs_and_unleashed_kills(tmp_path: Path, store: SQLStore) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = f"""name: monkey
monkey:
  targets:
    - {{target: "pid:{victim.pid}", labels: {{chaos: opt-in}}}}
    - {{target: "pid:1", labels: {{chaos: opt-out}}}}
  select: {{chaos: opt-in}}
  mean_time_between_kills: 2m
  min_gap: 1m
  heal_timeout: 1s
  leashed: LEASH
"""
        leashed = write_scenario(tmp_path, body.replace("LEASH", "true"), name="m1.yaml")
        slot = leashed.trigger.next_after(MONDAY_10)
        assert slot is not None
        clock = FakeClock(slot)
        sched = make([leashed], store, clock, tmp_path)
        sched.start()
        sched._heap = [(slot, "monkey", slot)]
        sched.tick()
        sched.close()
        rec = store.get("monkey", slot_key(slot))
        assert rec is not None and rec.status == "leashed"
        assert rec.detail == f"leashed: would have sent SIGKILL to pid:{victim.pid}"
        assert victim.poll() is None  # the leash held

        unleashed = write_scenario(tmp_path, body.replace("LEASH", "false").replace("name: monkey", "name: biting"),
                                   name="m2.yaml")  # fmt: skip
        slot2 = unleashed.trigger.next_after(MONDAY_10)
        assert slot2 is not None
        clock2 = FakeClock(slot2)
        sched2 = make([unleashed], store, clock2, tmp_path)
        sched2.start()
        sched2._heap = [(slot2, "biting", slot2)]
        sched2.tick()
        sched2.wait_idle(60)
        sched2.close()
        assert victim.wait(timeout=10) == -9  # killed by the scheduled run
        rec2 = store.get("biting", slot_key(slot2))
        # A bare pid has nobody to restart it: the "victim runs" steady state fails after.
        assert rec2 is not None and rec2.status == "finished" and rec2.verdict == "deviated", rec2
        exp = json.loads((Path(rec2.run_dir or "") / "monkey-kill.json").read_text())
        assert exp["method"][0]["target"] == f"pid:{victim.pid}"
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_no_scheduler_left_registered_and_no_child_left(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(tmp_path, "name: tidy\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    sched = make([sc], store, FakeClock(MONDAY_10), tmp_path)
    sched.run_once()
    assert store.schedulers() == {}
    me = psutil.Process(os.getpid())
    assert [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE] == []


def test_a_long_outage_is_caught_up_in_bounded_ticks(tmp_path: Path, store: SQLStore) -> None:
    sc = write_scenario(
        tmp_path,
        'name: burst\ntrigger: {interval: 1s}\nwindows: [{days: sun, start: "00:00", end: "00:01"}]\nsteps: [trivial.json]\n',
    )
    clock = FakeClock(MONDAY_10)
    sched = make([sc], store, clock, tmp_path, max_catchup=40)
    try:
        sched.start()
        clock.advance(seconds=100)
        sizes = [len(sched.tick()) for _ in range(6)]
    finally:
        sched.close()
    # A new scenario starts with its latest slot at start-up (10:00:00; the minute before
    # predates it) and runs to 10:01:40: 101 slots, never more than 40 in one tick, none
    # twice, none lost.
    assert sizes == [40, 40, 21, 0, 0, 0]
    got = [r.slot for r in rows(store, "burst")]
    assert len(got) == len(set(got)) == 101
    assert (got[0], got[-1]) == ("2025-01-13T10:00:00Z", "2025-01-13T10:01:40Z")


def test_a_halt_closes_the_gate_for_scheduled_runs(tmp_path: Path, store: SQLStore) -> None:
    from chaoslab.safety.halt import halt, release

    sc = write_scenario(tmp_path, "name: halted\ntrigger: {interval: 1h}\nsteps: [trivial.json]\n")
    halt(reason="incident 42", grace_s=0.1, home=env_state().home)
    try:
        sched = make([sc], store, FakeClock(MONDAY_10), tmp_path)
        sched.tick()
        sched.wait_idle(30)
        sched.close()
    finally:
        release(env_state().home)
    rec = store.get("halted", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "refused" and "incident 42" in rec.detail
    assert rec.detail.startswith("not-halted: closed")


def test_an_unreachable_webhook_does_not_stop_the_run(tmp_path: Path, store: SQLStore) -> None:
    with socket_port() as port:  # a port nobody listens on
        sc = write_scenario(
            tmp_path,
            f"name: quiet\ntrigger: {{interval: 1h}}\nnotify: [{{webhook: 'http://127.0.0.1:{port}/x'}}]\nsteps: [trivial.json]\n",
        )
    sched = make([sc], store, FakeClock(MONDAY_10), tmp_path)
    sched.tick()
    sched.wait_idle(60)
    sched.close()
    rec = store.get("quiet", slot_key(MONDAY_10))
    assert rec is not None and rec.status == "finished" and rec.verdict == "passed"


class socket_port:
    """A free 127.0.0.1 port, released on exit (so nothing listens on it)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
