"""Who owns a ledger entry, a lock or a run registration, and whether that owner still lives.

An ``Owner`` names one process of one run: run id, pid, hostname, and the process's
identity at birth. "Is the owner alive?" is the question every safety decision turns on
(recover a dead run's faults, reclaim a dead run's locks, signal a live run on halt), and
getting it wrong in the "dead" direction steals from a live run. So the answer errs on
the side of "alive":

- a different hostname → ``UNKNOWN`` (we cannot see its processes; never treated as dead);
- a different boot id (``/proc/sys/kernel/random/boot_id``) → ``DEAD``: the machine rebooted;
- pid gone, or a zombie (exited, not yet reaped) → ``DEAD``;
- pid present but started at another moment → ``DEAD``: the pid was reused;
- anything we cannot read → ``ALIVE``.

Why hand-written rather than psutil alone: psutil's ``create_time()`` is ``btime +
start_ticks / CLK_TCK``, and ``btime`` moves when the wall clock is stepped (NTP at boot),
so comparing create times across a clock step could call a live process "reused". On
Linux we therefore also record the raw start time in clock ticks since boot (field 22 of
``/proc/<pid>/stat``, immune to clock steps) together with the boot id, which psutil does
not expose. psutil's create time is kept for display and as the fallback elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

# Create times from psutil are rounded to clock ticks and shift with clock steps; a pid
# reused within this window of the original's birth is not a realistic event.
_CREATE_TIME_SLACK_S = 1.0


class Life(StrEnum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # on another host: we cannot tell, so never treat it as dead


class Liveness(msgspec.Struct, frozen=True, kw_only=True):
    life: Life
    reason: str

    @property
    def dead(self) -> bool:
        return self.life is Life.DEAD


class ProcStat(msgspec.Struct, frozen=True, kw_only=True):
    """The two facts of ``/proc/<pid>/stat`` we need: state letter and start ticks."""

    state: str
    start_ticks: int


def read_proc_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the pid does not exist or /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself contain spaces and ')'.
    tail = text[text.rfind(")") + 2 :].split()
    try:
        # tail[0] is field 3 (state); starttime is field 22 → tail[19].
        return ProcStat(state=tail[0], start_ticks=int(tail[19]))
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip() or None
    except OSError:
        return None


def _create_time(pid: int) -> float | None:
    """psutil's formula (boot time + start ticks / CLK_TCK), read from /proc directly:
    importing psutil costs ~10 ms of every ``chaoslab run``'s start-up."""
    stat = read_proc_stat(pid)
    if stat is not None:
        try:
            for line in Path("/proc/stat").read_text("ascii").splitlines():
                if line.startswith("btime "):
                    return int(line.split()[1]) + stat.start_ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            pass
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    """One process of one run, identified so that a reused pid is never mistaken for it."""

    run_id: str
    pid: int
    hostname: str
    create_time: float | None
    start_ticks: int | None = None
    boot_id: str | None = None
    since: float

    @classmethod
    def current(cls, run_id: str) -> Owner:
        """The calling process, acting for ``run_id``."""
        return cls.of_pid(os.getpid(), run_id)

    @classmethod
    def of_pid(cls, pid: int, run_id: str) -> Owner:
        stat = read_proc_stat(pid)
        return cls(
            run_id=run_id,
            pid=pid,
            hostname=os.uname().nodename,
            create_time=_create_time(pid),
            start_ticks=stat.start_ticks if stat else None,
            boot_id=boot_id(),
            since=time.time(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pid": self.pid,
            "hostname": self.hostname,
            "create_time": self.create_time,
            "start_ticks": self.start_ticks,
            "boot_id": self.boot_id,
            "since": self.since,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Owner:
        """Parse an owner; raises KeyError/TypeError/ValueError on a malformed mapping."""
        create_time = raw.get("create_time")
        start_ticks = raw.get("start_ticks")
        boot = raw.get("boot_id")
        return cls(
            run_id=str(raw["run_id"]),
            pid=int(raw["pid"]),
            hostname=str(raw["hostname"]),
            create_time=float(create_time) if create_time is not None else None,
            start_ticks=int(start_ticks) if start_ticks is not None else None,
            boot_id=str(boot) if boot is not None else None,
            since=float(raw.get("since", 0.0)),
        )

    def same_process(self, other: Owner) -> bool:
        return (
            self.hostname == other.hostname
            and self.pid == other.pid
            and self.boot_id == other.boot_id
            and self.start_ticks == other.start_ticks
        )

    def liveness(self) -> Liveness:
        """Is this owner's process still running? Errs towards ALIVE/UNKNOWN, never DEAD."""
        if self.hostname != os.uname().nodename:
            return Liveness(life=Life.UNKNOWN, reason=f"owner is on another host ({self.hostname})")
        now_boot = boot_id()
        if self.boot_id and now_boot and self.boot_id != now_boot:
            return Liveness(life=Life.DEAD, reason="the machine rebooted since")
        stat = read_proc_stat(self.pid)
        if stat is not None:
            if stat.state in ("Z", "X"):
                return Liveness(life=Life.DEAD, reason=f"pid {self.pid} has exited (zombie)")
            if self.start_ticks is not None and stat.start_ticks != self.start_ticks:
                return Liveness(life=Life.DEAD, reason=f"pid {self.pid} was reused by another process")
            if self.start_ticks is not None:
                return Liveness(life=Life.ALIVE, reason=f"pid {self.pid} is running")
        import psutil

        if stat is None and not psutil.pid_exists(self.pid):
            return Liveness(life=Life.DEAD, reason=f"pid {self.pid} is gone")
        # No /proc identity to compare (not Linux, or recorded elsewhere): use psutil.
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return Liveness(life=Life.DEAD, reason=f"pid {self.pid} has exited (zombie)")
            created = proc.create_time()
        except psutil.NoSuchProcess:
            return Liveness(life=Life.DEAD, reason=f"pid {self.pid} is gone")
        except (psutil.Error, OSError):
            return Liveness(life=Life.ALIVE, reason=f"pid {self.pid} exists (identity unreadable)")
        if self.create_time is not None and abs(created - self.create_time) > _CREATE_TIME_SLACK_S:
            return Liveness(life=Life.DEAD, reason=f"pid {self.pid} was reused by another process")
        return Liveness(life=Life.ALIVE, reason=f"pid {self.pid} is running")

    def describe(self) -> str:
        """``run r-1 (pid 123 on host-a, since 2024-05-01T12:00:00Z)``."""
        return f"run {self.run_id} (pid {self.pid} on {self.hostname}, since {iso(self.since)})"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
