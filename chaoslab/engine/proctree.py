"""Activity process trees: whatever a python/process activity starts ends with it.

A process activity runs in its own session (``start_new_session``), so its whole tree —
``sh -c``, what the shell backgrounds, their children — shares one process group that
one ``killpg`` ends, even after the shell itself exited. A python activity runs in the
runner's process, so what it spawns is found as the runner's *new* descendants in the
runner's own session (process activities and chaoslab's detached watchdogs and
stressors live in sessions of their own and are never touched).

``ActivityTrees`` holds the trees of one run's running activities; the engine ends a
tree when its activity passes its deadline or is interrupted (SIGINT/SIGTERM), and
``end_all`` ends every tree still running when the run winds down, so an abandoned
activity never leaves an orphan holding a CI step's stdout open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


def _pids_in_my_session() -> dict[int, float]:
    """The runner's descendants that share its session: pid → create time."""
    import psutil

    sid = os.getsid(0)
    found: dict[int, float] = {}
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return found
    for kid in kids:
        try:
            if os.getsid(kid.pid) == sid:
                found[kid.pid] = kid.create_time()
        except (OSError, psutil.Error):
            continue
    return found


def end_group(pgid: int) -> None:
    """SIGKILL a process group and every descendant of its leader (never raises)."""
    import psutil

    try:
        kids = psutil.Process(pgid).children(recursive=True)
    except psutil.Error:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()


class PythonTree:
    """What a python activity spawned: the runner's descendants that appear after it
    starts, in the runner's own session."""

    def __init__(self) -> None:
        self.before = _pids_in_my_session()

    def end(self) -> None:
        import psutil

        for pid, created in _pids_in_my_session().items():
            if self.before.get(pid) == created:
                continue
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


class ActivityTrees:
    """The process trees of one run's activities still running. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, int] = {}  # activity token -> process group id
        self._python: dict[int, PythonTree] = {}
        self._next = 0

    @contextlib.contextmanager
    def activity(self, python: bool) -> Iterator[ActivityTree]:
        with self._lock:
            self._next += 1
            token = self._next
            if python:
                self._python[token] = PythonTree()
        tree = ActivityTree(self, token)
        try:
            yield tree
        finally:
            with self._lock:
                self._groups.pop(token, None)
                self._python.pop(token, None)

    def end(self, token: int) -> None:
        with self._lock:
            pgid = self._groups.pop(token, None)
            python = self._python.pop(token, None)
        if pgid is not None:
            end_group(pgid)
        if python is not None:
            python.end()

    def end_all(self) -> None:
        """The run is over: end every activity tree still running."""
        with self._lock:
            tokens = set(self._groups) | set(self._python)
        for token in tokens:
            self.end(token)


class ActivityTree:
    """One running activity's tree: register its process group, end it."""

    def __init__(self, trees: ActivityTrees, token: int) -> None:
        self._trees = trees
        self._token = token

    def started(self, pgid: int) -> None:
        with self._trees._lock:
            self._trees._groups[self._token] = pgid

    def end(self) -> None:
        self._trees.end(self._token)
