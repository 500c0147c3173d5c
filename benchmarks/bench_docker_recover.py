"""Docker kill → healthy again: time to recover with a restart policy (``--restart always``).

Each run starts a fresh busybox httpd container (host network, 127.0.0.1, a wget
healthcheck every 250 ms) so Docker's restart back-off (which doubles the delay for
containers that crash within 10 s of starting) never inflates a run.

- chaoslab: ``docker`` driver ``kill`` (SIGKILL to the main process, as a crash), then
  ``revert``, which waits for healthy and reports ``time_to_recover_s`` from the daemon's
  timestamps.
- anchor: the same crash done by hand (``os.kill`` of the container's pid) and a bare
  ``docker inspect`` polling loop (every 10 ms) timing the return to healthy.

Prints p50/max of both and the ratio of the p50s (chaoslab's reported time over the
directly observed one: near 1.0 means the report is faithful). Bounded: at most RUNS
runs each and DEADLINE_S in total.

    .venv/bin/python benchmarks/bench_docker_recover.py
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.registry import DriverRegistry
from tests.integration.dockerlab import docker_lab

RUNS = 8
DEADLINE_S = 60.0
HEAL_TIMEOUT_S = 15.0


def _anchor_once(container: Any) -> float:
    container.reload()
    pid = container.attrs["State"]["Pid"]
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + HEAL_TIMEOUT_S
    seen_down = False
    while time.monotonic() < deadline:
        container.reload()
        st = container.attrs["State"]
        if st["Pid"] != pid or not st["Running"]:
            seen_down = True
        if seen_down and st["Running"] and st.get("Health", {}).get("Status") == "healthy":
            return time.time() - t0
        time.sleep(0.01)
    raise TimeoutError("anchor: container did not recover")


def _chaoslab_once(driver: Any, ctx: DriverContext, name: str) -> tuple[float, float]:
    op = driver.operation("kill")
    record = driver.prepare(ctx, op, {"timeout": f"{HEAL_TIMEOUT_S}s"}, f"name:{name}", None)
    t0 = time.monotonic()
    record = driver.inject(ctx, record)
    result = driver.revert(ctx, record)
    wall = time.monotonic() - t0
    if not result.reverted or result.time_to_recover_s is None:
        raise RuntimeError(f"chaoslab: not recovered: {result.detail}")
    if not driver.check_clean(ctx, record).clean:
        raise RuntimeError("chaoslab: not clean after recovery")
    return result.time_to_recover_s, wall


def _summary(label: str, xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    return f"{label:<34} n={len(ms):<2} p50={statistics.median(ms):7.1f} ms  max={ms[-1]:7.1f} ms"


def main() -> int:
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp,
        docker_lab(Path(tmp) / "dockerd.log") as lab,
    ):
        if not lab.image:
            print(f"cannot run: {lab.problem}")
            return 2
        driver = DriverRegistry().get("docker")
        ctx = DriverContext(run_id="bench", state_dir=Path(tmp) / "state", lab_dir=Path(tmp) / "lab", seed=1)
        ttr: list[float] = []
        walls: list[float] = []
        anchor: list[float] = []
        for _ in range(RUNS):
            if time.monotonic() - started > DEADLINE_S:
                break
            web, _port = lab.httpd(restart="always")
            t, wall = _chaoslab_once(driver, ctx, web.name)
            ttr.append(t)
            walls.append(wall)
            web.remove(force=True)
            web, _port = lab.httpd(restart="always")
            anchor.append(_anchor_once(web))
            web.remove(force=True)
        print("docker kill (SIGKILL, --restart always) -> healthy again")
        print(_summary("chaoslab time_to_recover_s", ttr))
        print(_summary("chaoslab inject+revert wall time", walls))
        print(_summary("anchor: bare inspect polling", anchor))
        ratio = statistics.median(ttr) / statistics.median(anchor)
        print(f"ratio p50 chaoslab/anchor = {ratio:.2f}")
        print(f"total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
