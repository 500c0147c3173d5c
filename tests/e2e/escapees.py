"""Processes that try to outlive their activity (used by ``test_activity_trees``).

``python escapees.py DIR MARKER HANG_S`` — or ``escape(DIR, MARKER, HANG_S)`` as a python
activity, which runs the same script — leaves two processes running ``sleep MARKER``
that a process group cannot hold:

- a ``setsid`` grandchild: an intermediate child runs ``setsid sleep MARKER`` and exits
  at once, so the sleeper is orphaned in a session of its own;
- a double-forked daemon: fork, ``setsid``, fork again, the middle process exits.

Both inherit stdout and stderr (an orphan holding a CI step's output open). Each appends
``pid create_time sid session`` to ``DIR/pids`` once it has left the script's session; then the script sleeps ``HANG_S``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _record(directory: Path, pid: int, session: int) -> None:
    """``pid create_time sid session`` once ``pid`` has left ``session``, the script's own
    (bounded wait)."""
    # Its own bounded loop, not conftest's poll: this file runs as a script, without the
    # tests package on its path.
    deadline = time.monotonic() + 10
    while os.getsid(pid) == session and time.monotonic() < deadline:
        time.sleep(0.005)
    with (directory / "pids").open("a") as fh:
        fh.write(f"{pid} {psutil.Process(pid).create_time()!r} {os.getsid(pid)} {session}\n")


def _setsid_grandchild(directory: Path, marker: str) -> None:
    session = os.getsid(0)
    middle = os.fork()
    if middle == 0:
        try:
            sleeper = subprocess.Popen(["setsid", "sleep", marker])
            _record(directory, sleeper.pid, session)
        finally:
            os._exit(0)  # the sleeper is orphaned
    os.waitpid(middle, 0)


def _daemon(directory: Path, marker: str) -> None:
    session = os.getsid(0)
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                _record(directory, os.getpid(), session)
                os.execvp("sleep", ["sleep", marker])
        finally:
            os._exit(0)
    os.waitpid(middle, 0)


def main(directory: Path, marker: str, hang_s: float) -> None:
    _setsid_grandchild(directory, marker)
    _daemon(directory, marker)
    time.sleep(hang_s)


def escape(directory: str, marker: str, hang_s: float = 0) -> str:
    """The python activity: run this file as a child (its escapees are the runner's
    grandchildren), then hang ``hang_s`` in the runner's own thread."""
    subprocess.run([sys.executable, __file__, directory, marker, "0"], check=True, timeout=60)
    time.sleep(hang_s)
    return "done"


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
