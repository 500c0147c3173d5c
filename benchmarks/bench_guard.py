"""Guard: from the first bad request (onset) to every fault reverted and verified clean.

Against the lab (``chaoslab.lab.control.running_lab``, three replicas behind the load
balancer, each behind its fault proxy), each run injects three concurrent faults of
three kinds through the real ``chaoslab.session.run_experiment`` (ledger, locks, load at
200 req/s, guard — what ``chaoslab run`` does):

- ``proxy.down`` on replica-1 (connections refused),
- ``process.suspend`` on replica-2's process (SIGSTOP; the LB's per-try timeout hits),
- ``proxy.timeout`` on replica-3 (data black-holed),

so every replica fails and the LB answers errors: a total outage. Two guards, side by
side, the same number of runs each:

- **sequential** (``guard: {risk: 0.01, slow: 100ms}``): the mixture SPRT of
  ``chaoslab.sli.sequential`` with the hard limit as an extra brake; a request unanswered
  after 100 ms counts as bad (two of the three faults make requests hang, not fail);
- **fixed window** (``guard: {sequential: false, hard_limit: {error_rate: 0.5, for: 1s}}``):
  the guard chaoslab had before, which waits out its window.

Per run, from the journal (``chaoslab.guard_timing``): onset → detected and onset →
clean (the last ``clean-checked``), and trip → clean (``breach_to_clean_s``); p50 / p95 /
max over the runs. Target: onset → clean p95 under 500 ms.

False aborts: a healthy lab run takes seconds, so the false-abort rate is measured by a
documented simulation of the guard on healthy request streams (``--streams`` streams of
``--stream-s`` seconds at 200 req/s; bad requests independent at rate p), with the same
classes the guard runs (``MixtureSPRT``) and the fixed-window rule replayed on the same
streams. At p = the tolerated rate (the worst case the risk is stated for) the
sequential guard must abort at most ``risk`` of the streams.

    .venv/bin/python benchmarks/bench_guard.py [--runs 20] [--healthy-runs 100] [--streams 1000]

``--healthy-runs N`` adds N healthy lab runs (a 1 ms latency fault on one replica, the
sequential guard with the default ``slow``, or ``--healthy-slow 100ms``) and counts the
ones it aborted.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

TARGET_P95_S = 0.5
RATE = 200
RISK = 0.01

EXPERIMENT: dict[str, Any] = {
    "title": "guard brake: every replica fails",
    "description": "three concurrent faults of three drivers; the guard must revert all at once",
    "load": {"target": "lab:lb", "path": "/", "rate": RATE, "timeout": "2s"},
    "windows": {"baseline": "0.5s", "after": "0s"},
    # The lab answers in a few ms: a request unanswered after 100 ms counts as bad (the
    # default is the load's overdue age, 1 s, which a hang-type outage would wait out).
    "guard": {"risk": RISK, "slow": "100ms"},
    "lease": "20s",
    "method": [
        {"do": "proxy.down", "target": "lab:replica-1", "name": "refuse-replica-1"},
        {"do": "process.suspend", "target": "lab:replica-2", "name": "freeze-replica-2"},
        {
            "do": "proxy.timeout",
            "target": "lab:replica-3",
            "name": "blackhole-replica-3",
            "with": {"timeout": 0},
        },
        {
            "type": "action",
            "name": "wait-for-the-brake",
            "provider": {
                "type": "process",
                "path": sys.executable,
                "arguments": ["-c", "import time; time.sleep(4)"],
            },
        },
    ],
}
ERRORS: list[str] = []  # runs that ended in a driver error instead of a guard abort
FIXED_WINDOW = {"sequential": False, "hard_limit": {"error_rate": 0.5, "for": "1s"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def lb_healthy(status_url: str) -> bool:
    try:
        with urllib.request.urlopen(status_url, timeout=2) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return all(bool(u["healthy"]) for u in doc["upstreams"].values())


def wait_healthy(status_url: str, timeout_s: float = 15.0) -> None:
    end = time.monotonic() + timeout_s
    while not lb_healthy(status_url):
        if time.monotonic() > end:
            raise SystemExit(f"the lab did not become healthy again: {status_url}")
        time.sleep(0.1)


def one_run(exp_path: Path, work: Path, i: int) -> dict[str, Any]:
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.compile import load_experiment
    from chaoslab.engine.events import EventBus
    from chaoslab.engine.journal import read_events
    from chaoslab.engine.runner import RunOptions, new_run_id
    from chaoslab.paths import StatePaths
    from chaoslab.session import SessionOptions, run_experiment

    state = StatePaths.from_environment()  # main() points CHAOSLAB_HOME at our own home
    registry = DriverRegistry()
    exp = load_experiment(str(exp_path), registry=registry)
    result, _ = run_experiment(
        exp,
        registry=registry,
        options=RunOptions(run_dir=work / f"run-{i}", state=state),
        bus=EventBus(),
        run_id=new_run_id(),
        session=SessionOptions(state=state),
    )
    if result.verdict.value == "error":  # the run could not start its faults (reported, not timed)
        return {"error": result.reason}
    if result.verdict.value != "aborted" or result.breach_to_clean_s is None:
        raise SystemExit(f"run {i}: expected a guard abort, got {result.verdict.value}: {result.reason}")
    events = read_events(result.events_path)
    checked = [e for e in events if e["kind"] == "clean-checked"]
    tripped = next(e for e in events if e["kind"] == "guard-tripped")
    # Per fault: trip -> its clean check (the revert and the check, in parallel with the others).
    reverts = [(e["driver"], e["ts"] - tripped["ts"]) for e in checked]
    if len(checked) != 3 or not all(e["clean"] for e in checked):
        raise SystemExit(f"run {i}: not every fault verified clean: {checked}")
    timing = result.journal["chaoslab"]["guard_timing"]
    if timing is None or timing["time_to_clean_s"] is None:
        raise SystemExit(f"run {i}: the journal has no onset -> clean: {timing}")
    return {
        "onset_to_detect": timing["time_to_detect_s"],
        "onset_to_clean": timing["time_to_clean_s"],
        "trip_to_clean": result.breach_to_clean_s,
        "reason": timing["reason"],
        "slow_s": timing["slow_s"],
        "reverts": reverts,
        "n": timing["decision"].get("n"),
    }


HEALTHY: dict[str, Any] = {
    "title": "guard on a healthy system",
    "description": "a fault that harms nobody (1 ms of latency on one replica): the guard must not abort",
    "load": {"target": "lab:lb", "path": "/", "rate": RATE, "timeout": "2s"},
    "windows": {"baseline": "0.5s", "after": "0s"},
    "guard": EXPERIMENT["guard"],
    "lease": "20s",
    "method": [
        {
            "do": "proxy.latency",
            "target": "lab:replica-1",
            "name": "one-ms",
            "with": {"latency": "1ms"},
            "duration": "2s",
        }
    ],
}


def healthy_runs(runs: int, work: Path, slow: str | None) -> tuple[int, int, dict[str, int]]:
    """(aborted, runs, verdicts) of the sequential guard on healthy lab runs."""
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.compile import load_experiment
    from chaoslab.engine.events import EventBus
    from chaoslab.engine.runner import RunOptions, new_run_id
    from chaoslab.lab.control import lb_url, running_lab
    from chaoslab.paths import StatePaths
    from chaoslab.session import SessionOptions, run_experiment

    path = work / "healthy.json"
    guard: dict[str, Any] = {"risk": RISK, **({"slow": slow} if slow else {})}
    path.write_text(json.dumps({**HEALTHY, "guard": guard}))
    verdicts: dict[str, int] = {}
    with running_lab(n_replicas=3, base_dir=StatePaths.from_environment().home) as state:
        status = lb_url(state, "/__lb/status")
        for i in range(runs):
            wait_healthy(status)
            registry = DriverRegistry()
            exp = load_experiment(str(path), registry=registry)
            result, _ = run_experiment(
                exp,
                registry=registry,
                options=RunOptions(run_dir=work / f"healthy-{i}", state=StatePaths.from_environment()),
                bus=EventBus(),
                run_id=new_run_id(),
                session=SessionOptions(state=StatePaths.from_environment()),
            )
            verdicts[result.verdict.value] = verdicts.get(result.verdict.value, 0) + 1
            if result.verdict.value == "aborted":
                timing = result.journal["chaoslab"].get("guard_timing") or {}
                print(
                    f"  healthy run {i} aborted: {result.reason}; "
                    f"{timing.get('bad')} of {timing.get('requests')} bad"
                )
    return verdicts.get("aborted", 0), runs, verdicts


def lab_runs(runs: int, work: Path) -> dict[str, list[dict[str, Any]]]:
    from chaoslab.lab.control import lb_url, running_lab
    from chaoslab.paths import StatePaths

    out: dict[str, list[dict[str, Any]]] = {"sequential": [], "fixed window": []}
    paths = {}
    for name, guard in (("sequential", EXPERIMENT["guard"]), ("fixed window", FIXED_WINDOW)):
        doc = copy.deepcopy(EXPERIMENT)
        doc["guard"] = guard
        paths[name] = work / f"guard-{name.replace(' ', '-')}.json"
        paths[name].write_text(json.dumps(doc))
    with running_lab(n_replicas=3, base_dir=StatePaths.from_environment().home) as state:
        status = lb_url(state, "/__lb/status")
        for _ in range(runs):
            for name in out:  # interleaved: both guards see the same machine load
                wait_healthy(status)
                for attempt in range(3):  # a run that errored (a driver under load) is run again
                    row = one_run(
                        paths[name], work, len(out[name]) * 2 + (name == "sequential") + 1000 * attempt
                    )
                    if "error" not in row:
                        out[name].append(row)
                        break
                    ERRORS.append(f"{name}: {row['error']}")
    return out


# --- false aborts: simulation on healthy streams ------------------------------------------


def fixed_window_trips(bad: list[bool], rate: float, window_s: float, limit: float) -> bool:
    """The old rule, replayed: every 100 ms, the error rate over the last ``window_s``
    (once 20 requests are in it) above ``limit`` trips."""
    per_check = max(1, round(rate * 0.1))
    width = max(1, round(rate * window_s))
    prefix = [0]
    for b in bad:
        prefix.append(prefix[-1] + b)
    for end in range(per_check, len(bad) + 1, per_check):
        start = max(0, end - width)
        n = end - start
        if n >= 20 and (prefix[end] - prefix[start]) / n > limit:
            return True
    return False


def simulate(streams: int, stream_s: float, p: float, p0: float, seed: int) -> dict[str, float]:
    from chaoslab.sli.sequential import MixtureSPRT

    n = round(RATE * stream_s)
    seq = fixed = fixed_burn = 0
    for s in range(streams):
        rng = random.Random(seed * 1_000_003 + s)
        bad = [rng.random() < p for _ in range(n)]
        test = MixtureSPRT(p0=p0, risk=RISK, epoch=max(50, math.ceil(RATE * 2.0)))
        seq += any(test.add(b) is not None for b in bad)  # any() stops at the trip
        fixed += fixed_window_trips(bad, RATE, 1.0, 0.5)
        fixed_burn += fixed_window_trips(bad, RATE, 5.0, p0)
    return {
        "sequential": seq / streams,
        "fixed 50%/1s": fixed / streams,
        "fixed burn/5s": fixed_burn / streams,
    }


def fixed_window_delay(bad: list[bool], rate: float, window_s: float, limit: float) -> int | None:
    """Requests until the old rule trips (checks every 100 ms), or None."""
    per_check = max(1, round(rate * 0.1))
    width = max(1, round(rate * window_s))
    prefix = [0]
    for b in bad:
        prefix.append(prefix[-1] + b)
    for end in range(per_check, len(bad) + 1, per_check):
        start = max(0, end - width)
        if end - start >= 20 and (prefix[end] - prefix[start]) / (end - start) > limit:
            return end
    return None


def detection_by_severity(streams: int, p0: float) -> list[tuple[float, float, float, float | None, int]]:
    """(severity, sequential median ms, p95 ms, fixed median ms or None, fixed trips) from
    the onset of an outage of each severity, 2 s of healthy traffic before it; requests
    judged at once (the lab adds ``slow`` and the check interval on top)."""
    from chaoslab.sli.sequential import MixtureSPRT

    out = []
    ms = 1000.0 / RATE
    for severity in (1.0, 0.8, 0.5, 0.3, 0.2):
        seq: list[int] = []
        fixed: list[int] = []
        for s in range(streams):
            rng = random.Random(77_000 + s)
            healthy = [rng.random() < 0.001 for _ in range(2 * RATE)]
            outage = [rng.random() < severity for _ in range(10 * RATE)]
            test = MixtureSPRT(p0=p0, risk=RISK, epoch=max(50, math.ceil(RATE * 2.0)))
            for i, b in enumerate(healthy + outage):
                if test.add(b) is not None:
                    seq.append(i + 1 - len(healthy))
                    break
            trip = fixed_window_delay(healthy + outage, RATE, 1.0, 0.5)
            if trip is not None:
                fixed.append(trip - len(healthy))
        seq.sort()
        fixed.sort()
        out.append(
            (
                severity,
                statistics.median(seq) * ms if seq else math.nan,
                percentile([float(x) for x in seq], 95) * ms if seq else math.nan,
                statistics.median(fixed) * ms if fixed else None,
                len(fixed),
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="lab runs per guard")
    ap.add_argument("--streams", type=int, default=1000, help="simulated healthy streams per rate")
    ap.add_argument("--stream-s", type=float, default=30.0, help="seconds of requests per stream")
    ap.add_argument("--skip-lab", action="store_true", help="only the simulation")
    ap.add_argument("--healthy-runs", type=int, default=0, help="healthy lab runs (false aborts)")
    ap.add_argument(
        "--healthy-slow", default=None, help="guard.slow of the healthy runs (default: the guard's, 1 s)"
    )
    args = ap.parse_args()
    load1 = os.getloadavg()[0]
    results: dict[str, list[dict[str, Any]]] = {}
    healthy: tuple[int, int, dict[str, int]] | None = None
    t0 = time.monotonic()
    if not args.skip_lab:
        with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
            work = Path(tmp)
            # Our own state directory: our own lab, ledger and locks, none of the user's.
            os.environ["CHAOSLAB_HOME"] = str(work / "home")
            results = lab_runs(args.runs, work)
            wall = time.monotonic() - t0
            if args.healthy_runs:
                healthy = healthy_runs(args.healthy_runs, work, args.healthy_slow)
    wall = time.monotonic() - t0 if not results else wall
    print(
        f"machine: {os.cpu_count()} cores, load average {load1:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    if results and results["sequential"]:
        print(
            f"total outage at {RATE} req/s, 3 concurrent faults, "
            f"{args.runs} lab runs per guard ({wall:.0f} s)"
        )
        print("  (proxy.down replica-1, process.suspend replica-2, proxy.timeout replica-3; lab, 3 replicas)")
        print(
            f"  {'':16s} {'onset->detect p50/p95':>24s} {'onset->clean p50/p95/max':>30s}"
            f" {'trip->clean p95':>16s}"
        )
        for name, rows in results.items():
            det = [r["onset_to_detect"] for r in rows]
            cln = [r["onset_to_clean"] for r in rows]
            trip = [r["trip_to_clean"] for r in rows]
            print(
                f"  {name:16s} {statistics.median(det) * 1000:9.0f} / {percentile(det, 95) * 1000:6.0f} ms"
                f" {statistics.median(cln) * 1000:11.0f} / {percentile(cln, 95) * 1000:5.0f} / "
                f"{max(cln) * 1000:5.0f} ms {percentile(trip, 95) * 1000:11.0f} ms"
            )
        if ERRORS:
            print(f"  runs that ended in a driver error and were run again: {len(ERRORS)}")
            for e in ERRORS[:5]:
                print(f"    {e[:160]}")
        p95 = percentile([r["onset_to_clean"] for r in results["sequential"]], 95)
        print(
            f"  sequential onset->clean p95 / target ({TARGET_P95_S * 1000:g} ms): {p95 / TARGET_P95_S:.2f}"
            f"  -> {'OK' if p95 < TARGET_P95_S else 'MISSED'}"
        )
        seq = results["sequential"]
        print(f"  sequential trips: {sorted({r['reason'].split(':')[0] for r in seq})}")
        print(
            f"  slow threshold {seq[0]['slow_s'] * 1000:.0f} ms; requests the deciding test saw: "
            f"{', '.join(str(r['n']) for r in seq)}"
        )
        for name, rows in results.items():
            slowest = [max(r["reverts"], key=lambda x: x[1]) for r in rows]
            print(
                f"  {name}: slowest revert + check per run p50/p95 "
                f"{statistics.median(x[1] for x in slowest) * 1000:.0f} / "
                f"{percentile([x[1] for x in slowest], 95) * 1000:.0f} ms "
                f"(by driver: {sorted({x[0] for x in slowest})})"
            )
    if healthy is not None:
        aborted, n, verdicts = healthy
        print(
            f"false aborts on healthy lab runs (sequential guard, risk {RISK:g}, "
            f"slow {args.healthy_slow or 'default (1 s)'}; a 1 ms "
            f"latency fault for 2 s at {RATE} req/s): {aborted} of {n} ({verdicts})"
        )
    p0 = 10 * (1 - 0.99)  # the default tolerated rate: burn rate 10 on a 99% objective
    print(
        f"false aborts, simulated: {args.streams} healthy streams of {args.stream_s:g} s at {RATE} req/s "
        f"per rate; tolerated rate {p0:g}, risk {RISK:g}"
    )
    print(f"  {'bad rate p':>12s} {'sequential':>11s} {'fixed 50%/1s':>13s} {'fixed burn/5s':>14s}")
    worst = 0.0
    for i, p in enumerate((0.001, 0.05, p0)):
        r = simulate(args.streams, args.stream_s, p, p0, seed=i + 1)
        worst = max(worst, r["sequential"]) if p <= p0 else worst
        print(f"  {p:12g} {r['sequential']:11.4f} {r['fixed 50%/1s']:13.4f} {r['fixed burn/5s']:14.4f}")
    print(
        "detection delay from onset by outage severity, simulated "
        f"({max(20, args.streams // 5)} outages each, 10 s long, at {RATE} req/s):"
    )
    print(f"  {'bad rate':>9s} {'sequential p50/p95':>20s} {'fixed 50%/1s p50 (trips)':>28s}")
    for severity, med, p95, fixed, trips in detection_by_severity(max(20, args.streams // 5), p0):
        fixed_txt = f"{fixed:.0f} ms ({trips})" if fixed is not None else f"never ({trips})"
        print(f"  {severity:9g} {med:9.0f} / {p95:5.0f} ms {fixed_txt:>28s}")
    print(
        f"  worst sequential false-abort rate {worst:.4f} vs risk {RISK:g}: "
        f"{'OK' if worst <= RISK else 'OVER'}"
        "  (fixed 50%/1s never aborts a healthy stream, but waits out its window on an outage;"
        " fixed burn/5s has no stated risk)"
    )


if __name__ == "__main__":
    main()
