"""Guard: time from an SLO breach to every fault reverted and verified clean.

Against the lab (``chaoslab.lab.control.running_lab``, three replicas behind the load
balancer, each behind its fault proxy), each run injects three concurrent faults of
three kinds through the real ``chaoslab.session.run_experiment`` (ledger, locks, load,
guard — what ``chaoslab run`` does):

- ``proxy.down`` on replica-1 (connections refused),
- ``process.suspend`` on replica-2's process (SIGSTOP; the LB's per-try timeout hits),
- ``proxy.timeout`` on replica-3 (data black-holed),

so every replica fails and the LB answers errors: the SLI fails hard, and the guard's
hard limit (error rate > 50 % for 1 s) trips. We record, per run:

- ``breach_to_clean_s`` from the journal (``RunResult.breach_to_clean_s``): guard trip to
  ``revert_all`` returning (every revert and every ``check_clean`` done, in parallel);
- breach to the last ``clean-checked`` event in the event log (what a reader of the log
  sees);

and print p50 / p95 / max over the runs. Target: p95 under 1 s. There is no peer to run
here as an anchor; the target and Chaos Mesh's default worst case (about 30 s of status
checks) are printed as ratios for scale.

    .venv/bin/python benchmarks/bench_guard.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

TARGET_P95_S = 1.0
CHAOS_MESH_S = 30.0

EXPERIMENT: dict[str, Any] = {
    "title": "guard brake: every replica fails",
    "description": "three concurrent faults of three drivers; the guard must revert all at once",
    "load": {"target": "lab:lb", "path": "/", "rate": 200, "timeout": "2s"},
    "windows": {"baseline": "0.5s", "after": "0s"},
    "guard": {"hard_limit": {"error_rate": 0.5, "for": "1s"}},
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
                "arguments": ["-c", "import time; time.sleep(3)"],
            },
        },
    ],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
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


def one_run(exp_path: Path, work: Path, i: int) -> tuple[float, float]:
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.events import EventBus
    from chaoslab.engine.journal import read_events
    from chaoslab.engine.runner import RunOptions, new_run_id
    from chaoslab.model.compile import load_experiment
    from chaoslab.session import run_experiment
    from chaoslab.sli.experiment import section_validators

    registry = DriverRegistry()
    exp = load_experiment(str(exp_path), registry=registry, section_validators=section_validators())
    result, _ = run_experiment(
        exp,
        registry=registry,
        options=RunOptions(run_dir=work / f"run-{i}"),
        bus=EventBus(),
        run_id=new_run_id(),
    )
    if result.verdict.value != "aborted" or result.breach_to_clean_s is None:
        raise SystemExit(f"run {i}: expected a guard abort, got {result.verdict.value}: {result.reason}")
    events = read_events(result.events_path)
    tripped = next(e for e in events if e["kind"] == "guard-tripped")
    checked = [e for e in events if e["kind"] == "clean-checked"]
    if len(checked) != 3 or not all(e["clean"] for e in checked):
        raise SystemExit(f"run {i}: not every fault verified clean: {checked}")
    return result.breach_to_clean_s, max(e["ts"] for e in checked) - tripped["breach_ts"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        work = Path(tmp)
        # Our own state directory: our own lab, ledger and locks, none of the user's.
        os.environ["CHAOSLAB_HOME"] = str(work / "home")
        from chaoslab.lab.control import lb_url, running_lab

        exp_path = work / "guard.json"
        exp_path.write_text(json.dumps(EXPERIMENT))
        journal_s: list[float] = []
        events_s: list[float] = []
        t0 = time.monotonic()
        with running_lab(n_replicas=3) as state:
            status = lb_url(state, "/__lb/status")
            for i in range(args.runs):
                wait_healthy(status)
                a, b = one_run(exp_path, work, i)
                journal_s.append(a)
                events_s.append(b)
        wall = time.monotonic() - t0
    print(f"guard breach -> every fault reverted and verified clean, {args.runs} runs, 3 concurrent faults")
    print("  (proxy.down replica-1, process.suspend replica-2, proxy.timeout replica-3; lab, 3 replicas)")
    for label, values in (
        ("journal breach_to_clean_s", journal_s),
        ("breach -> last clean-checked", events_s),
    ):
        print(
            f"  {label:30s} p50 {statistics.median(values) * 1000:7.1f} ms   "
            f"p95 {percentile(values, 95) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"
        )
    p95 = percentile(journal_s, 95)
    print(
        f"  p95 / target ({TARGET_P95_S:g} s): {p95 / TARGET_P95_S:.3f}"
        f"  -> {'OK' if p95 < TARGET_P95_S else 'MISSED'}"
    )
    print(f"  p95 / Chaos Mesh worst case (~{CHAOS_MESH_S:g} s): {p95 / CHAOS_MESH_S:.4f}")
    print("  For scale: Chaos Mesh's status checks take about 30 s in the worst case with their defaults.")
    print(f"  wall time {wall:.1f} s")


if __name__ == "__main__":
    main()
