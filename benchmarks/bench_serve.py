"""The control room under load: page loads with 10 watchers on a live run and 1,000 runs.

Set-up, all in a temporary CHAOSLAB_HOME:

- 1,000 finished run directories written by chaoslab's own ``EventLog`` (run-started,
  60 SLI ticks, a fault injected and reverted, run-finished), titles, tags and verdicts
  varied, so History has something to filter;
- one live run: this process registers it (``register_run``, as ``chaoslab run`` does)
  and appends an SLI tick every 100 ms (ten times a real run's rate) to its event log;
- ``chaoslab serve`` as a user starts it (a subprocess, 127.0.0.1, port 0);
- 10 watchers: each holds the live run's SSE stream open (``/runs/<id>/stream``) and
  counts the ticks it receives.

Then one client loads the pages in turn (Now, History unfiltered / filtered / page 5,
a run page, Calendar of the repository's scenarios, the Now JSON), LOADS times in all, and
reports the latency of each (p50, p95, max) and of all together. The target (issue 21):
p95 under 200 ms. The first History load (summaries not cached yet) is reported apart.
The machine's load average is printed before and after: the benchmark shares its cores
with whatever else runs.

Bounded: LOADS requests, DEADLINE_S in total; the server and watchers are stopped at
the end. Exits 1 if the p95 target is missed.

    .venv/bin/python benchmarks/bench_serve.py
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from chaoslab.engine import events as ev
from chaoslab.engine.journal import EventLog
from chaoslab.safety.halt import register_run

RUNS = 1000
WATCHERS = 10
LOADS = 700
DEADLINE_S = 300.0
TARGET_P95_MS = 200.0
TITLES = ("Slow replica breaks p99", "Kill a replica", "Partition replica-2", "CPU stress on the lab")
VERDICTS = ("passed", "passed", "passed", "deviated", "aborted", "inconclusive")


def make_runs(root: Path) -> None:
    t0 = time.time() - RUNS * 60
    for i in range(RUNS):
        run_id = f"bench-{i:04d}"
        log = EventLog(root / run_id / "events.ndjson")
        ts = t0 + i * 60
        tags = ["lab", TITLES[i % 4].split()[0].lower()]
        log(
            ev.RunStarted(
                run_id=run_id, ts=ts, title=TITLES[i % 4], source="x.yaml", pid=1, experiment={"tags": tags}
            )
        )
        fault = {"run_id": run_id, "fault_id": f"f{i}", "driver": "proxy", "operation": "latency"}
        for k in range(60):
            log(
                ev.SLITick(
                    run_id=run_id,
                    ts=ts + k,
                    source="load",
                    rate=200.0,
                    availability=1.0,
                    p50_ms=2.0,
                    p99_ms=9.0,
                )
            )
            if k == 10:
                log(ev.FaultInjected(**fault, ts=ts + k, target="lab:replica-1", lease_s=30.0, record={}))
            if k == 40:
                log(ev.FaultReverted(**fault, ts=ts + k, ok=True))
        verdict = VERDICTS[i % len(VERDICTS)]
        log(
            ev.RunFinished(
                run_id=run_id, ts=ts + 61, verdict=verdict, exit_code=0, reason="", duration_s=61.0
            )
        )
        log.close()


def live_writer(root: Path, home: Path, stop: threading.Event, ready: threading.Event) -> None:
    run_id = "bench-live"
    with register_run(run_id, home=home):
        log = EventLog(root / run_id / "events.ndjson")
        log(
            ev.RunStarted(
                run_id=run_id,
                title="Live run",
                source="x.yaml",
                pid=os.getpid(),
                experiment={"tags": ["live"]},
            )
        )
        ready.set()
        end = time.monotonic() + DEADLINE_S
        while not stop.is_set() and time.monotonic() < end:
            log(
                ev.SLITick(
                    run_id=run_id, source="load", rate=200.0, availability=0.999, p50_ms=2.0, p99_ms=12.0
                )
            )
            stop.wait(0.1)
        log(ev.RunFinished(run_id=run_id, verdict="passed", exit_code=0, reason="", duration_s=1.0))
        log.close()


def watcher(url: str, counts: list[int], n: int, stop: threading.Event) -> None:
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=30.0)) as c:
            with c.stream("GET", f"{url}/runs/bench-live/stream") as r:
                for line in r.iter_lines():
                    if line.startswith("event: sli-tick"):
                        counts[n] += 1
                    if stop.is_set():
                        return
    except httpx.HTTPError:
        return


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    print(f"load average before: {os.getloadavg()}  (cores: {os.cpu_count()})")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    home, runs = tmp / "home", tmp / "runs"
    t = time.monotonic()
    make_runs(runs)
    print(f"wrote {RUNS} run directories in {time.monotonic() - t:.1f}s")
    stop, ready = threading.Event(), threading.Event()
    writer = threading.Thread(target=live_writer, args=(runs, home, stop, ready), daemon=True)
    writer.start()
    ready.wait(10)
    log = tmp / "serve.log"
    env = {**os.environ, "CHAOSLAB_HOME": str(home), "CHAOSLAB_SERVE_TOKEN": "bench-token-0123456789abcdef"}
    with log.open("w") as err:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaoslab.cli",
                "serve",
                "--port",
                "0",
                "--runs",
                str(runs),
                "-s",
                str(Path(__file__).resolve().parents[1] / "scenarios"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    counts = [0] * WATCHERS
    threads: list[threading.Thread] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline and server.poll() is None:
            m = re.search(r"control room on (http://\S+)/", log.read_text())
            url = m.group(1) if m else None
            time.sleep(0.05)
        if url is None:
            print("server did not start:\n" + log.read_text())
            return 2
        with httpx.Client(base_url=url, timeout=30.0) as c:
            t = time.monotonic()
            c.get("/history").raise_for_status()
            print(f"first History load (summaries not cached): {1000 * (time.monotonic() - t):.0f} ms")
            cal = c.get("/calendar").text
            if "lab-weekday-gameday" not in cal:
                print("the calendar page does not show the repository's scenarios:\n" + cal)
                return 2
            for n in range(WATCHERS):
                th = threading.Thread(target=watcher, args=(url, counts, n, stop), daemon=True)
                th.start()
                threads.append(th)
            time.sleep(1.0)
            pages = {
                "now": "/",
                "history": "/history",
                "history filtered": "/history?experiment=kill&tag=lab&verdict=deviated",
                "history page 5": "/history?page=5",
                "run page": "/runs/bench-0500",
                "calendar": "/calendar",
                "now json": "/api/now",
            }
            times: dict[str, list[float]] = {k: [] for k in pages}
            end = time.monotonic() + DEADLINE_S
            for i in range(LOADS):
                if time.monotonic() > end:
                    break
                name = list(pages)[i % len(pages)]
                t = time.perf_counter()
                r = c.get(pages[name])
                times[name].append(1000 * (time.perf_counter() - t))
                r.raise_for_status()
        stop.set()
        all_ms = [v for vs in times.values() for v in vs]
        print(
            f"\n{len(all_ms)} page loads, {WATCHERS} SSE watchers on a live run, {RUNS + 1} runs in History"
        )
        print(f"{'page':<18} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, vs in times.items():
            print(
                f"{name:<18} {len(vs):>4} {statistics.median(vs):>8.1f} {pct(vs, 95):>8.1f} {max(vs):>8.1f}"
            )
        p95 = pct(all_ms, 95)
        print(
            f"{'all':<18} {len(all_ms):>4} {statistics.median(all_ms):>8.1f} {p95:>8.1f} {max(all_ms):>8.1f}"
        )
        print(f"SSE ticks received per watcher: min {min(counts)}, max {max(counts)}")
        print(f"load average after: {os.getloadavg()}")
        ok = p95 < TARGET_P95_MS and min(counts) > 0
        print(f"target p95 < {TARGET_P95_MS:.0f} ms with every watcher fed: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for th in threads:
            th.join(timeout=10)
        writer.join(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
