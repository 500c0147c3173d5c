"""The shepherd: runs one command so that its whole process tree can be ended, and is.

Usage (``chaoslab.engine.child`` runs every child ``chaoslab run`` — the CI gate's, the
scheduler's, game days' — through it with ``--forward``)::

    python -I -S <this file> [--forward] -- COMMAND [ARG...]

Standard library only, run as a script with ``-I -S`` (no site-packages): it starts in a
few milliseconds and needs nothing installed.

The shepherd makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux
3.4+, no privilege needed): every process below it whose parent exits is re-parented to
it instead of to PID 1. A grandchild that calls ``setsid()``, double-forks into a daemon
or changes its process group is still the shepherd's descendant, so a walk of ``/proc``
from the shepherd finds the whole tree. The shepherd forks and execs the command, waits
for it, and then ends every descendant left (SIGTERM, a short grace, SIGKILL; bounded) —
so nothing the command started can outlive it or hold a CI step's stdout open — and
exits with the command's own status (a command killed by signal N makes the
shepherd die of signal N).

With ``--forward`` it passes SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 on to the
command (a run reverts its faults and ends its own activities' trees first), SIGKILLs
it on SIGQUIT, and ends the tree once it has exited: what a SIGKILLed run left behind
too. Without it, SIGTERM, SIGINT or SIGHUP end the whole tree at once, as does the death
of the thread that started the shepherd (``PR_SET_PDEATHSIG``).

The engine's own activity trees use the same functions (``tree_table``, ``spared``,
``end_all``) in the runner's process, which is a subreaper while an activity runs
(``chaoslab.engine.proctree``).

Chaoslab's own detached helpers are spared (they belong to a run's faults): lease
watchdogs, stressors and the lab are found by their module on the command line, by the
``CHAOSLAB_FAULT_ID`` tag in their environment, or by the session they lead; they are
left to their leases and re-parent to PID 1 when the shepherd exits.

Where the promise does not hold: a process that is not a descendant at all — one another
daemon starts on the command's request (``systemd-run``, ``at``, ``docker run``, ``ssh
host cmd &``, a process started through a socket-activated service) — is outside any
tree; a descendant that ignores SIGTERM survives the grace period but not SIGKILL; a
process the shepherd cannot signal (another user's, after a set-uid exec) is left
(reported on stderr); a descendant created after the last walk of a bounded ending (a
fork bomb faster than the walks) may survive. If the shepherd itself is SIGKILLed, its
orphans re-parent to the next subreaper above it or to PID 1.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing alone costs ~5 ms of start-up
if TYPE_CHECKING:  # only for annotations: every import here costs start-up time
    from collections.abc import Callable, Iterable, Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

GRACE_S = 1.0  # between SIGTERM and SIGKILL
KILL_BOUND_S = 3.0  # SIGKILL walks go on at most this long after the grace
_WALK_S = 0.02

# Chaoslab's detached helpers: their leases must outlive whatever run started them.
HELPER_MODULES = ("chaoslab.drivers.watchdog", "chaoslab.drivers.stress_worker", "chaoslab.lab.supervisor")
HELPER_ENV = b"CHAOSLAB_FAULT_ID="


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where it is unavailable (not Linux) or refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        return int(libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)) == 0 and bool(flag.value)
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start time in clock ticks) of ``pid``, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[1]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def processes() -> dict[int, tuple[str, int, int, int]]:
    """Every process visible in /proc: pid → (state, ppid, sid, start ticks)."""
    found = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit() and (st := _stat(int(name))) is not None:
            found[int(name)] = st
    return found


def _children(pid: int) -> list[int] | None:
    """``pid``'s children from ``/proc/PID/task/*/children`` (None where the kernel lacks it)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended
            return None  # no CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            continue
    return found


