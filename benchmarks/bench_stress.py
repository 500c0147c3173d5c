"""CPU stress accuracy: the built-in backend against stress-ng, in one invocation.

For L in 25/50/75 % and N in 1/2 workers, runs the stress driver's ``cpu`` fault with
``backend: builtin`` and with ``backend: stress-ng`` (``stress-ng --cpu N --cpu-load L``)
and measures the achieved load per worker from the CPU time of the stressor processes
(/proc via psutil) over a steady window. Target: built-in within ±5 points of L.

    .venv/bin/python benchmarks/bench_stress.py [--window 2.5]

Total run time is about 12 × (window + 1.2) s (~45 s by default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.stress import StressDriver, stressors

LOADS = (25, 50, 75)
WORKERS = (1, 2)
WARMUP_S = 0.6


def achieved(
    driver: StressDriver, ctx: DriverContext, backend: str, workers: int, load: int, window: float
) -> float:
    op = driver.operation("cpu")
    assert op is not None
    args = {"workers": workers, "load": load, "backend": backend}
    record = driver.inject(ctx, driver.prepare(ctx, op, args, None, WARMUP_S + window + 1.5))
    try:
        time.sleep(WARMUP_S)
        procs = stressors(record)

        def cpu() -> dict[int, float]:
            out = {}
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    out[p.pid] = sum(p.cpu_times()[:2])
            return out

        t0, c0 = time.monotonic(), cpu()
        time.sleep(window)
        t1, c1 = time.monotonic(), cpu()
        used = sum(c1[pid] - c0[pid] for pid in c0 if pid in c1)
        return 100.0 * used / (t1 - t0) / workers
    finally:
        driver.revert(ctx, record)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=2.5, help="measurement window (s)")
    opts = parser.parse_args()
    have_ng = shutil.which("stress-ng") is not None
    driver = StressDriver()
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp:
        ctx = DriverContext(run_id="bench", state_dir=Path(tmp), lab_dir=Path(tmp) / "lab")
        load1, _, _ = os.getloadavg()
        print(f"host: {os.cpu_count()} CPUs, load average {load1:.2f} at start")
        print(f"{'L%':>4} {'N':>2} | {'builtin':>8} {'err':>6} | {'stress-ng':>9} {'err':>6} | {'ratio':>6}")
        worst = 0.0
        started = time.monotonic()
        for workers in WORKERS:
            for load in LOADS:
                ours = achieved(driver, ctx, "builtin", workers, load, opts.window)
                theirs = (
                    achieved(driver, ctx, "stress-ng", workers, load, opts.window)
                    if have_ng
                    else float("nan")
                )
                worst = max(worst, abs(ours - load))
                ratio = ours / theirs if have_ng and theirs > 0 else float("nan")
                print(
                    f"{load:>4} {workers:>2} | {ours:>8.1f} {ours - load:>+6.1f} | "
                    f"{theirs:>9.1f} {theirs - load:>+6.1f} | {ratio:>6.3f}"
                )
        print(
            f"worst built-in error: {worst:.1f} points (target ±5); took {time.monotonic() - started:.0f} s"
        )
        if not have_ng:
            print("stress-ng not installed: anchor column is empty (apt-get install stress-ng)")
        load1_end, _, _ = os.getloadavg()
        if load1_end > 0.75 * (os.cpu_count() or 1) + 2 * max(WORKERS):
            print(f"warning: host was busy (load {load1_end:.2f}); both columns undershoot together")
    return 0 if worst <= 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
