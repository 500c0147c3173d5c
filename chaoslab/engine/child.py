"""Running chaoslab (or any command) in a child process: one place for the signal dance.

Used by the CI gate (``chaoslab.gate``), the scheduler's slots and game days
(``chaoslab.scheduler.runs``). The child runs in a session of its own, so a signal to
the parent's process group (Ctrl-C in a terminal, a CI runner's SIGTERM) does not reach
it behind the parent's back; the parent forwards SIGTERM itself, so the run reverts and
writes its journal, and SIGKILLs it only after a grace period. The child runs under a
shepherd (``chaoslab.engine.shepherd``, ``--forward``): a child subreaper that passes
those signals on and, once the child has exited — even SIGKILLed, before its own
activity trees could be ended — ends every process left below it (a python activity's
``setsid`` grandchild, a double-forked daemon), sparing chaoslab's watchdogs, stressors
and lab, whose leases must outlive a killed run. Whatever is left in the child's process
group is killed too. ``on_child`` gets the shepherd's pid: it lives exactly as long as
the run, plus the few seconds that ending a tree may take.

``verdict_of_exit`` is the one mapping from a child ``chaoslab run``'s exit status to a
verdict, for when the child left no journal or result to read one from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from chaoslab.engine.proctree import END_BOUND_S, shepherd_command
from chaoslab.verdict import ExitCode, Verdict

_POLL_S = 0.1


class StopFlag(Protocol):
    """What a running child's supervisor polls to know it must stop (a ``threading.Event`` is one)."""

    def is_set(self) -> bool: ...


class _Never:
    def is_set(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class ChildExit:
    """How a child ended: its return code, and whether the parent had to stop it."""

    returncode: int
    timed_out: bool = False
    stopped: bool = False  # the stop flag was set, or the parent was interrupted


def chaoslab_command(*args: str) -> list[str]:
    """``chaoslab ARGS…`` as a child of this interpreter (the same installation)."""
    return [sys.executable, "-m", "chaoslab.cli", *args]


def run_child(
    cmd: Sequence[str],
    *,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    stop: StopFlag | None = None,
    timeout_s: float | None = None,
    grace_s: float = 60.0,
    on_child: Callable[[int], None] = lambda pid: None,
    env: dict[str, str] | None = None,
) -> ChildExit:
    """Run ``cmd`` to its end in its own session; never leave it (or its group) behind.

    ``stop`` set, or ``timeout_s`` passed → SIGTERM (a chaoslab run reverts everything),
    then SIGKILL after ``grace_s``. An exception in the parent while it waits (SIGINT as
    ``KeyboardInterrupt``, or what a signal handler raises) does the same, then propagates.
    """
    flag = stop or _Never()
    started = time.monotonic()
    proc = subprocess.Popen(
        shepherd_command(cmd, forward=True),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        env=dict(os.environ) if env is None else env,
    )
    timed_out = stopped = False
    try:
        on_child(proc.pid)
        termed_at: float | None = None
        while True:
            try:
                proc.wait(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            overdue = timeout_s is not None and now - started > timeout_s
            if termed_at is None and (flag.is_set() or overdue):
                timed_out, stopped = overdue, not overdue
                proc.send_signal(signal.SIGTERM)  # the engine reverts everything on SIGTERM
                termed_at = now
            elif termed_at is not None and now - termed_at > grace_s:
                _kill(proc)  # its ledger entries are left for recover()
    except BaseException:
        _terminate(proc, grace_s)
        raise
    finally:
        if proc.poll() is None:  # unwinding on an error of our own: never orphan it
            _kill(proc)
        reap_group(proc.pid)
    return ChildExit(returncode=proc.returncode, timed_out=timed_out, stopped=stopped)


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM (the run reverts), up to ``grace_s`` to end, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command: SIGQUIT asks its shepherd to, and to end the tree left behind;
    a shepherd that has not ended in time is SIGKILLed with its group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(timeout=END_BOUND_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def reap_group(pgid: int) -> None:
    """SIGKILL what is left in a finished child's process group (its session, led by it).

    The run is over: anything still in its group is a stray activity process (a Chaos
    Toolkit process provider's child an interrupted run did not wait for). Fault
    watchdogs, stressors and the lab call ``setsid`` and live in sessions of their own,
    so their leases are not touched. The kernel does not hand out a pid that is still a
    live group's id, so while strays exist ``pgid`` names only them.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left (the usual case)


def verdict_of_exit(code: int) -> Verdict:
    """The verdict a child ``chaoslab run``'s exit status stands for (no journal to read)."""
    if code in (-signal.SIGTERM, -signal.SIGINT):
        return Verdict.INTERRUPTED  # stopped before the engine could catch the signal
    try:
        return Verdict[ExitCode(code).name]
    except ValueError:
        return Verdict.ERROR
