"""One fault fanned out over 20 sshd hosts: parallel (concurrency 20) vs one host at a time.

The fleet is 20 real ``sshd`` instances on 127.0.0.1 (tests/integration/sshfleet.py).
The fault is a suspend of one marker ``sleep`` process (the only process it can match),
followed by its revert: prepare + inject + revert + check_clean, from a cold start
(new connections) in both modes, so connecting, host-key checking and the remote
scripts are all in the measured time. The anchor is the same driver with
``concurrency: 1`` in the same invocation. Prints both wall times and the ratio
(target: parallel at least 5x faster). Bounded: 2 rounds per mode, sshd stopped by pid.

Run: ``.venv/bin/python benchmarks/bench_ssh_fanout.py`` (as root, openssh-server
installed).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaoslab.drivers.base import DriverContext  # noqa: E402
from chaoslab.drivers.ssh.driver import SSHDriver  # noqa: E402
from tests.integration.sshfleet import SSHFleet, sshd_available  # noqa: E402

HOSTS = 20
ROUNDS = 2


def one_round(inventory: Path, marker: str, concurrency: int) -> float:
    driver = SSHDriver()  # cold: no connection reused from an earlier round
    ctx = DriverContext(run_id=uuid.uuid4().hex[:8], state_dir=Path(tempfile.gettempdir()))
    op = driver.operation("suspend")
    assert op is not None
    args = {"inventory": str(inventory), "pattern": marker, "concurrency": concurrency}
    started = time.perf_counter()
    try:
        record = driver.inject(ctx, driver.prepare(ctx, op, args, "ssh:*", 30))
        driver.revert(ctx, record)
        report = driver.check_clean(ctx, record)
        elapsed = time.perf_counter() - started
        assert report.clean, report.residue
        assert len(record.data["results"]) == HOSTS
        return elapsed
    finally:
        driver.close()


def main() -> int:
    if not sshd_available():
        print("needs root and /usr/sbin/sshd (Debian openssh-server)")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        root = Path(tmp)
        marker = f"chaoslab-bench-{uuid.uuid4().hex[:8]}"
        proc = subprocess.Popen([marker, "300"], executable="/bin/sleep")
        try:
            with SSHFleet(root=root / "fleet", size=HOSTS) as fleet:
                inventory = fleet.inventory(root / "inventory.yaml", concurrency=HOSTS)
                one_round(inventory, marker, HOSTS)  # warm the page cache of sshd and sh
                times: dict[str, list[float]] = {"parallel": [], "sequential": []}
                for _ in range(ROUNDS):
                    times["sequential"].append(one_round(inventory, marker, 1))
                    times["parallel"].append(one_round(inventory, marker, HOSTS))
        finally:
            proc.kill()
            proc.wait()
    seq = statistics.median(times["sequential"])
    par = statistics.median(times["parallel"])
    print(f"ssh fan-out: suspend+revert+check_clean of one fault over {HOSTS} sshd hosts, cold connections")
    print(f"  one host at a time (concurrency 1): median {seq:.3f}s  runs {_fmt(times['sequential'])}")
    print(f"  parallel (concurrency {HOSTS}):       median {par:.3f}s  runs {_fmt(times['parallel'])}")
    ratio = seq / par
    verdict = "OK" if ratio >= 5 else "BELOW TARGET"
    print(f"  ratio sequential/parallel: {ratio:.1f}x (target >= 5x): {verdict}")
    return 0


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
