"""chaoslab.engine.child: one way to run chaoslab (or anything) in a child process."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from chaoslab.engine.child import chaoslab_command, run_child, verdict_of_exit
from chaoslab.verdict import ExitCode, Verdict
from tests.conftest import wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (only its parent, init here, can reap it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_file(path: Path, timeout_s: float = 10.0) -> str:
    return wait_until(
        lambda: path.exists() and path.read_text().strip(), timeout_s=timeout_s, what=f"{path} to be written"
    )


STRAY = """
import os, subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(p.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


def test_a_stray_grandchild_in_the_childs_group_is_killed(tmp_path: Path) -> None:
    """The child exits at once and leaves a grandchild in its group: run_child reaps it."""
    pid_file = tmp_path / "stray.pid"
    ended = run_child([sys.executable, "-c", STRAY, str(pid_file)], timeout_s=30)
    assert ended.returncode == 0 and not ended.timed_out and not ended.stopped
    stray = int(_wait_file(pid_file))
    wait_until(lambda: not _alive(stray), timeout_s=5, what=f"stray pid {stray} to be killed")


TERM_AWARE = """
import signal, sys, time
def on_term(*_):
    open(sys.argv[1], "w").write("reverted")
    sys.exit(130)
signal.signal(signal.SIGTERM, on_term)
open(sys.argv[2], "w").write("ready")
time.sleep(60)
"""


def test_stop_sends_sigterm_and_the_child_winds_down(tmp_path: Path) -> None:
    done, ready = tmp_path / "done", tmp_path / "ready"
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: (_wait_file(ready), stop.set()))
    waiter.start()
    ended = run_child([sys.executable, "-c", TERM_AWARE, str(done), str(ready)], stop=stop, grace_s=10)
    waiter.join()
    assert ended.stopped and not ended.timed_out
    assert ended.returncode == 130
    assert done.read_text() == "reverted"


def test_timeout_sigterms_then_sigkills_after_the_grace(tmp_path: Path) -> None:
    ended = run_child(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        ],
        timeout_s=0.3,
        grace_s=0.3,
    )
    assert ended.timed_out
    assert ended.returncode == -signal.SIGKILL


def test_an_exception_in_the_parent_stops_the_child_then_propagates(tmp_path: Path) -> None:
    done, ready = tmp_path / "done", tmp_path / "ready"
    pids: list[int] = []

    def on_child(pid: int) -> None:
        pids.append(pid)
        _wait_file(ready)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_child([sys.executable, "-c", TERM_AWARE, str(done), str(ready)], on_child=on_child, grace_s=10)
    assert done.read_text() == "reverted"
    assert not _alive(pids[0])


@pytest.mark.parametrize("verdict", list(Verdict))
def test_every_documented_exit_code_maps_back_to_its_verdict(verdict: Verdict) -> None:
    assert verdict_of_exit(int(verdict.exit_code)) is verdict


def test_signals_and_unknown_codes() -> None:
    assert verdict_of_exit(-signal.SIGTERM) is Verdict.INTERRUPTED
    assert verdict_of_exit(-signal.SIGINT) is Verdict.INTERRUPTED
    assert verdict_of_exit(-signal.SIGKILL) is Verdict.ERROR
    assert verdict_of_exit(77) is Verdict.ERROR
    assert int(ExitCode.PASSED) == 0


def test_chaoslab_command_is_this_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as fh:
        ended = run_child(chaoslab_command("--version"), stdout=fh, timeout_s=60)
    assert ended.returncode == 0
    assert "chaoslab" in out.read_text().lower()
