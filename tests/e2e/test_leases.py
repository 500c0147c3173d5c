"""Leases that follow the run: renewed by heartbeats while the runner lives, ending the
fault within seconds when it does not (``chaoslab.drivers.lease``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaoslab.drivers.lease import LAPSE_S, POLL_S
from chaoslab.safety.ledger import Ledger
from tests.conftest import poll, run_cli, wait_for_event
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "events.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def resumed_within(pid: int, timeout_s: float) -> float | None:
    """Seconds until ``pid`` was no longer stopped, or None if it stayed stopped."""
    t0 = time.monotonic()
    if poll(lambda: not stopped(pid), timeout_s=timeout_s) is None:
        return None
    return time.monotonic() - t0


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(600)  # {uuid.uuid4().hex}"])
    yield proc.pid
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def suspend(tmp: Path, pid: int, duration: str | None, extra: str = "", after: str = "") -> Path:
    f = tmp / "suspend.yaml"
    held = f", duration: {duration}" if duration else ""
    f.write_text(
        f"title: lease\ndescription: d\n{extra}method:\n"
        f"  - {{do: process.suspend, target: 'pid:{pid}'{held}}}\n{after}"
    )
    return f


def test_a_sigkilled_runner_s_fault_ends_within_seconds_not_its_duration(
    tmp_path: Path, sleeper: int
) -> None:
    run = start(
        "run", "--run-dir", str(tmp_path / "r"), str(suspend(tmp_path, sleeper, "120s")), cwd=tmp_path
    )
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        assert stopped(sleeper)
    finally:
        run.kill()
        run.communicate(timeout=30)
    ended = resumed_within(sleeper, LAPSE_S + 10)
    assert ended is not None, "the lease did not end the fault"
    # LAPSE_S after the last heartbeat (at most HEARTBEAT_S before the kill), then a poll.
    assert ended <= LAPSE_S + POLL_S + 2.0, ended
    (entry,) = Ledger(env_state().ledger).open_entries()  # the entry stays for recover to verify and close
    recovered = run_cli("recover", "--output", "json", cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert Ledger(env_state().ledger).entry(entry.fault_id) is None


def test_a_fault_without_duration_lasts_as_long_as_its_method(tmp_path: Path, sleeper: int) -> None:
    # The runtime lease (2 s) was the fault's whole life before heartbeats: 2 s + 5 s.
    exp = suspend(
        tmp_path,
        sleeper,
        None,
        extra="lease: 2s\n",
        after="  - {type: action, name: long-step, provider: {type: process, path: sleep, arguments: '10'}}\n",
    )
    run = start("run", "--run-dir", str(tmp_path / "r"), str(exp), cwd=tmp_path)
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        # Held all along (sampled until past 2 s + 5 s): the behaviour under test.
        ended = resumed_within(sleeper, 9.0)
        assert ended is None, f"the fault ended {ended:.1f}s into the method"
    finally:
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    assert not stopped(sleeper)
    assert not any(e["kind"] == "lease-lapsed" for e in events(tmp_path / "r"))


def test_a_lease_that_ends_a_fault_early_is_an_event_and_never_a_silent_pass(
    tmp_path: Path, sleeper: int
) -> None:
    run = start("run", "--run-dir", str(tmp_path / "r"), str(suspend(tmp_path, sleeper, "10s")), cwd=tmp_path)
    try:
        wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        run.send_signal(signal.SIGSTOP)  # a stuck runner: alive, but renewing nothing
        try:
            assert resumed_within(sleeper, LAPSE_S + 5) is not None
        finally:
            run.send_signal(signal.SIGCONT)
    finally:
        out, err = run.communicate(timeout=60)
    lapsed = [e for e in events(tmp_path / "r") if e["kind"] == "lease-lapsed"]
    assert len(lapsed) == 1 and "renewing" in str(lapsed[0]["reason"]), lapsed
    (finished,) = [e for e in events(tmp_path / "r") if e["kind"] == "run-finished"]
    assert run.returncode == 4 and finished["verdict"] == "inconclusive", out + err
    assert "ended early by its lease" in str(finished["reason"])
    assert not stopped(sleeper)
