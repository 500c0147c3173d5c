"""Activity process trees: whatever a python/process activity starts ends with it.

The mechanism is the Linux *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, no
privilege needed, unlike a cgroup): a process whose parent exits is re-parented to its
nearest subreaper ancestor instead of PID 1. So a grandchild that calls ``setsid()``,
double-forks into a daemon or changes its process group stays a descendant, found by a
walk of ``/proc``, and is ended: SIGTERM, a short grace (``shepherd.GRACE_S``), SIGKILL,
walking again for late forks, bounded in time.

- A **process activity** runs under a *shepherd* (``chaoslab/engine/shepherd.py``), a
  tiny subreaper process of its own: when the command exits, the shepherd ends what is
  left of its tree before it exits itself; SIGTERM to the shepherd (the activity's
  deadline, SIGINT/SIGTERM to the run, the run winding down) ends the tree at once; and
  the shepherd ends the tree when the runner dies (``PR_SET_PDEATHSIG``).
- A **python activity** runs in the runner's process (as in Chaos Toolkit: it may keep
  state between activities), so the runner itself is a subreaper while a python activity
  runs, and the activity's tree is the runner's descendants that were not there when it
  started — adopted orphans included — minus process-activity shepherds' trees and
  chaoslab's own detached helpers (lease watchdogs, stressors, the lab). The tree is
  ended when the activity returns or raises; at its deadline or on an interruption it is
  ended at once and again when the run winds down (the abandoned thread may still run).

Where the promise does not hold:

- a process started *outside* the tree on the activity's behalf by another daemon
  (``systemd-run``, ``at``, ``docker run``, a remote ``ssh host 'cmd &'``, a service
  asked over a socket) is nobody's descendant here;
- a python activity's attribution is by time: a process the runner starts for another
  reason while the python activity runs (a background python activity beside it, a
  fault's short-lived driver command such as ``iptables``) is counted in its tree;
- a python activity abandoned at its deadline keeps running on its thread: what it
  starts after the run wound down is ended only by the runner's exit (its thread dies
  with the process), not walked again;
- a descendant of a python activity that called ``setsid()`` survives a SIGKILL of a
  runner started by hand, re-parented to PID 1 (a process activity's tree does not: its
  shepherd ends it; nor does a gate's or scheduler's child run's: ``chaoslab.engine.child``
  runs it under a forwarding shepherd);
- a process the runner may not signal (another user's, after a set-uid exec) is left,
  and one that forks faster than the bounded walks may survive them;
- on a system without ``PR_SET_CHILD_SUBREAPER`` (not Linux, or a kernel before 3.4) a
  ``setsid`` grandchild whose parent exited escapes to PID 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from chaoslab.engine import shepherd
from chaoslab.engine.shepherd import (
    PR_SET_CHILD_SUBREAPER,
    descendants,
    end_all,
    is_subreaper,
    prctl,
    processes,
    spared,
)

SHEPHERD = str(Path(shepherd.__file__).resolve())
# The time ending a tree may take: the shepherd's grace and SIGKILL walks, and a margin.
END_BOUND_S = shepherd.GRACE_S + shepherd.KILL_BOUND_S + 2.0


def shepherd_command(argv: Sequence[str], *, forward: bool = False) -> list[str]:
    """``argv`` run under a shepherd (``-I -S``: no site-packages, a fast start);
    ``forward``: signals are passed on to it (a child run), see ``shepherd.shepherd``."""
    return [sys.executable, "-I", "-S", SHEPHERD, *(["--forward"] if forward else []), "--", *argv]


def _is_shepherd(pid: int) -> bool:
    return SHEPHERD.encode() in shepherd._read(f"/proc/{pid}/cmdline").split(b"\0")


class _Subreaper:
    """This process as a child subreaper while at least one python activity needs it.

    The flag belongs to the whole process, so its holders are counted; it is cleared
    only if it was not set before the first holder came (a test fixture, a supervisor).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._ours = False

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0 and not is_subreaper():
                self._ours = prctl(PR_SET_CHILD_SUBREAPER, 1)
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._ours:
                prctl(PR_SET_CHILD_SUBREAPER, 0)
                self._ours = False


