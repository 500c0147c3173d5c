"""Leases that follow the run: a heartbeat file the runner renews, read by the target side.

While a run lives, its ``FaultManager`` touches one file per leased fault every
``HEARTBEAT_S`` (``<run dir>/leases/<fault_id>.beat``; the path travels in
``RevertRecord.heartbeat``). Whatever ends the fault on the target without the runner —
the lease watchdog — reads that file: when it has not been renewed for ``LAPSE_S``
(four missed heartbeats, Steadybit's rule) the fault ends at once, whatever its planned
duration. ``lease_expires_at`` stays a hard ceiling. So a fault without ``duration`` lasts
exactly as long as its method, and a dead (or stuck) runner's faults end within
``LAPSE_S`` + ``POLL_S`` seconds.

The runner keeps beating through its own revert (grace periods included) and stops only
once the revert is verified clean (``retire``): a revert is never raced by its own
lease, and a failed revert leaves the lease armed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from chaoslab.drivers.base import RevertRecord

HEARTBEAT_S = 1.0  # how often a live runner renews each lease
LAPSE_S = 4.0  # renewals missed for this long: the target ends the fault
POLL_S = 0.2  # how often the target side looks


def beat_path(state_dir: Path, fault_id: str) -> Path:
    """The heartbeat file of one fault (absolute: any process reads the same file)."""
    return (state_dir / "leases" / f"{fault_id}.beat").absolute()


def lapse_path(state_dir: Path, fault_id: str) -> Path:
    """Written the moment a lease ends its fault (before the revert), with the reason:
    by the watchdog, or by the run when a remote target says so (``watchdog.report_lapse``)."""
    return state_dir / "watchdogs" / f"{fault_id}.lapsed.json"


def beat(path: str | Path) -> None:
    """Renew a lease: the file's mtime is the last heartbeat."""
    p = Path(path)
    try:
        os.utime(p)
    except FileNotFoundError:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()


def retire(path: str | Path) -> None:
    """The fault was reverted and verified clean: no more heartbeats. Idempotent."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def lapse_reason(record: RevertRecord, now: float | None = None) -> str | None:
    """Why the lease of ``record`` has ended, or None while it holds."""
    now = time.time() if now is None else now
    if record.lease_expires_at is not None and now >= record.lease_expires_at:
        return f"its lease expired ({record.lease_s or 0:g}s)"
    if record.heartbeat:
        try:
            last = os.stat(record.heartbeat).st_mtime
        except FileNotFoundError:
            return "its heartbeat file is gone (the run ended without reverting it)"
        except OSError as exc:
            return f"its heartbeat file cannot be read ({exc.strerror})"
        if now - last > LAPSE_S:
            return f"the run stopped renewing its lease ({now - last:.1f}s without a heartbeat)"
    return None
