"""Lease alone: time from a runner's SIGKILL to its fault ended on the target, with no
help from the runner and no ``recover``.

For each local fault kind, RUNS times: ``chaoslab run`` an experiment holding the fault
for 120 s, wait for its ``fault-injected`` event, SIGKILL the runner, and time until the
target is clean, observed independently of the driver:

- ``process.suspend``: the suspended sleeper is running again (``/proc`` state);
- ``stress.cpu`` / ``stress.memory``: no process carries the fault's tag any more;
- ``stress.disk``: the fill directory is gone;
- ``net.drop`` (root, iptables): no iptables rule carries the fault's comment;
- ``proxy.latency``: the fault proxy (its own process, started here) lists no toxic: the
  server's heartbeat lease, renewed by the run, ended it.

Then ``chaoslab recover`` closes the ledger entry (not timed). Prints p50/p95/max per
kind against the target (p95 under 5 s). Anchor: Steadybit's extension rolls back after
4 missed heartbeats; before heartbeats chaoslab waited the fault's duration + 5 s
(here 125 s). Bounded: at most RUNS runs per kind and DEADLINE_S in total.

    .venv/bin/python benchmarks/bench_lease.py [RUNS] [KIND ...]   # KIND: e.g. proxy.latency
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaoslab.drivers import _proc  # noqa: E402 - after the path set-up above
from chaoslab.drivers.lease import LAPSE_S  # noqa: E402
from chaoslab.drivers.stress import fill_dir  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ONLY = frozenset(sys.argv[2:])  # the kinds to time; none named: all of them
DEADLINE_S = 1800.0
TARGET_P95_S = 5.0
CLEAN_TIMEOUT_S = 30.0
DROP_PORT = 64999


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _injected(run_dir: Path, timeout: float = 30.0) -> dict[str, object]:
    end = time.monotonic() + timeout
    path = run_dir / "events.ndjson"
    while time.monotonic() < end:
        if path.exists():
            for line in path.read_text().splitlines():
                if '"kind": "fault-injected"' in line:
                    event: dict[str, object] = json.loads(line)
                    return event
        time.sleep(0.01)
    raise TimeoutError(f"no fault-injected in {path}")


def _rules_of(fault_id: str) -> bool:
    out = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=False).stdout
    return fault_id in out


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("T")
    except OSError:
        return False


def once(kind: str, step: str, clean: Callable[[dict[str, object]], bool], work: Path) -> float:
    home = work / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHAOSLAB_HOME": str(home)}
    exp = work / "exp.yaml"
    exp.write_text(f"title: lease\ndescription: d\nmethod:\n  - {step}\n")
    run_dir = work / f"run-{time.monotonic_ns()}"
    run = _cli("run", "--run-dir", str(run_dir), str(exp), cwd=work, env=env)
    try:
        event = _injected(run_dir)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    t0 = time.monotonic()
    record = event["record"]
    assert isinstance(record, dict)
    if clean(record):
        raise AssertionError(f"{kind}: the fault died with the runner (nothing for the lease to do)")
    while not clean(record):
        if time.monotonic() - t0 > CLEAN_TIMEOUT_S:
            raise TimeoutError(f"{kind}: not clean {CLEAN_TIMEOUT_S:g}s after the runner's SIGKILL")
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    done = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", "recover"], cwd=work, env=env, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{kind}: recover failed: {done.stdout!r} {done.stderr!r}")
    return elapsed


class ProxyServer:
    """The fault proxy in its own process, with one proxy ``p`` (its upstream is never
    dialled: only the toxic is watched)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chaoslab.drivers.proxy", "--api", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("chaoslab-proxy api="):
            self.stop()
            raise RuntimeError(f"the proxy did not start: {line!r}")
        self.api = "http://" + line.split("api=")[1].split()[0]
        httpx.post(f"{self.api}/proxies", json={"name": "p", "upstream": "127.0.0.1:9"}, timeout=10)

    def toxics(self) -> list[object]:
        found: list[object] = httpx.get(f"{self.api}/proxies/p/toxics", timeout=10).json()
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main() -> int:
    started = time.monotonic()
    proxy = ProxyServer()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)  # bench_lease"])
    kinds: dict[str, tuple[str, Callable[[dict[str, object]], bool]]] = {
        "process.suspend": (
            f"{{do: process.suspend, target: 'pid:{sleeper.pid}', duration: 120s}}",
            lambda r: not _stopped(sleeper.pid),
        ),
        "stress.cpu": (
            "{do: stress.cpu, with: {workers: 1, load: 10, backend: builtin}, duration: 120s}",
            lambda r: not _proc.tagged_processes(str(r["fault_id"])),
        ),
        "stress.memory": (
            "{do: stress.memory, with: {mib: 16, backend: builtin}, duration: 120s}",
            lambda r: not _proc.tagged_processes(str(r["fault_id"])),
        ),
    }
    work_root = Path(tempfile.mkdtemp(prefix="bench-lease-"))
    fill = work_root / "fill"
    fill.mkdir()
    kinds["stress.disk"] = (
        f"{{do: stress.disk, with: {{path: '{fill}', mib: 4}}, duration: 120s}}",
        lambda r: not fill_dir(str(fill), str(r["fault_id"])).exists(),
    )
    if os.geteuid() == 0 and shutil.which("iptables"):
        kinds["net.drop"] = (
            f"{{do: net.drop, target: host, with: {{port: {DROP_PORT}}}, duration: 120s}}",
            lambda r: not _rules_of(str(r["fault_id"])),
        )
    else:
        print("net.drop: skipped (needs root and iptables)")
    kinds["proxy.latency"] = (
        f"{{do: proxy.latency, target: 'proxy:p@{proxy.api.removeprefix('http://')}', "
        "with: {latency: 1ms}, duration: 120s}",
        lambda r: not proxy.toxics(),
    )
    results: dict[str, list[float]] = {}
    try:
        for kind, (step, clean) in kinds.items():
            if ONLY and kind not in ONLY:
                continue
            times: list[float] = []
            for i in range(RUNS):
                if time.monotonic() - started > DEADLINE_S:
                    print(f"deadline of {DEADLINE_S:g}s reached")
                    break
                work = work_root / f"{kind}-{i}"
                work.mkdir()
                times.append(once(kind, step, clean, work))
            results[kind] = times
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
        sleeper.kill()
        sleeper.wait()
        proxy.stop()
        shutil.rmtree(work_root, ignore_errors=True)
    print(f"runner SIGKILL -> fault ended by the lease alone (lapse {LAPSE_S:g}s after the last heartbeat)")
    print(f"{'kind':<16} {'runs':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  target p95 < {TARGET_P95_S:g}s")
    ok = True
    for kind, times in results.items():
        if not times:
            continue
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
        verdict = "ok" if p95 < TARGET_P95_S else "MISSED"
        ok = ok and p95 < TARGET_P95_S
        p50, worst = statistics.median(times), max(times)
        print(f"{kind:<16} {len(times):>4} {p50:>7.2f} {p95:>7.2f} {worst:>7.2f}  {verdict}")
    print("anchor: Steadybit rolls back after 4 missed heartbeats; before heartbeats: duration + 5 s = 125 s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
