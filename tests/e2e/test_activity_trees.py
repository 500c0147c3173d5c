"""Activities leave no process behind: a process or python activity's whole tree ends at
its deadline and on SIGINT, so a CI step never hangs on an orphan holding its stdout."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import poll

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def marker() -> Iterator[str]:
    """A sleep length no other process uses; whatever carries it is killed afterwards."""
    value = str(random.randint(700_000, 799_999))
    yield value
    for p in leftovers(value):
        p.kill()


def leftovers(value: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd[:1] == ["sleep"] and value in cmd and p.pid != os.getpid():
            found.append(p)
    return found


def start(exp: Path, cwd: Path) -> subprocess.Popen[bytes]:
    # stdout/stderr are pipes, as in a CI step: an orphan holding them blocks communicate().
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(cwd / "r"), str(exp)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(run: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        out, err = run.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        raise AssertionError("the run's output stayed open: an orphan holds it") from None
    return run.returncode, (out + err).decode(errors="replace")


def shell_activity(tmp: Path, marker: str, timeout: str = "") -> Path:
    script = tmp / "tree.sh"
    script.write_text(f"#!/bin/sh\nsleep {marker} &\nsleep {marker}\n")
    script.chmod(0o755)
    exp = tmp / "exp.yaml"
    exp.write_text(
        "title: t\ndescription: d\nmethod:\n"
        f"  - {{type: action, name: tree, {timeout}provider: {{type: process, path: {script}}}}}\n"
    )
    return exp


def wait_for(cond: object, timeout: float) -> bool:
    return poll(cond, timeout_s=timeout, interval_s=0.05) is not None  # type: ignore[arg-type]


def test_a_process_activity_past_its_deadline_takes_its_whole_tree(tmp_path: Path, marker: str) -> None:
    run = start(shell_activity(tmp_path, marker, timeout="timeout: 1, "), tmp_path)
    code, text = finish(run)
    assert "Traceback" not in text and code == 0, text  # a timed-out action: CTK's semantics
    assert '"status": "timed-out"' in (tmp_path / "r" / "events.ndjson").read_text()
    assert leftovers(marker) == []


def test_sigint_ends_a_process_activity_s_whole_tree(tmp_path: Path, marker: str) -> None:
    run = start(shell_activity(tmp_path, marker), tmp_path)
    assert wait_for(lambda: len(leftovers(marker)) == 2, 20)
    run.send_signal(signal.SIGINT)
    code, text = finish(run)
    assert code == 130, text
    assert leftovers(marker) == []


def test_a_python_activity_past_its_deadline_leaves_no_child(tmp_path: Path, marker: str) -> None:
    exp = tmp_path / "py.yaml"
    exp.write_text(
        "title: t\ndescription: d\nmethod:\n"
        "  - {type: action, name: hang, timeout: 1, provider: {type: python, module: tests.e2e.ctkfuncs,"
        f" func: spawn_and_hang, arguments: {{argv: [sleep, '{marker}']}}}}}}\n"
    )
    run = start(exp, tmp_path)
    code, text = finish(run)
    assert "Traceback" not in text and code == 0, text
    assert '"status": "timed-out"' in (tmp_path / "r" / "events.ndjson").read_text()
    assert leftovers(marker) == []