SUBREAPER = _Subreaper()  # one per process: the kernel flag it stands for is one per process


class PythonTree:
    """What a python activity spawned: the runner's descendants that were not there when
    it started, adopted orphans included, except shepherds' trees and chaoslab's helpers."""

    def __init__(self) -> None:
        SUBREAPER.hold()
        self._held = True
        self.before = descendants(os.getpid())

    def members(self) -> dict[int, int]:
        """The tree's live processes now (pid → start ticks); its exited children reaped."""
        me = os.getpid()
        table = processes()
        new = {p: t for p, t in descendants(me, table).items() if self.before.get(p) != t}
        out = {p for p in new if _is_shepherd(p)}
        out |= {d for p in out for d in descendants(p, table)}
        out |= spared([p for p in new if p not in out], table)
        mine = {p: t for p, t in new.items() if p not in out}
        for pid in list(mine):
            state, ppid = table[pid][0], table[pid][1]
            if state == "Z" and ppid == me:
                # An orphan adopted while we were its subreaper, or a child the activity
                # never waited for: nobody else will reap it.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                del mine[pid]
        return mine

    def end(self, *, final: bool) -> None:
        end_all(self.members)
        self.members()  # reap what the ending left as zombies
        if final and self._held:
            self._held = False
            SUBREAPER.release()


class ProcessTree:
    """A process activity's shepherd: SIGTERM makes it end the activity's whole tree."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        st = shepherd._stat(pid)
        self.ticks = st[3] if st is not None else -1

    def _alive(self) -> bool:
        st = shepherd._stat(self.pid)
        return st is not None and st[3] == self.ticks and st[0] != "Z"

    def end(self) -> None:
        if not self._alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + END_BOUND_S
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive():  # a shepherd that cannot end its tree in time: end it ourselves
            table = processes()
            for pid, ticks in descendants(self.pid, table).items():
                shepherd._signal(pid, ticks, signal.SIGKILL)
            shepherd._signal(self.pid, self.ticks, signal.SIGKILL)


class ActivityTrees:
    """The process trees of one run's activities still running. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: dict[int, ProcessTree] = {}  # activity token -> its shepherd
        self._python: dict[int, PythonTree] = {}
        self._abandoned: dict[int, PythonTree] = {}  # ended once; walked again at wind-down
        self._ended: set[int] = set()  # tokens ended before their shepherd was registered
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
                self._process.pop(token, None)
                self._ended.discard(token)
                done = self._python.pop(token, None)
            if done is not None:
                done.end(final=True)  # the activity returned or raised: its tree ends with it

    def end(self, token: int) -> None:
        """End an activity's tree now (its deadline passed, or the run is interrupted)."""
        with self._lock:
            proc = self._process.pop(token, None)
            python = self._python.pop(token, None)
            self._ended.add(token)
            if python is not None:
                self._abandoned[token] = python
        if proc is not None:
            proc.end()
        if python is not None:
            python.end(final=False)

    def end_all(self) -> None:
        """The run winds down: end every activity tree still running, and walk abandoned
        python activities' trees once more."""
        with self._lock:
            tokens = set(self._process) | set(self._python)
        for token in tokens:
            self.end(token)
        with self._lock:
            abandoned, self._abandoned = list(self._abandoned.values()), {}
        for tree in abandoned:
            tree.end(final=True)


class ActivityTree:
    """One running activity's tree: register its shepherd, end it."""

    def __init__(self, trees: ActivityTrees, token: int) -> None:
        self._trees = trees
        self._token = token

    def started(self, pid: int) -> None:
        tree = ProcessTree(pid)
        with self._trees._lock:
            late = self._token in self._trees._ended  # ended while its shepherd was starting
            if not late:
                self._trees._process[self._token] = tree
        if late:
            tree.end()

    def end(self) -> None:
        self._trees.end(self._token)
