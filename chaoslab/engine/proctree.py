"""Activity process trees: whatever a python/process activity starts ends with it.

The mechanism is the Linux *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, no
privilege needed, unlike a cgroup): a process whose parent exits is re-parented to its
nearest subreaper ancestor instead of PID 1. So a grandchild that calls ``setsid()``,
double-forks into a daemon or changes its process group stays a descendant, found by a
walk of ``/proc``, and is ended: SIGTERM, a short grace (``shepherd.GRACE_S``), SIGKILL,
walking again for late forks, bounded in time.

The runner is a subreaper while a python or process activity runs. The activity's tree
is what the activity's own thread forked (the kernel lists children per thread:
``/proc/PID/task/TID/children``, so a probe running beside a method action never takes
the action's processes) and their descendants, plus the orphans the runner adopted while
the activity ran (listed under the runner's first thread, told apart by time only) —
minus chaoslab's own detached helpers (lease watchdogs, stressors, the lab;
``shepherd.spared``) and shepherds' trees. Following a tree reads those children files,
no walk of every process on the host: well under a millisecond.

- A **python activity** runs in the runner's process, as in Chaos Toolkit (it may keep
  state between activities); a **process activity** runs in a session of its own. The
  tree ends when the activity returns or raises. A process activity whose command
  exited while something it started still holds its output open has that tree ended at
  once (Chaos Toolkit would wait on the orphan), so its output is read to the end.
- At the activity's deadline or on SIGINT/SIGTERM to the run the tree is ended at once,
  and walked again when the run winds down (an abandoned thread may still be running).
- No extra process per activity: a process under its own shepherd (the first design)
  cost ~25 ms of CPU per process activity, a trivial run's time many times over.
  ``chaoslab.engine.child`` does run each child ``chaoslab run`` under a shepherd, so a
  gate's or scheduler's run SIGKILLed after its grace leaves no activity tree behind.

Where the promise does not hold:

- a process started *outside* the tree on the activity's behalf by another daemon
  (``systemd-run``, ``at``, ``docker run``, a remote ``ssh host 'cmd &'``, a service
  asked over a socket) is nobody's descendant here;
- adopted orphans (escapees whose parent exited) are attributed by time: two activities
  running at once share those adopted meanwhile; and as the kernel hands orphans to the
  runner's main thread, a child the *main* thread forked meanwhile and still running
  when the activity ends is counted in too (children of the run's other threads — the
  guard's revert, heartbeats, dispatched reverts — never are);
- a python activity abandoned at its deadline keeps running on its thread: what it
  starts after the run wound down is ended only by the runner's exit (its thread dies
  with the process), not walked again;
- an activity's descendant that called ``setsid()`` survives a SIGKILL of a runner
  started by hand, re-parented to PID 1 (one of a gate's or scheduler's child run does
  not: ``chaoslab.engine.child`` runs it under a forwarding shepherd, which ends it);
- a process the runner may not signal (another user's, after a set-uid exec) is left,
  and one that forks faster than the bounded walks may survive them;
- on a system without ``PR_SET_CHILD_SUBREAPER`` (not Linux, or a kernel before 3.4) a
  ``setsid`` grandchild whose parent exited escapes to PID 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from chaoslab.engine import shepherd
from chaoslab.engine.shepherd import (
    PR_SET_CHILD_SUBREAPER,
    descendants,
    end_all,
    is_subreaper,
    prctl,
    spared,
    task_children,
    tree_table,
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


class Tree:
    """What an activity spawned: the processes the activity's thread forked and their
    descendants, plus orphans the runner adopted while it ran (its own escapees, whose
    parent died) — except chaoslab's helpers and shepherds' trees.

    The kernel lists a process's children per thread (``/proc/PID/task/TID/children``),
    so what an activity's own thread started is told apart exactly from what another
    activity's thread started at the same time (a continuous hypothesis probe beside a
    method action). Adopted orphans are listed under the runner's main thread: those
    (and the main thread's own children) are told apart by time only (new since the
    activity started).
    """

    def __init__(self, others: Callable[[], set[int]] = set) -> None:
        SUBREAPER.hold()
        self._held = True
        self._others = others  # the threads of the other activities running
        self._waited: set[int] = set()  # children a Popen waits for: never reaped here
        self.tid: int | None = None
        self.before = descendants(os.getpid(), tree_table(os.getpid()))

    def waited(self, pid: int) -> None:
        self._waited.add(pid)

    def members(self) -> dict[int, int]:
        """The tree's live processes now (pid → start ticks); its exited children reaped."""
        me = os.getpid()
        table = tree_table(me)
        own = set(task_children(me, self.tid)) if self.tid is not None else set()
        theirs = {p for tid in self._others() for p in task_children(me, tid)}
        # The kernel hands an orphan to the subreaper's first live thread, the main one:
        # children of the run's other threads (the guard's revert, the heartbeats, a
        # dispatched revert running ``iptables``) are never taken for adopted orphans.
        leader = set(task_children(me, me))
        adopted = {p for p in leader - own - theirs if p in table and self.before.get(p) != table[p][3]}
        new: dict[int, int] = {}
        for root in (own | adopted) & set(table):
            new[root] = table[root][3]
            new.update(descendants(root, table))
        out = {p for p in new if _is_shepherd(p)}
        out |= {d for p in out for d in descendants(p, table)}
        out |= spared([p for p in new if p not in out], table)
        mine = {p: t for p, t in new.items() if p not in out}
        for pid in list(mine):
            state, ppid = table[pid][0], table[pid][1]
            if state == "Z" and ppid == me and pid not in self._waited:
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