def task_children(pid: int, tid: int) -> list[int]:
    """The children thread ``tid`` of process ``pid`` forked (those still its own)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []


def tree_table(root: int) -> dict[int, tuple[str, int, int, int]]:
    """``root``'s descendants (zombies included) as a ``processes()`` table, read by
    following children links (cheap: no walk of every process on the host)."""
    table: dict[int, tuple[str, int, int, int]] = {}
    todo = [root]
    for _ in range(100_000):  # bounded: a tree read mid-fork may hold a cycle
        if not todo:
            return table
        pid = todo.pop()
        kids = _children(pid)
        if kids is None:
            full = processes()
            return {p: full[p] for p in descendants(root, full)}
        for kid in kids:
            if kid not in table and kid != root and (st := _stat(kid)) is not None:
                table[kid] = st
                todo.append(kid)
    return table


def descendants(root: int, table: dict[int, tuple[str, int, int, int]] | None = None) -> dict[int, int]:
    """The descendants of ``root`` (zombies included): pid → start time in clock ticks."""
    table = processes() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid in found or pid == root:
            continue
        found[pid] = table[pid][3]
        todo.extend(children.get(pid, ()))
    return found


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def is_helper(pid: int) -> bool:
    """Whether ``pid`` is one of chaoslab's detached helpers (a watchdog, a stressor, the lab)."""
    argv = _read(f"/proc/{pid}/cmdline").split(b"\0")
    if any(m.encode() in argv for m in HELPER_MODULES):
        return True
    return any(v.startswith(HELPER_ENV) for v in _read(f"/proc/{pid}/environ").split(b"\0"))


def spared(pids: Iterable[int], table: dict[int, tuple[str, int, int, int]]) -> set[int]:
    """Those of ``pids`` that are helpers, in a helper's session, or below a helper."""
    helpers = {p for p in pids if is_helper(p)}
    sessions = {p for p in helpers if table.get(p, ("", 0, -1, 0))[2] == p}
    out = set(helpers)
    for pid in pids:
        if pid in out:
            continue
        if table.get(pid, ("", 0, 0, 0))[2] in sessions:
            out.add(pid)
            continue
        seen = 0
        ppid = table.get(pid, ("", 0, 0, 0))[1]
        while ppid > 1 and seen < 64:  # bounded: a table read mid-fork may hold a cycle
            if ppid in helpers:
                out.add(pid)
                break
            ppid = table.get(ppid, ("", 0, 0, 0))[1]
            seen += 1
    return out


