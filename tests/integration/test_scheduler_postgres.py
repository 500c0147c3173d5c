"""Two scheduler daemons against a real PostgreSQL: every slot runs exactly once.

The tests start a throwaway PostgreSQL cluster (``initdb`` as an unprivileged user,
listening on 127.0.0.1 only, socket in the temp dir), then:

- run two ``chaoslab schedule daemon`` processes on one scenario (``concurrency:
  allow``) that fires every second. Mid-run one daemon is SIGKILLed (its run lives on
  and is adopted), restarted, later SIGKILLed *with* its run (the adopter recovers and
  runs that step again). Afterwards every slot in the range has exactly one row, one
  completed run and a passed verdict;
- run two daemons on a ``forbid`` scenario whose runs (2.5 s) outlast its interval
  (1 s): runs never overlap, across the two daemons, and every slot has its row —
  finished, or skipped "busy" naming the slot that was running;
- tick two in-process schedulers on the store with a fake clock through the two DST
  changes of a daily 02:30 Europe/Berlin cron: one claim per day, 03:00 CEST on the
  spring day, once (not twice) on the autumn day.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import require, wait_until
from tests.statepaths import env_state

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAP_S = 2.0


def _pg_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres live: PATH, /usr/local/bin, or Debian's layout."""
    candidates = [shutil.which("initdb"), "/usr/local/bin/initdb"]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True
    )
    for c in candidates:
        if c and os.access(c, os.X_OK):
            bindir = Path(c).resolve().parent
            if (bindir / "pg_ctl").exists() and (bindir / "postgres").exists():
                return bindir
    return None


def _pg_user() -> str | None:
    """initdb refuses root: run the cluster as ``postgres`` (Debian's package) or ``nobody``."""
    if os.geteuid() != 0:
        return None  # already unprivileged: run as ourselves
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    assert bindir is not None
    user = _pg_user()
    require(user != "", "an unprivileged user to run PostgreSQL as (postgres or nobody)")
    as_user = ["runuser", "-u", user, "--"] if user else []
    base = Path(tempfile.mkdtemp(prefix="chaoslab-pg-", dir="/tmp"))
    data, sock, log = base / "data", base / "sock", base / "pg.log"
    sock.mkdir()
    if user:
        entry = pwd.getpwnam(user)
        for p in (base, sock):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    pid: int | None = None
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "chaoslab", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=50"
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://chaoslab@127.0.0.1:{port}/postgres"
    finally:
        if pid is not None:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)  # fmt: skip
            if psutil.pid_exists(pid):  # pg_ctl failed: stop the postmaster by its pid
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


TRIVIAL = {
    "title": "quick",
    "description": "a process probe and a short nap",
    "steady-state-hypothesis": {
        "title": "true exits 0",
        "probes": [{"type": "probe", "name": "ok", "tolerance": 0, "provider": {"type": "process", "path": "true"}}],
    },
    "method": [{"type": "action", "name": "nap", "provider": {"type": "process", "path": "sleep",
                                                              "arguments": str(NAP_S)}}],
}  # fmt: skip


def _daemon(env: dict[str, str], scenario: Path, runs: Path, name: str, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "ab")  # Popen keeps its own copy of the fd
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "chaoslab.cli", "schedule", "daemon", "-s", str(scenario),
             "--runs-dir", str(runs), "--max-parallel", "4", "--on-time", "60s", "--tick", "0.2s", "-v"],
            env=env, stdout=log, stderr=log, cwd=REPO,
        )  # fmt: skip
    finally:
        log.close()


def _rows(url: str, scenario: str) -> list[Any]:
    from chaoslab.scheduler.store import open_store

    store = open_store(url)
    try:
        return store.all_slots(scenario)
    finally:
        store.close()


def _running_of(url: str, scenario: str, pid: int) -> Any:
    """A slot that daemon ``pid`` claimed itself (not adopted) and runs now, mid-nap."""
    for r in _rows(url, scenario):
        if r.status == "running" and r.attempt == 1 and f":{pid}:" in r.scheduler and r.child and r.run_dir:
            events = Path(r.run_dir) / "0-quick" / "events.ndjson"
            if events.exists() and '"name": "nap"' in events.read_text():
                return r
    return None


