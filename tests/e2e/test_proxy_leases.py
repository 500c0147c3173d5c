"""Proxy faults whose lease follows the run: ``chaoslab run`` renews each toxic's lease on
the proxy server every second (``ProxyDriver.renew``); when the renewals stop the server
alone removes the toxic within ``lease.LAPSE_S``, and the run reports it.

The proxy server is the real one (``python -m chaoslab.drivers.proxy``); toxics are read
through its API, independently of the driver. Its upstream is never dialled: the tests
watch the toxic, not traffic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaoslab.drivers.lease import LAPSE_S
from tests.conftest import ROOT, poll, read_events_tolerant, run_cli, wait_for_event
from tests.integration.proxykit import proxy_process


@pytest.fixture
def api() -> Iterator[str]:
    """A proxy server of its own and one proxy ``p`` on it."""
    with proxy_process() as url:
        made = httpx.post(f"{url}/proxies", json={"name": "p", "upstream": "127.0.0.1:9"}, timeout=10)
        assert made.status_code == 201, made.text
        yield url


def toxics(api: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{api}/proxies/p/toxics", timeout=10).json()
    return found


def experiment(tmp: Path, api: str, *, duration: str | None, extra: str = "", after: str = "") -> Path:
    held = f", duration: {duration}" if duration else ""
    path = tmp / "exp.yaml"
    path.write_text(
        f"title: proxy lease\ndescription: d\n{extra}method:\n"
        f"  - {{do: proxy.latency, target: 'proxy:p@{api.removeprefix('http://')}', "
        f"with: {{latency: 1ms}}{held}}}\n{after}"
    )
    return path


def start(exp: Path, run_dir: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(run_dir), str(exp)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_proxy_fault_without_duration_is_held_through_a_long_method(tmp_path: Path, api: str) -> None:
    # The run's fixed lease (2 s + 5 s) was the toxic's whole life before heartbeats.
    exp = experiment(
        tmp_path,
        api,
        duration=None,
        extra="lease: 2s\n",
        after="  - {type: action, name: long-step, provider: {type: process, path: sleep, arguments: '9'}}\n",
    )
    run = start(exp, tmp_path / "r", tmp_path)
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        t0 = time.monotonic()
        # Held all along (sampled past 2 s + 5 s and past LAPSE_S): the behaviour under test.
        gone = poll(lambda: not toxics(api), timeout_s=8.0, interval_s=0.2)
        assert gone is None, f"the toxic went {time.monotonic() - t0:.1f}s into the method"
    finally:
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    assert toxics(api) == []
    assert not any(
        e["kind"] == "lease-lapsed" for e in read_events_tolerant(tmp_path / "r" / "events.ndjson")
    )


def test_a_stuck_runner_s_proxy_fault_is_ended_by_the_server_and_reported(tmp_path: Path, api: str) -> None:
    run = start(experiment(tmp_path, api, duration="8s"), tmp_path / "r", tmp_path)
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        assert toxics(api)
        run.send_signal(signal.SIGSTOP)  # alive, but renewing nothing
        stopped = time.monotonic()
        try:
            assert poll(lambda: toxics(api) == [], timeout_s=LAPSE_S + 5), "the server kept the toxic"
            ended = time.monotonic() - stopped
        finally:
            run.send_signal(signal.SIGCONT)
        # The last renewal came at most a heartbeat (1 s) before the stop.
        assert ended <= LAPSE_S + 1.0, ended
        lapsed = wait_for_event(tmp_path / "r" / "events.ndjson", "lease-lapsed", timeout_s=10)
        assert "the proxy ended it" in str(lapsed["reason"]), lapsed
    finally:
        out, err = run.communicate(timeout=60)
    events = read_events_tolerant(tmp_path / "r" / "events.ndjson")
    assert sum(e["kind"] == "lease-lapsed" for e in events) == 1
    (finished,) = [e for e in events if e["kind"] == "run-finished"]
    assert (
        run.returncode == 4
        and finished["verdict"] == "inconclusive"
        and "ended early by its lease" in str(finished["reason"])
    ), out + err


def test_a_sigkilled_runner_s_proxy_fault_ends_within_seconds(tmp_path: Path, api: str) -> None:
    run = start(experiment(tmp_path, api, duration="120s"), tmp_path / "r", tmp_path)
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        (toxic,) = toxics(api)
        assert toxic["heartbeat_s"] == LAPSE_S and toxic["lease_expires_at"] > time.time() + 100
    finally:
        run.kill()
        run.communicate(timeout=30)
    killed = time.monotonic()
    assert poll(lambda: toxics(api) == [], timeout_s=LAPSE_S + 5), "the server kept the toxic"
    ended = time.monotonic() - killed
    print(f"proxy.latency: ended {ended:.2f}s after the runner's SIGKILL")
    assert ended <= LAPSE_S + 1.0, ended  # the last renewal came before the kill
    recovered = run_cli("recover", cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "1 reverted and verified clean" in recovered.stdout, recovered.stdout