def _signal(pid: int, ticks: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``ticks``."""
    st = _stat(pid)
    if st is None or st[3] != ticks or st[0] == "Z":
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        sys.stderr.write(f"chaoslab shepherd: not allowed to end pid {pid}\n")
        return False
    return True


def reap(keep: dict[int, int] | None = None) -> None:
    """Reap every exited child of this process (a subreaper's duty); statuses go to ``keep``."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if keep is not None:
            keep[pid] = status


def end_all(
    walk: Callable[[], dict[int, int]],
    *,
    grace_s: float = GRACE_S,
    bound_s: float = KILL_BOUND_S,
    after_walk: Callable[[], None] = lambda: None,
) -> dict[int, int]:
    """End every process ``walk()`` yields (pid → start ticks): SIGTERM, up to ``grace_s``
    for them to exit, then SIGKILL, walking again for late forks, for at most ``bound_s``
    more. Returns what was still alive at the end (empty on success)."""
    termed: dict[int, int] = {}
    start = time.monotonic()
    live: dict[int, int] = {}
    while True:
        after_walk()
        table = walk()
        live = {
            p: t for p, t in table.items() if (st := _stat(p)) is not None and st[0] != "Z" and st[3] == t
        }
        if not live:
            return {}
        late = time.monotonic() - start > grace_s
        for pid, ticks in live.items():
            if late:
                _signal(pid, ticks, signal.SIGKILL)
            elif termed.get(pid) != ticks and _signal(pid, ticks, signal.SIGTERM):
                termed[pid] = ticks
                try:
                    os.kill(pid, signal.SIGCONT)  # a stopped process must run to see SIGTERM
                except OSError:
                    pass
        if time.monotonic() - start > grace_s + bound_s:
            return live
        time.sleep(_WALK_S)


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _exit_as(status: int | None) -> int:
    if status is None:
        return 128 + signal.SIGKILL
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL's cannot be set (nor needs to be)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def shepherd(cmd: Sequence[str], *, forward: bool = False) -> int:
    """Run ``cmd`` as this subreaper's child; end what is left of its tree after it.

    ``forward`` (a child ``chaoslab run``: ``chaoslab.engine.child``): SIGTERM, SIGINT,
    SIGHUP, SIGUSR1 and SIGUSR2 are passed on to the command, which winds down by itself
    (a run reverts its faults first); SIGQUIT SIGKILLs it; the tree is ended once it has
    exited; and the shepherd outlives its parent, as the command would. Otherwise
    (an activity): those signals, and the death of the parent's thread, end the whole
    tree at once.
    """
    parent = os.getppid()
    if not prctl(PR_SET_CHILD_SUBREAPER, 1):
        sys.stderr.write(
            "chaoslab shepherd: PR_SET_CHILD_SUBREAPER is unavailable; a setsid child may escape\n"
        )
    child = 0
    if forward:

        def pass_on(signum: int, frame: object) -> None:
            if child > 0:
                try:
                    os.kill(child, signal.SIGKILL if signum == signal.SIGQUIT else signum)
                except OSError:
                    pass

        for sig in (*FORWARDED, signal.SIGQUIT):
            signal.signal(sig, pass_on)
    else:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _stop)
    me = os.getpid()
    statuses: dict[int, int] = {}
    try:
        if not forward and os.getppid() != parent:
            raise _Stop(signal.SIGTERM)  # the runner died before PR_SET_PDEATHSIG was set
        # Signals wait until ``child`` is known (a forwarded one must reach it).
        signal.pthread_sigmask(signal.SIG_BLOCK, [*FORWARDED, signal.SIGQUIT])
        child = os.fork()
        if child == 0:
            try:
                for sig in (*FORWARDED, signal.SIGQUIT):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [*FORWARDED, signal.SIGQUIT])
                os.execvp(cmd[0], list(cmd))
            except BaseException as exc:
                try:
                    os.write(2, f"chaoslab shepherd: cannot run {cmd[0]}: {exc}\n".encode())
                except Exception:
                    pass
            finally:
                os._exit(127)
        # The command and its tree hold the activity's pipes; the shepherd lets go of its
        # copies so the runner sees end-of-file as soon as the tree is gone.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [*FORWARDED, signal.SIGQUIT])
        while child not in statuses:
            pid, status = os.waitpid(-1, 0)
            statuses[pid] = status
    except (_Stop, ChildProcessError):
        pass
    for sig in (*FORWARDED, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # the ending is bounded; do not cut it short

    def walk() -> dict[int, int]:
        table = processes()
        tree = descendants(me, table)
        keep = spared(tree, table)
        return {p: t for p, t in tree.items() if p not in keep}

    if _has_children(statuses):  # none left: no descendant either (spares a /proc walk)
        end_all(walk, after_walk=lambda: reap(statuses))
        reap(statuses)
    return _exit_as(statuses.get(child))


def _has_children(keep: dict[int, int]) -> bool:
    """Whether this process still has a child (reaping the exited ones into ``keep``).
    A subreaper without children has no descendants: every orphan below it is its child."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        keep[pid] = status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    forward = args[:1] == ["--forward"]
    if forward:
        args = args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.stderr.write("usage: shepherd.py [--forward] -- COMMAND [ARG...]\n")
        return 2
    return shepherd(args, forward=forward)


if __name__ == "__main__":
    raise SystemExit(main())
