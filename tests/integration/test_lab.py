"""The lab as a user and the drivers see it: real processes on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaoslab.lab import control
from chaoslab.lab.proxyctl import proxy_module_available
from chaoslab.lab.state import LabState
from chaoslab.paths import lab_dir
from chaoslab.sli.loadgen import LoadGenerator
from tests.conftest import poll, require, wait_until

RESTART_DELAY_S = 2.0


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def lab_pids(raw: Any) -> list[int]:
    pids = [raw["supervisor"]["pid"]]
    if raw.get("proxy"):
        pids.append(raw["proxy"]["pid"])
    pids += [c["pid"] for c in raw["components"].values() if c["pid"]]
    return pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LabState]]:
    base = tmp_path_factory.mktemp("lab-home")
    state = control.up(3, RESTART_DELAY_S, base)
    try:
        yield base, state
    finally:
        control.down(base)
        assert not lab_dir(base).exists()


def test_up_is_idempotent_and_status_is_healthy(lab: tuple[Path, LabState]) -> None:
    base, state = lab
    again = control.up(3, RESTART_DELAY_S, base)
    assert again.raw["supervisor"]["pid"] == state.raw["supervisor"]["pid"]
    assert again.component("replica-2").pid == state.component("replica-2").pid
    st = control.status(base)
    assert st["running"] and st["healthy"], st
    assert set(st["components"]) == {"lb", "replica-1", "replica-2", "replica-3"}
    text = control.format_status(st)
    assert "replica-3" in text and "healthy" in text


def test_replica_endpoints(lab: tuple[Path, LabState]) -> None:
    _, state = lab
    port = state.component("replica-1").port
    assert port is not None
    status, headers, body = get(port, "/")
    assert status == 200 and headers["x-replica"] == "replica-1"
    start = time.perf_counter()
    status, _, body = get(port, "/work?ms=50")
    assert status == 200 and time.perf_counter() - start >= 0.05
    status, headers, body = get(port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'lab_requests_total{replica="replica-1",path="/work",code="200"} 1' in text
    assert 'lab_request_duration_seconds_bucket{replica="replica-1",le="0.1"}' in text
    assert get(port, "/nope")[0] == 404


def test_requests_flow_through_the_fault_proxy(lab: tuple[Path, LabState]) -> None:
    require(proxy_module_available(), "chaoslab.drivers.proxy (the fault proxy) is not installed")
    base, state = lab
    assert state.raw["proxy"] is not None, state.raw["supervisor"].get("proxy_note")
    lb_port = state.component("lb").port
    assert lb_port is not None
    upstreams = json.loads(get(lb_port, "/__lb/status")[2])["upstreams"]
    for name in ("replica-1", "replica-2", "replica-3"):
        comp = state.component(name)
        assert comp.extra["proxy"] == name
        assert upstreams[name]["address"] == f"127.0.0.1:{comp.extra['proxy_port']}"
    assert control.status(base)["proxy"]["healthy"]


def test_lb_survives_sigkill_and_supervisor_heals(lab: tuple[Path, LabState]) -> None:
    base, state = lab
    victim = state.component("replica-2")
    assert victim.pid is not None
    lb_port = state.component("lb").port
    assert lb_port is not None
    gen = LoadGenerator(url=f"http://127.0.0.1:{lb_port}/", rate=300, max_duration_s=4.0, timeout_s=2.0)
    gen.start()
    # Readiness: the load is flowing through the balancer before the kill.
    wait_until(lambda: len(gen.code) >= 100, timeout_s=10, what="load through the balancer")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()

    # Before the restart, status tells the truth: replica-2 is down.
    def down() -> dict[str, Any] | None:
        now = control.status(base)
        return None if now["components"]["replica-2"]["alive"] else now

    st = wait_until(down, timeout_s=RESTART_DELAY_S, what="status to show replica-2 down")
    assert not st["components"]["replica-2"]["alive"] and not st["components"]["replica-2"]["healthy"]
    assert not st["healthy"]
    assert gen.wait(15)
    outcomes = gen.outcome_counts()
    assert len(gen.code) == 1200
    # The balancer retried on the other replicas: no (or almost no) client saw the loss.
    assert outcomes.get("200", 0) >= 1198, outcomes
    # The balancer noticed the loss: a client request or a health check failed on replica-2,
    # whichever reached it first (a check that wins the race keeps every request away from it).
    seen = json.loads(get(lb_port, "/__lb/status")[2])["upstreams"]["replica-2"]
    assert seen["failed"] + seen["checks_failed"] >= 1, seen

    poll(lambda: control.status(base)["healthy"], timeout_s=RESTART_DELAY_S + 10, interval_s=0.1)
    st = control.status(base)
    assert st["healthy"], st
    restarted = LabState.load(lab_dir(base)).component("replica-2")
    assert restarted.pid not in (None, victim.pid)
    (restart,) = restarted.extra["restarts"]
    assert restart["after_exit"] == -signal.SIGKILL
    assert restart["died_at"] >= killed_at - 0.1
    assert restart["at"] - restart["died_at"] >= RESTART_DELAY_S - 0.05


def test_down_leaves_nothing_even_after_the_supervisor_was_killed(tmp_path: Path) -> None:
    state = control.up(1, 0.5, tmp_path)
    pids = lab_pids(state.raw)
    assert all(alive(p) for p in pids)
    os.kill(state.raw["supervisor"]["pid"], signal.SIGKILL)
    assert control.down(tmp_path)
    assert not any(alive(p) for p in pids)
    assert not lab_dir(tmp_path).exists()
    assert control.status(tmp_path)["running"] is False
    # And a fresh `up` after that works.
    state = control.up(1, 0.5, tmp_path)
    pids = lab_pids(state.raw)
    assert control.down(tmp_path)
    assert not any(alive(p) for p in pids)
    assert not lab_dir(tmp_path).exists()
    assert control.down(tmp_path) is False


def test_running_lab_context(tmp_path: Path) -> None:
    with control.running_lab(1, 0.5, base_dir=tmp_path) as state:
        port = state.component("lb").port
        assert port is not None and get(port, "/")[0] == 200
        pids = lab_pids(state.raw)
    assert not any(alive(p) for p in pids)
    assert not lab_dir(tmp_path).exists()
