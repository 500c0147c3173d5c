"""Safety as a user meets it: refused runs, recover, halt, two runs on one target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_cli, wait_for_event

ROOT = Path(__file__).resolve().parents[2]


def chaoslab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = run_cli(*args, cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def suspend_run(tmp: Path, run_dir: str, pid: int, duration: str = "60s") -> list[str]:
    """``run`` arguments: suspend ``pid`` for ``duration``, events under ``tmp/run_dir``."""
    return ["run", "--run-dir", str(tmp / run_dir), str(suspend_experiment(tmp, pid, duration))]


def suspend_experiment(tmp: Path, pid: int, duration: str = "60s", after: str = "") -> Path:
    f = tmp / f"suspend-{pid}-{duration}.yaml"
    f.write_text(
        "title: suspend\ndescription: d\nmethod:\n"
        f"  - {{do: process.suspend, target: 'pid:{pid}', duration: {duration}}}\n" + after
    )
    return f


def stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_open_ledger_entry_refuses_the_run_until_recovered(tmp_path: Path, sleeper: int) -> None:
    exp = suspend_experiment(tmp_path, sleeper)
    proc = start("run", "--run-dir", str(tmp_path / "r1"), str(exp), cwd=tmp_path)
    wait_for_event(tmp_path / "r1" / "events.ndjson", "fault-injected")
    proc.kill()  # SIGKILL: the suspend stays (its lease is 65 s), the ledger entry stays open
    proc.communicate(timeout=30)
    assert stopped(sleeper)

    refused = chaoslab("run", "--run-dir", str(tmp_path / "r2"), str(exp), cwd=tmp_path)
    assert refused.returncode == 5
    assert "open entr" in refused.stderr and "chaoslab recover" in refused.stderr
    assert stopped(sleeper), "a refused run touches nothing"

    recovered = chaoslab("recover", "--output", "json", cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert not stopped(sleeper)
    report = json.loads(recovered.stdout)
    assert report["outcomes"] and all(o["clean"] for o in report["outcomes"])

    short = suspend_experiment(tmp_path, sleeper, duration="0.2s")
    again = chaoslab("run", "--run-dir", str(tmp_path / "r3"), str(short), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_second_run_on_a_locked_target_is_refused_with_the_holder(tmp_path: Path, sleeper: int) -> None:
    first = start(*suspend_run(tmp_path, "a", sleeper, "3s"), cwd=tmp_path)
    wait_for_event(tmp_path / "a" / "events.ndjson", "fault-injected")
    second = chaoslab(*suspend_run(tmp_path, "b", sleeper, "1s"), cwd=tmp_path)
    assert second.returncode == 5
    assert f"pid:{sleeper}" in second.stderr and "locked by" in second.stderr
    assert str(first.pid) in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert not stopped(sleeper)


def test_halt_reverts_a_live_run_and_blocks_new_ones(tmp_path: Path, sleeper: int) -> None:
    run = start(*suspend_run(tmp_path, "live", sleeper), cwd=tmp_path)
    wait_for_event(tmp_path / "live" / "events.ndjson", "fault-injected")
    halted = chaoslab("halt", "--reason", "incident INC-42", "--grace", "10", cwd=tmp_path)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    run.communicate(timeout=60)
    assert run.returncode == 3  # aborted
    assert not stopped(sleeper)
    journal = json.loads((tmp_path / "live" / "journal.json").read_text())
    assert journal["chaoslab"]["verdict"] == "aborted" and "halt" in journal["chaoslab"]["reason"]
    # The reports say an operator halted the run, not the guard.
    rendered = chaoslab("report", str(tmp_path / "live"), cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    postmortem = (tmp_path / "live" / "postmortem.md").read_text()
    assert "an operator halted the run with `chaoslab halt`" in postmortem
    assert "guard stopped" not in postmortem.lower()
    assert 'id="halted"' in (tmp_path / "live" / "report.html").read_text()

    blocked = chaoslab(*suspend_run(tmp_path, "blocked", sleeper, "1s"), cwd=tmp_path)
    assert blocked.returncode == 3
    assert "INC-42" in blocked.stderr
    assert not stopped(sleeper)

    assert chaoslab("halt", "--release", cwd=tmp_path).returncode == 0
    ok = chaoslab(*suspend_run(tmp_path, "ok", sleeper, "0.2s"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