class ActivityTrees:
    """The process trees of one run's activities still running. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, Tree] = {}  # activity token -> its tree
        self._abandoned: dict[int, Tree] = {}  # ended once; walked again at wind-down
        self._next = 0

    @contextlib.contextmanager
    def activity(self, spawns: bool = True) -> Iterator[ActivityTree]:
        """An activity's tree while it runs (``spawns``: a python or process provider;
        others, such as a driver probe, have none)."""
        with self._lock:
            self._next += 1
            token = self._next
            tree = Tree(lambda: self._threads(token)) if spawns else None
            if tree is not None:
                self._running[token] = tree
        handle = ActivityTree(self, token, tree)
        try:
            yield handle
        finally:
            with self._lock:
                done = self._running.pop(token, None)
            if done is not None:
                done.end(final=True)  # the activity returned or raised: its tree ends with it

    def _threads(self, token: int) -> set[int]:
        """The threads of every activity but ``token``'s (running or abandoned)."""
        with self._lock:
            trees = [t for k, t in (*self._running.items(), *self._abandoned.items()) if k != token]
        return {t.tid for t in trees if t.tid is not None}

    def end(self, token: int) -> None:
        """End an activity's tree now (its deadline passed, or the run is interrupted);
        it is walked again when the run winds down (its thread may still be running)."""
        with self._lock:
            tree = self._running.pop(token, None)
            if tree is not None:
                self._abandoned[token] = tree
        if tree is not None:
            tree.end(final=False)

    def end_all(self) -> None:
        """The run winds down: end every activity tree still running, and walk abandoned
        activities' trees once more."""
        with self._lock:
            tokens = set(self._running)
        for token in tokens:
            self.end(token)
        with self._lock:
            abandoned, self._abandoned = list(self._abandoned.values()), {}
        for tree in abandoned:
            tree.end(final=True)


class ActivityTree:
    """One running activity's tree: note the child its code waits for, end the tree."""

    def __init__(self, trees: ActivityTrees, token: int, tree: Tree | None) -> None:
        self._trees = trees
        self._token = token
        self._tree = tree

    def runs_on(self, tid: int) -> None:
        """The activity's code runs on thread ``tid`` (``threading.get_native_id()``)."""
        if self._tree is not None:
            self._tree.tid = tid

    def started(self, pid: int) -> None:
        """``pid`` is a child a ``Popen`` of the activity waits for: never reaped here."""
        if self._tree is not None:
            self._tree.waited(pid)

    def clear(self) -> None:
        """End what the activity left running, now (its command exited, but something it
        started still holds its output open)."""
        if self._tree is not None:
            end_all(self._tree.members)

    def end(self) -> None:
        self._trees.end(self._token)
