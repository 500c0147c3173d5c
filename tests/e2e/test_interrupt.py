"""Interruptions, as a user causes them: SIGINT, SIGTERM, a second Ctrl-C, SIGKILL.

Each test runs ``chaoslab run`` in a subprocess on an experiment whose method holds a
real fault (a SIGSTOPped sleeper process) and then blocks, and signals it mid-method.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaoslab.engine.journal import verdict_of_log
from chaoslab.verdict import Verdict
from tests.conftest import wait_for_event, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHAOSLAB = [sys.executable, "-m", "chaoslab.cli"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def experiment(tmp: Path, pid: int, rollback_sleep: float = 0.0) -> Path:
    marker = tmp / "rolled-back"
    f = tmp / "exp.yaml"
    f.write_text(
        textwrap.dedent(f"""
        title: interrupt me
        description: a fault is held while the method blocks
        method:
          - {{do: process.suspend, target: "pid:{pid}", duration: 120s}}
          - type: action
            name: block
            timeout: 300
            provider: {{type: python, module: tests.e2e.ctkfuncs, func: sleep_quietly, arguments: {{seconds: 300}}}}
        rollbacks:
          - type: action
            name: slow-rollback
            provider: {{type: python, module: tests.e2e.ctkfuncs, func: sleep_quietly,
                        arguments: {{seconds: {rollback_sleep}}}}}
          - type: action
            name: mark
            provider: {{type: process, path: touch, arguments: "{marker}"}}
    """)
    )
    return f


def start(tmp: Path, exp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*CHAOSLAB, "run", "--run-dir", str(tmp / "run"), str(exp)],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def is_stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_method_reverts_runs_rollbacks_and_writes_journal(
    sig: signal.Signals, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    proc = start(tmp_path, experiment(tmp_path, sleeper.pid))
    events = tmp_path / "run" / "events.ndjson"
    wait_for_event(events, "activity-started", where=lambda e: e["name"] == "block")
    assert is_stopped(sleeper.pid), "the fault must be active mid-method"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert not is_stopped(sleeper.pid), "the suspended process must be resumed"
    assert (tmp_path / "rolled-back").exists()
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    assert journal["chaoslab"]["verdict"] == "interrupted"
    assert [r["activity"]["name"] for r in journal["rollbacks"]] == ["slow-rollback", "mark"]
    assert any(f["kind"] == "clean-checked" and f["clean"] for f in journal["chaoslab"]["faults"])
    # The verdict is a fold of the events: the log alone gives the journal's.
    verdict, reason = verdict_of_log(events)
    assert (verdict.value, reason) == (journal["chaoslab"]["verdict"], journal["chaoslab"]["reason"])


def test_second_ctrl_c_during_rollback_does_not_skip_it(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    proc = start(tmp_path, experiment(tmp_path, sleeper.pid, rollback_sleep=2.0))
    events = tmp_path / "run" / "events.ndjson"
    wait_for_event(events, "activity-started", where=lambda e: e["name"] == "block")
    proc.send_signal(signal.SIGINT)
    wait_for_event(events, "activity-started", where=lambda e: e["name"] == "slow-rollback")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "reverts are never skipped" in err and "Still reverting" in err
    assert (tmp_path / "rolled-back").exists()
    assert not is_stopped(sleeper.pid)
    kinds = [json.loads(line)["kind"] for line in events.read_text().splitlines()]
    assert kinds.count("interrupted") == 2


def test_sigkill_leaves_a_readable_event_log_and_the_lease_resumes_the_target(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    exp = experiment(tmp_path, sleeper.pid)
    exp.write_text(exp.read_text().replace("duration: 120s", "duration: 1s"))
    proc = start(tmp_path, exp)
    events = tmp_path / "run" / "events.ndjson"
    wait_for_event(events, "fault-injected")
    proc.kill()
    proc.communicate(timeout=30)
    lines = events.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is whole JSON
    assert [e["kind"] for e in parsed][:2] == ["run-started", "phase-started"]
    assert "fault-injected" in [e["kind"] for e in parsed]
    assert not (tmp_path / "run" / "journal.json").exists()
    # A killed run still has a verdict, folded from its log: the fault was never verified clean.
    verdict, reason = verdict_of_log(events)
    assert verdict is Verdict.NOT_CLEAN
    assert "process.suspend" in reason and "chaoslab recover" in reason
    rep = subprocess.run(
        [*CHAOSLAB, "report", str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert rep.returncode == 0, rep.stderr
    assert "Traceback" not in rep.stdout + rep.stderr
    postmortem = (tmp_path / "run" / "postmortem.md").read_text()
    assert "not-clean" in postmortem
    # lease = duration (1 s) + margin (5 s); the watchdog resumes it without the runner
    wait_until(
        lambda: not is_stopped(sleeper.pid),
        timeout_s=1 + 5 + 3,
        interval_s=0.1,
        what="the watchdog to resume it",
    )


def test_sigterm_ends_a_running_process_activity(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        "title: t\ndescription: d\nmethod:\n"
        "  - {type: action, name: block, provider: {type: process, path: sleep, arguments: ['297']}}\n"
    )
    proc = start(tmp_path, f)
    wait_for_event(
        tmp_path / "run" / "events.ndjson", "activity-started", where=lambda e: e["name"] == "block"
    )
    children = wait_until(
        lambda: [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "sleep"],
        timeout_s=10,
        interval_s=0.05,
        what="the process activity to be running",
    )
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    psutil.wait_procs(children, timeout=5)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