def _finished_by(url: str, pid: int) -> bool:
    return any(r.status == "finished" and f":{pid}:" in r.scheduler for r in _rows(url, "every-second"))


def _while_held[T](held: subprocess.Popen[bytes], cond: Callable[[], T | None], what: str) -> T:
    """Wait (30 s at most) for ``cond`` while daemon ``held`` is stopped; resume it after."""
    held.send_signal(signal.SIGSTOP)
    try:
        return wait_until(cond, timeout_s=30, what=what, interval_s=0.1)
    finally:
        held.send_signal(signal.SIGCONT)


def test_two_daemons_each_slot_exactly_once_through_sigkill(postgres: str, tmp_path: Path) -> None:
    (tmp_path / "quick.json").write_text(json.dumps(TRIVIAL))
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(seconds=40)
    # Slots from `end` on fall in a blackout: the run of slots is finite and every one of
    # them can finish before the daemons are stopped. 40 s leaves the restarted daemon
    # slots of its own to claim even when starting three daemons is slow (with 14 s, a
    # loaded CI machine reached the blackout before the restarted daemon claimed one).
    scenario = tmp_path / "every-second.yaml"
    scenario.write_text(
        f"""name: every-second
trigger: {{interval: 1s}}
concurrency: allow
blackouts: [{{from: "{end.isoformat()}", to: "{(end + timedelta(hours=1)).isoformat()}", reason: test over}}]
steps: [quick.json]
"""
    )
    runs = tmp_path / "runs"
    env = dict(os.environ)
    env["CHAOSLAB_STORE"] = postgres
    env["CHAOSLAB_HOME"] = str(tmp_path / "home")
    daemons: list[subprocess.Popen[bytes]] = []
    orphans: list[int] = []
    try:
        a = _daemon(env, scenario, runs, "a", tmp_path)
        b = _daemon(env, scenario, runs, "b", tmp_path)
        daemons += [a, b]

        # Whichever daemon ticks first wins every claim race, so each step holds the
        # other daemon (SIGSTOP, as a long GC pause or a stalled VM would) until the one
        # it is about has done its part.
        # 1. SIGKILL daemon A while it runs a slot; its run lives on in its own session.
        first = _while_held(b, lambda: _running_of(postgres, "every-second", a.pid), "daemon A mid-run")
        a.kill()
        a.wait()
        orphan = json.loads(first.child)["pid"]
        orphans.append(orphan)
        assert psutil.pid_exists(orphan)

        # 2. Restart it (same command), then SIGKILL it *and* its run: nothing finishes that step.
        a2 = _daemon(env, scenario, runs, "a2", tmp_path)
        daemons.append(a2)
        second = _while_held(
            b, lambda: _running_of(postgres, "every-second", a2.pid), "restarted daemon A mid-run"
        )
        a2.kill()
        a2.wait()
        child = json.loads(second.child)["pid"]
        os.killpg(child, signal.SIGKILL)  # the run has its own session: kill the whole group
        orphans.append(child)

        # 3. Let the survivors finish every slot up to the blackout, then stop them. Each
        # must do work of its own: B too, resumed after stalls longer than its heartbeat
        # (CI once saw every finished slot go to A3).
        a3 = _daemon(env, scenario, runs, "a3", tmp_path)
        daemons.append(a3)
        _while_held(b, lambda: _finished_by(postgres, a3.pid), "daemon A3 to finish a slot")
        _while_held(a3, lambda: _finished_by(postgres, b.pid), "daemon B to finish a slot after its stalls")

        def settled() -> bool:
            rows = _rows(postgres, "every-second")
            past_end = any(
                r.slot >= (end + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows
            )
            return past_end and not any(r.status in ("claimed", "running") for r in rows)

        wait_until(settled, timeout_s=90, what="every slot before the blackout to finish", interval_s=0.1)
        for d in (b, a3):
            d.send_signal(signal.SIGTERM)
        for d in (b, a3):
            assert d.wait(timeout=60) == 0
    finally:
        for d in daemons:
            if d.poll() is None:
                d.kill()
                d.wait()
        for pid in orphans:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    logs = "\n".join((tmp_path / f"{n}.log").read_text() for n in ("a", "b", "a2", "a3"))
    assert "Traceback" not in logs, logs[-3000:]

    rows = {r.slot: r for r in _rows(postgres, "every-second")}
    ran = sorted(s for s, r in rows.items() if r.status != "skipped")
    # No gap: every second from the first slot to the blackout has its row (nothing lost)...
    first_slot = datetime.strptime(ran[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    expected = []
    t = first_slot
    while t < end:
        expected.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        t += timedelta(seconds=1)
    assert ran == expected, (ran, expected)
    assert len(ran) >= 8
    # ...and each of them ran to a passed verdict.
    bad = {s: (rows[s].status, rows[s].verdict, rows[s].detail) for s in ran
           if (rows[s].status, rows[s].verdict) != ("finished", "passed")}  # fmt: skip
    assert not bad, bad
    assert all(
        rows[s].status == "skipped" and "test over" in rows[s].detail
        for s in rows
        if s >= expected[-1] and s not in ran
    )

    # Exactly one completed run per slot: one journal, one run-started event, distinct run ids.
    run_ids = []
    for s in ran:
        step = Path(rows[s].run_dir) / "0-quick"
        journal = json.loads((step / "journal.json").read_text())
        assert journal["chaoslab"]["verdict"] == "passed"
        started = [
            line for line in (step / "events.ndjson").read_text().splitlines() if '"run-started"' in line
        ]
        assert len(started) == 1, s
        run_ids.append(journal["chaoslab"]["run_id"])
    assert len(set(run_ids)) == len(ran)

    # The slot whose daemon was SIGKILLed: adopted, its orphaned run's result kept (not rerun).
    adopted = rows[first.slot]
    # (attempt 3 when the restarted daemon adopted it and was itself killed while waiting.)
    assert adopted.attempt >= 2 and str(a.pid) not in adopted.scheduler
    assert not list(Path(adopted.run_dir).glob("0-quick.crashed-*"))
    # The slot whose daemon and run were both killed: recovered, run again, the wreck kept aside.
    rerun = rows[second.slot]
    assert rerun.attempt >= 2 and str(a2.pid) not in rerun.scheduler
    assert len(list(Path(rerun.run_dir).glob("0-quick.crashed-*"))) == 1
    # Both surviving schedulers did real work (forced above); none is left registered, no run is left behind.
    assert len({r.scheduler for r in rows.values() if r.status == "finished"}) >= 2
    from chaoslab.scheduler.store import open_store

    store = open_store(postgres)
    try:
        left = store.schedulers()
    finally:
        store.close()
    assert all(str(d.pid) not in sid for d in (b, a3) for sid in left)
    assert not [
        p for p in orphans if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


LONG_S = 2.5


def test_long_runs_on_a_short_interval_never_overlap_and_nothing_is_dropped(
    postgres: str, tmp_path: Path
) -> None:
    long = dict(TRIVIAL)
    long["method"] = [{"type": "action", "name": "nap",
                       "provider": {"type": "process", "path": "sleep", "arguments": str(LONG_S)}}]  # fmt: skip
    (tmp_path / "quick.json").write_text(json.dumps(long))
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(seconds=12)
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        f"""name: long-runs
trigger: {{interval: 1s}}
blackouts: [{{from: "{end.isoformat()}", to: "{(end + timedelta(hours=1)).isoformat()}", reason: test over}}]
steps: [quick.json]
"""
    )
    env = dict(os.environ)
    env["CHAOSLAB_STORE"] = postgres
    env["CHAOSLAB_HOME"] = str(tmp_path / "home")
    runs = tmp_path / "runs"
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        daemons = [_daemon(env, scenario, runs, n, tmp_path) for n in ("l1", "l2")]

        def settled() -> bool:
            rows = _rows(postgres, "long-runs")
            past_end = any(
                r.slot >= (end + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ") for r in rows
            )
            return past_end and not any(r.status in ("claimed", "running") for r in rows)

        wait_until(
            settled,
            timeout_s=120,
            what="every slot before the blackout to be decided and finished",
            interval_s=0.1,
        )
        for d in daemons:
            d.send_signal(signal.SIGTERM)
        for d in daemons:
            assert d.wait(timeout=60) == 0
    finally:
        for d in daemons:
            if d.poll() is None:
                d.kill()
                d.wait()
    logs = "\n".join((tmp_path / f"{n}.log").read_text() for n in ("l1", "l2"))
    assert "Traceback" not in logs, logs[-3000:]
    rows = {r.slot: r for r in _rows(postgres, "long-runs")}
    decided = sorted(s for s, r in rows.items() if "test over" not in r.detail)
    first = datetime.strptime(decided[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    expected = []
    t = first
    while t < end:
        expected.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        t += timedelta(seconds=1)
    assert decided == expected  # nothing dropped: every slot of the range has its row
    ran = [s for s in decided if rows[s].status == "finished"]
    busy = [s for s in decided if rows[s].status == "skipped"]
    assert set(ran) | set(busy) == set(decided), {s: (rows[s].status, rows[s].detail) for s in decided}
    assert len(ran) >= 3 and len(busy) >= 3
    assert all(rows[s].verdict == "passed" for s in ran)
    # The runs themselves never overlapped: each run's first and last event, in order.
    spans = []
    for s in ran:
        events = (Path(rows[s].run_dir) / "0-quick" / "events.ndjson").read_text().splitlines()
        ts = [json.loads(line)["ts"] for line in events]
        spans.append((min(ts), max(ts), s))
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
        assert start_b > end_a, (a, b, end_a, start_b)
    # Every skipped slot names the slot that was running then, and that one ran.
    for s in busy:
        holder = rows[s].detail.removeprefix("busy: slot ").split(" ", 1)[0]
        assert rows[s].detail.startswith("busy: slot ") and holder in ran and holder < s, rows[s].detail


class _Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t


class _Refuse:
    name = "test-gate"

    def check(self, ctx: Any) -> Any:
        from chaoslab.scheduler.checks import CheckResult

        return CheckResult(gate=self.name, ok=False, detail="closed for the test")


def test_two_schedulers_through_both_dst_changes_claim_each_day_once(postgres: str, tmp_path: Path) -> None:
    from chaoslab.scheduler.daemon import Scheduler, SchedulerConfig
    from chaoslab.scheduler.scenario import load_scenario
    from chaoslab.scheduler.store import open_store

    (tmp_path / "quick.json").write_text(json.dumps(TRIVIAL))
    got: list[str] = []
    for season, first_day in (
        ("dst-spring", datetime(2026, 3, 27, tzinfo=UTC)),
        ("dst-autumn", datetime(2026, 10, 23, tzinfo=UTC)),
    ):
        path = tmp_path / f"{season}.yaml"
        path.write_text(
            f'name: {season}\ntimezone: Europe/Berlin\ntrigger: {{cron: "30 2 * * *"}}\nsteps: [quick.json]\n'
        )
        sc = load_scenario(path)
        clock = _Clock(first_day)
        stores = [open_store(postgres), open_store(postgres)]
        scheds = [
            Scheduler([sc], st, SchedulerConfig(runs_root=tmp_path / "runs", home=env_state().home), clock=clock,
                      gates_for=lambda s: [_Refuse()], scheduler_id=f"{season}-{i}")
            for i, st in enumerate(stores)
        ]  # fmt: skip
        try:
            for _ in range(4 * 24 * 4):  # four days, a tick every 15 minutes, both schedulers
                for sched in scheds:
                    sched.tick()
                for sched in scheds:
                    sched.wait_idle(30)
                clock.t += timedelta(minutes=15)
        finally:
            for sched in scheds:
                sched.close()
            for st in stores:
                st.close()
        rows = _rows(postgres, season)
        assert all(r.status == "refused" for r in rows), [(r.slot, r.status, r.detail) for r in rows]
        assert len({r.scheduler for r in rows}) >= 1
        got += [r.slot for r in rows]
    assert got == [
        "2026-03-27T01:30:00Z", "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",  # 02:30 does not exist: 03:00 CEST
        "2026-03-30T00:30:00Z",
        "2026-10-23T00:30:00Z", "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",  # 02:30 CEST, once (02:30 CET is the same wall time)
        "2026-10-26T01:30:00Z",
    ]  # fmt: skip
