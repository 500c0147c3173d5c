"""``recover``: revert and close the open ledger entries that earlier runs left behind.

For each open entry, under the ledger's recover lock (so two recovers never revert the
same entry; the second waits, then finds it closed):

1. skip it if its owner is alive (``only_dead_owners``), or on another host (we cannot
   tell whether it lives);
2. load its driver from the registry; if that fails the entry stays open, with a message;
3. ``driver.revert`` (idempotent by contract), then ``driver.check_clean``;
4. clean → ``close_entry``; residue or an error → the entry stays open, reported.

Damaged entries are handled without losing anything: corrupt ones are moved byte for
byte to ``quarantine/`` and reported for a human; entries from a newer chaoslab and
unreadable ones are left in place and reported.

``RecoverReport.ok`` is False whenever something still needs a human (residue, error,
missing driver, damaged entry, remote owner); entries skipped because their run is alive
are not failures.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from chaoslab import paths
from chaoslab.drivers import lease
from chaoslab.drivers.base import CleanReport, DriverContext, RevertResult
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.errors import ChaoslabError
from chaoslab.safety.ledger import Ledger, LedgerEntry, LedgerEntryError, ProblemKind
from chaoslab.safety.owner import Life, Owner


class EntryStatus(StrEnum):
    CLOSED = "closed"  # reverted, verified clean, entry closed
    RESIDUE = "residue"  # reverted but check_clean found residue: stays open
    ERROR = "error"  # revert or check_clean failed: stays open
    DRIVER_UNAVAILABLE = "driver-unavailable"  # stays open
    OWNER_ALIVE = "owner-alive"  # skipped: its run is still running
    OWNER_UNKNOWN = "owner-unknown"  # skipped: owner on another host
    QUARANTINED = "quarantined"  # damaged: moved to quarantine/ for a human
    NEWER_VERSION = "newer-version"  # left in place for the chaoslab that wrote it
    UNREADABLE = "unreadable"  # left in place (permissions, I/O error)
    NEEDS_SECRET = "needs-secret"  # its record's secret cannot be read again: stays open


_NEEDS_ATTENTION = frozenset(EntryStatus) - {EntryStatus.CLOSED, EntryStatus.OWNER_ALIVE}


@dataclass(frozen=True, kw_only=True)
class EntryOutcome:
    """What recover did with one ledger entry."""

    status: EntryStatus
    path: Path
    fault_id: str | None = None
    target: str | None = None
    driver: str | None = None
    operation: str | None = None
    run_id: str | None = None
    owner: str = ""  # the owner's description and liveness
    reverted: bool = False
    clean: bool | None = None
    residue: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    detail: str = ""
    time_to_recover_s: float | None = None
    elapsed_s: float = 0.0

    @property
    def needs_attention(self) -> bool:
        return self.status in _NEEDS_ATTENTION

    def line(self) -> str:
        what = f"{self.target or '?'} {self.driver or '?'}.{self.operation or '?'}"
        head = f"[{self.status.value}] {what} (fault {self.fault_id or '?'})"
        parts = [p for p in (self.detail, *self.errors) if p]
        if self.residue:
            parts.append("residue: " + "; ".join(self.residue))
        return head + (": " + " | ".join(parts) if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "path": str(self.path),
            "fault_id": self.fault_id,
            "target": self.target,
            "driver": self.driver,
            "operation": self.operation,
            "run_id": self.run_id,
            "owner": self.owner,
            "reverted": self.reverted,
            "clean": self.clean,
            "residue": list(self.residue),
            "errors": list(self.errors),
            "detail": self.detail,
            "time_to_recover_s": self.time_to_recover_s,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True, kw_only=True)
class RecoverReport:
    outcomes: tuple[EntryOutcome, ...] = ()
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def closed(self) -> tuple[EntryOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is EntryStatus.CLOSED)

    @property
    def needs_attention(self) -> tuple[EntryOutcome, ...]:
        return tuple(o for o in self.outcomes if o.needs_attention)

    @property
    def ok(self) -> bool:
        """Nothing left that a human must look at (live runs' entries do not count)."""
        return not self.needs_attention

    def merged(self, other: RecoverReport) -> RecoverReport:
        return RecoverReport(
            outcomes=self.outcomes + other.outcomes,
            elapsed_s=self.elapsed_s + other.elapsed_s,
            notes=self.notes + other.notes,
        )

    def lines(self) -> list[str]:
        if not self.outcomes:
            return ["no open ledger entries to recover", *self.notes]
        head = (
            f"{len(self.outcomes)} ledger entr{'y' if len(self.outcomes) == 1 else 'ies'}: "
            f"{len(self.closed)} reverted and verified clean, "
            f"{len(self.needs_attention)} need attention"
        )
        return [head, *(o.line() for o in self.outcomes), *self.notes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "elapsed_s": self.elapsed_s,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "notes": list(self.notes),
        }


def recover(
    registry: DriverRegistry,
    *,
    only_dead_owners: bool = True,
    run_ids: Collection[str] | None = None,
    force_run_ids: Collection[str] = (),
    ledger: Ledger | None = None,
    lock_timeout_s: float = 60.0,
    recover_run_id: str = "recover",
    home: Path,
) -> RecoverReport:
    """Revert, verify and close the open entries of dead runs; report each entry.

    ``only_dead_owners=False`` also reverts entries of live runs (``halt`` does this for
    runs that did not revert in time). ``run_ids`` restricts recovery to those runs'
    entries; ``force_run_ids`` reverts those runs' entries even though their owners are
    alive, and the other entries only if their owners are dead.

    ``home``: chaoslab's home the entries' runs used (drivers' run state, the lab, and
    the ledger when ``ledger`` is not given); the session passes its own.

    Raises ``LedgerError`` only if the ledger cannot be listed or another recover holds
    the lock past ``lock_timeout_s``; everything about single entries is in the report.
    """
    ledger = ledger or Ledger(paths.ledger_dir(home))
    started = time.monotonic()
    me = Owner.current(recover_run_id)
    outcomes: list[EntryOutcome] = []
    with ledger.recover_lock(lock_timeout_s):
        # Scanned under the lock: whatever a previous recover closed is gone by now.
        scan = ledger.scan()
        for problem in scan.problems:
            outcomes.append(_handle_problem(ledger, problem))
        for entry in scan.entries:
            if run_ids is not None and entry.record.run_id not in run_ids:
                continue
            dead_only = only_dead_owners and entry.record.run_id not in force_run_ids
            outcomes.append(_recover_entry(ledger, registry, entry, dead_only, me, home))
    return RecoverReport(outcomes=tuple(outcomes), elapsed_s=time.monotonic() - started)


def _handle_problem(ledger: Ledger, problem: LedgerEntryError) -> EntryOutcome:
    if problem.kind is ProblemKind.CORRUPT:
        try:
            dest = ledger.quarantine(problem.path)
        except ChaoslabError as exc:
            return EntryOutcome(
                status=EntryStatus.UNREADABLE,
                path=problem.path,
                target=problem.target,
                detail=str(problem),
                errors=(str(exc),),
            )
        return EntryOutcome(
            status=EntryStatus.QUARANTINED,
            path=dest,
            target=problem.target,
            detail=(
                f"{problem.path} is damaged ({problem.reason}); moved unchanged to {dest}:"
                " check by hand that its fault is gone from the target"
            ),
        )
    status = EntryStatus.NEWER_VERSION if problem.kind is ProblemKind.NEWER else EntryStatus.UNREADABLE
    return EntryOutcome(status=status, path=problem.path, target=problem.target, detail=str(problem))


def _recover_entry(
    ledger: Ledger,
    registry: DriverRegistry,
    entry: LedgerEntry,
    only_dead_owners: bool,
    me: Owner,
    home: Path,
) -> EntryOutcome:
    record = entry.record
    started = time.monotonic()
    life = entry.owner.liveness()
    base: dict[str, Any] = {
        "path": entry.path,
        "fault_id": record.fault_id,
        "target": record.target,
        "driver": record.driver,
        "operation": record.operation,
        "run_id": record.run_id,
        "owner": f"{entry.owner.describe()}: {life.reason}",
    }
    if only_dead_owners and life.life is Life.ALIVE:
        return EntryOutcome(
            status=EntryStatus.OWNER_ALIVE,
            detail=f"left to its run, which is still alive ({life.reason})",
            **base,
        )
    if only_dead_owners and life.life is Life.UNKNOWN:
        return EntryOutcome(
            status=EntryStatus.OWNER_UNKNOWN,
            detail=f"{life.reason}: run `chaoslab recover` there",
            **base,
        )
    if entry.needs_secret:
        return EntryOutcome(
            status=EntryStatus.NEEDS_SECRET,
            errors=entry.needs_secret,
            detail=(
                "its revert record needs a secret it keeps only as a reference: make it readable"
                " again (set the environment variable, restore the file) and run recover again,"
                " or revert the fault by hand; entry left open"
            ),
            **base,
        )
    try:
        driver = registry.get(record.driver)
    except ChaoslabError as exc:
        return EntryOutcome(
            status=EntryStatus.DRIVER_UNAVAILABLE,
            errors=(f"driver {record.driver!r} cannot be loaded: {exc}",),
            detail="entry left open; install the driver and run recover again",
            elapsed_s=time.monotonic() - started,
            **base,
        )
    ctx = DriverContext(
        run_id=record.run_id or me.run_id,
        state_dir=paths.runs_dir(home) / (record.run_id or me.run_id),
        lab_dir=paths.lab_dir(home),
    )
    result: RevertResult | None = None
    errors: list[str] = []
    # A driver is third-party code: any exception from it must become a report line for
    # this entry, not abort the recovery of every other entry. BaseException
    # (KeyboardInterrupt) still propagates.
    try:
        result = driver.revert(ctx, record)
    except Exception as exc:
        errors.append(f"revert failed: {type(exc).__name__}: {exc}")
    report: CleanReport | None = None
    try:
        report = driver.check_clean(ctx, record)
    except Exception as exc:
        errors.append(f"check_clean failed: {type(exc).__name__}: {exc}")
    common: dict[str, Any] = {
        "reverted": bool(result and result.reverted),
        "time_to_recover_s": result.time_to_recover_s if result else None,
        **base,
    }
    if report is None:
        return EntryOutcome(
            status=EntryStatus.ERROR,
            clean=None,
            errors=tuple(errors),
            detail="entry left open",
            elapsed_s=time.monotonic() - started,
            **common,
        )
    if not report.clean:
        return EntryOutcome(
            status=EntryStatus.RESIDUE,
            clean=False,
            residue=report.residue,
            errors=tuple(errors),
            detail=report.detail or "target not clean after revert; entry left open",
            elapsed_s=time.monotonic() - started,
            **common,
        )
    if record.heartbeat:
        lease.retire(record.heartbeat)  # verified clean: its lease has nothing left to end
    try:
        ledger.close_entry(record.fault_id, report, closed_by=me, detail="closed by recover")
    except ChaoslabError as exc:
        errors.append(f"reverted and clean, but closing the entry failed: {exc}")
        return EntryOutcome(
            status=EntryStatus.ERROR,
            clean=True,
            errors=tuple(errors),
            elapsed_s=time.monotonic() - started,
            **common,
        )
    detail = (result.detail if result else "") or "reverted and verified clean"
    return EntryOutcome(
        status=EntryStatus.CLOSED,
        clean=True,
        errors=tuple(errors),
        detail=detail,
        elapsed_s=time.monotonic() - started,
        **common,
    )
