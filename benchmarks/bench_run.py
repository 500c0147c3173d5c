"""``chaoslab run`` versus ``chaos --no-version-check run`` on the same trivial experiment.

Both CLIs run the same file (one process probe, one process action) alternately, N times
each, in fresh temporary directories; we report the median and p90 wall time of each and
the ratio. Target: chaoslab at most half of Chaos Toolkit's wall time (ratio ≤ 0.50).

    .venv/bin/python benchmarks/bench_run.py [--runs 15]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
EXPERIMENT = HERE / "trivial.json"


def once(cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=60)
        took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    # pip byte-compiles every package it installs (chaostoolkit's included); an editable
    # chaoslab is compiled by .ci/setup. Do it here too so a just-edited tree is measured
    # as installed, not as "compile every module from source on each start".
    compileall.compile_dir(str(HERE.parent / "chaoslab"), quiet=1)
    chaoslab = [str(BIN / "chaoslab"), "run", str(EXPERIMENT)]
    chaos = [str(BIN / "chaos"), "--no-version-check", "run", str(EXPERIMENT)]
    once(chaoslab), once(chaos)  # warm the page cache for both
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.runs):
        ours.append(once(chaoslab))
        theirs.append(once(chaos))

    def p90(xs: list[float]) -> float:
        return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]

    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"{'runner':<34}{'median':>10}{'p90':>10}")
    print(f"{'chaoslab run':<34}{m_ours * 1000:>8.0f}ms{p90(ours) * 1000:>8.0f}ms")
    print(f"{'chaos --no-version-check run':<34}{m_theirs * 1000:>8.0f}ms{p90(theirs) * 1000:>8.0f}ms")
    ratio = m_ours / m_theirs
    print(
        f"ratio chaoslab/chaos (median): {ratio:.2f}  (target ≤ 0.50: {'met' if ratio <= 0.5 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
