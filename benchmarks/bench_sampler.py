"""SLI sampler throughput against wrk, and the accuracy of its reported percentiles.

    .venv/bin/python benchmarks/bench_sampler.py [--seconds 4]

1. Brings up a private lab (temporary CHAOSLAB_HOME), then for two targets — the lab's
   balancer ``/`` and one replica's ``/`` directly — measures:
   - wrk (anchor; Debian package ``wrk``), one thread, 64 connections, closed loop;
   - the sampler (open loop, one thread): offered rates rise until fewer than 99% of
     requests succeed or the achieved rate falls below 95% of the offered one; the best
     sustained rate is reported with the sampler's CPU seconds per 1,000 requests.
   The ratio sampler/wrk is printed. wrk is closed-loop and written in C, so the ratio
   says how close a Python open-loop sampler comes to saturating the same target.
2. From the sampler's recorded samples: the error of the reported p50/p99 (log-histogram
   per-second series, merged) against exact percentiles of the raw samples.

Also prints lab up/down wall times. Needs no root; everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from chaoslab.lab import control
from chaoslab.sli.base import ExactLatencies, hist_quantile
from chaoslab.sli.loadgen import LoadGenerator


def wrk(url: str, seconds: float) -> float | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{max(1, int(seconds))}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def sampler_at(url: str, rate: float, seconds: float) -> tuple[float, float, float, LoadGenerator]:
    """Run at ``rate``; return (achieved good/s, success ratio, CPU s per 1k requests, gen)."""
    gen = LoadGenerator(url=url, rate=rate, max_duration_s=seconds, timeout_s=1.0, max_connections=256)
    cpu0 = time.process_time()
    gen.start()
    gen.wait(seconds + 30)
    gen.stop()
    cpu = time.process_time() - cpu0
    n = len(gen.code)
    good = sum(1 for c in gen.code if 200 <= c < 400)
    return good / seconds, (good / n if n else 0.0), cpu / max(n, 1) * 1000, gen


def sampler_max(url: str, seconds: float) -> tuple[float, float, LoadGenerator | None]:
    best, best_cpu, best_gen = 0.0, 0.0, None
    for rate in (1000, 2000, 4000, 6000, 8000, 12000, 16000, 24000):
        achieved, ok_ratio, cpu_per_k, gen = sampler_at(url, rate, seconds)
        print(
            f"    offered {rate:>6}/s  achieved {achieved:>8.0f}/s  ok {ok_ratio:6.2%}  "
            f"cpu {cpu_per_k:.3f}s/1k req"
        )
        if ok_ratio < 0.99 or achieved < 0.95 * rate:
            break
        best, best_cpu, best_gen = achieved, cpu_per_k, gen
        time.sleep(0.5)  # let the target drain
    return best, best_cpu, best_gen


def percentile_error(gen: LoadGenerator) -> None:
    exact = ExactLatencies(gen.latency[i] for i in range(len(gen.code)) if 200 <= gen.code[i] < 400)
    merged: dict[int, int] = {}
    for row in gen.series():
        for k, v in row.hist.items():
            merged[k] = merged.get(k, 0) + v
    print(f"  percentile accuracy over {exact.n} samples (reported = merged per-second log histogram):")
    for q in (0.5, 0.99):
        true = exact.value_at_rank(math.ceil(q * exact.n))
        rep = hist_quantile(merged, q)
        assert rep is not None
        print(
            f"    p{q * 100:g}: exact {true * 1e3:8.3f} ms  reported {rep * 1e3:8.3f} ms  "
            f"error {abs(rep - true) / true:6.3%}"
        )
    worst = 0.0
    for row in gen.series():
        lo, hi = row.t - gen.epoch, row.t - gen.epoch + 1
        sec = [
            gen.latency[i]
            for i in range(len(gen.code))
            if lo <= gen.sched[i] < hi and 200 <= gen.code[i] < 400
        ]
        if not sec or row.p99 is None:
            continue
        true = sorted(sec)[math.ceil(0.99 * len(sec)) - 1]
        worst = max(worst, abs(row.p99 - true) / true)
    print(f"    worst per-second p99 error: {worst:.3%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as home:
        base = Path(home)
        os.environ["CHAOSLAB_HOME"] = home
        t = time.perf_counter()
        state = control.up(3, 1.0, base)
        up_s = time.perf_counter() - t
        try:
            via = "via fault proxy" if state.raw.get("proxy") else "direct"
            targets = {
                f"lab balancer / ({via})": f"http://127.0.0.1:{state.component('lb').port}/",
                "one replica / (direct)": f"http://127.0.0.1:{state.component('replica-1').port}/",
            }
            last_gen = None
            for label, url in targets.items():
                print(f"target: {label}  {url}")
                anchor = wrk(url, args.seconds)
                time.sleep(0.5)
                best, cpu, gen = sampler_max(url, args.seconds)
                last_gen = gen or last_gen
                if anchor:
                    print(f"  wrk -t1 -c64: {anchor:>8.0f} req/s")
                    print(
                        f"  sampler     : {best:>8.0f} req/s sustained (open loop)  "
                        f"ratio sampler/wrk = {best / anchor:.2f}"
                    )
                else:
                    print(f"  sampler     : {best:>8.0f} req/s  (wrk not installed: apt-get install wrk)")
                print(
                    f"  sampler CPU : {cpu:.3f} s per 1,000 requests -> "
                    f"{1000 / cpu if cpu else 0:.0f} req per CPU-second"
                )
            if last_gen is not None:
                percentile_error(last_gen)
        finally:
            t = time.perf_counter()
            control.down(base)
            down_s = time.perf_counter() - t
        print(f"lab up {up_s:.2f}s, lab down {down_s:.2f}s")


if __name__ == "__main__":
    main()
