"""The ledger: a durable record of every fault that may still be active on a target.

Life of an entry (the engine drives it; see ``chaoslab.drivers.base``)::

    ledger.open_entry(record)        # durable on disk BEFORE the fault is applied
    record = driver.inject(ctx, record)
    ledger.update_entry(record)      # e.g. the watchdog pid was added by inject
    driver.revert(ctx, record); report = driver.check_clean(ctx, record)
    ledger.close_entry(record.fault_id, report)   # refused unless report.clean

Layout under the ledger directory (``StatePaths.ledger``)::

    open/<fault_id>.json        one file per open entry
    closed/<fault_id>.json      closed entries with their outcome (audit trail)
    quarantine/<name>           damaged entries moved aside by recover, byte for byte
    .mutate.lock                flock taken briefly by update/close (serialises them)
    .recover.lock               flock held by a recover for its whole run

Why one file per entry rather than an append-only log: entries have independent lives
(open → update → close) written by different processes (runs, ``recover``, ``halt``).
With one file each, two runs never write the same file, so opening needs no shared lock;
every write is temp + fsync + rename + directory fsync, so a reader sees a whole entry or
none and a crash can only leave a dot-prefixed temp file, never a torn entry. A log would
need a global writer lock, compaction, and a rule for a torn tail that would hide every
entry after it. The cost, one small file per active fault, is negligible.

Invariants:

- an entry is never deleted: closing moves it to ``closed/``; an unreadable entry is
  reported (``LedgerEntryError`` naming the file) and left in place, or moved to
  ``quarantine/`` by ``recover``, never removed;
- ``open_entry`` refuses a fault id that is already open (``link`` is exclusive);
- ``close_entry`` refuses a ``CleanReport`` that is not clean: such an entry stays open
  for ``recover`` to retry; closing an already-closed entry is a no-op (halt and the run
  may race to close the same entry);
- a listing that cannot be read raises ``LedgerError``: callers that gate runs on the
  ledger fail closed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RECORD_VERSION, CleanReport, RevertRecord
from chaoslab.errors import ChaoslabError, LedgerError
from chaoslab.masking import Masker, Unsealable, output_masker, unseal
from chaoslab.safety.durable import flocked, fsync_dir, write_json_atomic
from chaoslab.safety.owner import Owner, iso

LEDGER_VERSION = 1
OPEN_DIR = "open"
CLOSED_DIR = "closed"
QUARANTINE_DIR = "quarantine"
MUTATE_LOCK = ".mutate.lock"
RECOVER_LOCK = ".recover.lock"

_FAULT_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Salvages the target from a damaged entry so a run gate can still tell whom it concerns.
_TARGET_FIELD = re.compile(r'"target"\s*:\s*"((?:[^"\\]|\\.)*)"')


class EntryState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ProblemKind(StrEnum):
    CORRUPT = "corrupt"  # not JSON, truncated, or missing fields
    NEWER = "newer-version"  # written by a newer chaoslab: left for that version
    UNREADABLE = "unreadable"  # the OS refused to read it (permissions, I/O error)


class LedgerEntryError(LedgerError):
    """One ledger entry cannot be used. Carries the file, what is wrong, and the target
    when it could be salvaged from the damaged file."""

    def __init__(self, path: Path, kind: ProblemKind, reason: str, *, target: str | None = None):
        self.path = path
        self.kind = kind
        self.reason = reason
        self.target = target
        hint = {
            ProblemKind.CORRUPT: "`chaoslab recover` moves it to quarantine/ for a human to"
            " inspect; check that its fault is gone from the target",
            ProblemKind.NEWER: "recover it with the chaoslab version that wrote it",
            ProblemKind.UNREADABLE: "fix its permissions or run as the user that wrote it",
        }[kind]
        on = f" (target {target})" if target else ""
        super().__init__(f"ledger entry {path}{on} is {kind.value}: {reason}; {hint}")


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One open entry: the fault's revert record and the process that opened it."""

    path: Path
    record: RevertRecord
    owner: Owner
    opened_at: float
    updated_at: float
    # Why a sealed secret of the record could not be put back (the record then keeps its
    # placeholders): such an entry must not be reverted until the secret is readable.
    needs_secret: tuple[str, ...] = ()

    @property
    def fault_id(self) -> str:
        return self.record.fault_id

    @property
    def target(self) -> str:
        return self.record.target

    def describe(self) -> str:
        r = self.record
        return (
            f"{r.target}: {r.driver}.{r.operation} (fault {r.fault_id}, opened by "
            f"{self.owner.describe()}) [{self.path}]"
        )


@dataclass(frozen=True, kw_only=True)
class LedgerScan:
    """What a scan of ``open/`` found: usable entries and the entries it could not use."""

    entries: tuple[LedgerEntry, ...]
    problems: tuple[LedgerEntryError, ...]


class Ledger:
    """The ledger in ``directory`` (``StatePaths.ledger``: ``chaoslab.paths.ledger_dir(home)``).

    Holds no state besides the directory: any number of instances, in any number of
    processes, may work on the same ledger.

    Every record passes through ``masker`` on its way to disk: a secret in a fault's
    target, arguments or data is written as a placeholder with a reference to where it
    can be read again (``Masker.seal``); ``scan`` and ``entry`` put it back in memory
    and add it to ``masker`` so whatever prints the entry masks it. A record holding a
    secret that has no such reference is refused (``LedgerError``) before it is written.
    """

    def __init__(
        self,
        directory: Path,
        *,
        masker: Masker | None = None,
        identities: Callable[[RevertRecord], Iterable[str]] | None = None,
    ) -> None:
        self.directory = directory
        # The drivers' ``identities``: lets the open-ledger check re-key an entry an
        # older chaoslab keyed differently (see ``held_keys``).
        self.identities = identities
        # Default: the masker of what this process prints (the CLI installs one), so a
        # secret put back into a record for a revert (halt, recover) is masked there too.
        self.masker = masker if masker is not None else (output_masker() or Masker())

    @property
    def open_dir(self) -> Path:
        return self.directory / OPEN_DIR

    @property
    def closed_dir(self) -> Path:
        return self.directory / CLOSED_DIR

    @property
    def quarantine_dir(self) -> Path:
        return self.directory / QUARANTINE_DIR

    # --- writing ----------------------------------------------------------------------

    def open_entry(self, record: RevertRecord, *, owner: Owner | None = None) -> LedgerEntry:
        """Durably record ``record`` as open. Call BEFORE applying the fault.

        ``owner`` defaults to this process acting for ``record.run_id``. Raises
        ``LedgerError`` if the entry cannot be written (then the fault must not be
        applied) or if the fault id is already open.
        """
        path = self._entry_path(record.fault_id)
        owner = owner or Owner.current(record.run_id)
        now = time.time()
        self._ensure_dirs()
        try:
            write_json_atomic(path, self._entry_dict(record, owner, now, now), exclusive=True)
        except FileExistsError as exc:
            raise LedgerError(f"fault {record.fault_id} already has an open entry {path}") from exc
        except OSError as exc:
            raise LedgerError(f"cannot write ledger entry {path}: {exc.strerror or exc}") from exc
        return LedgerEntry(path=path, record=record, owner=owner, opened_at=now, updated_at=now)

    def update_entry(self, record: RevertRecord) -> LedgerEntry:
        """Replace the record of an open entry (e.g. after inject enriched it).

        Raises ``LedgerError`` if the entry is not open, e.g. because a halt already
        reverted and closed it: the caller must then revert what it just applied.
        """
        path = self._entry_path(record.fault_id)
        with self._mutating():
            current = self._read_open(path)
            if current is None:
                raise LedgerError(
                    f"fault {record.fault_id} has no open ledger entry {path} (closed by"
                    " recover or halt?); revert the fault now"
                )
            now = time.time()
            try:
                write_json_atomic(path, self._entry_dict(record, current.owner, current.opened_at, now))
            except OSError as exc:
                raise LedgerError(f"cannot write ledger entry {path}: {exc.strerror}") from exc
        return LedgerEntry(
            path=path, record=record, owner=current.owner, opened_at=current.opened_at, updated_at=now
        )

    def close_entry(
        self, fault_id: str, outcome: CleanReport, *, closed_by: Owner | None = None, detail: str = ""
    ) -> bool:
        """Close an entry whose revert was verified clean; ``outcome`` is that verification.

        Returns False if the entry was already closed (idempotent). Raises ``LedgerError``
        if ``outcome`` is not clean (the entry stays open) or the entry is unknown.
        """
        path = self._entry_path(fault_id)
        if not outcome.clean:
            residue = "; ".join(outcome.residue) or outcome.detail or "not clean"
            raise LedgerError(f"refusing to close ledger entry {path}: the target is not clean ({residue})")
        closed_path = self.closed_dir / path.name
        with self._mutating():
            try:
                raw = _load_json(path)
            except FileNotFoundError:
                if closed_path.exists():
                    return False
                raise LedgerError(f"no ledger entry for fault {fault_id} in {self.open_dir}") from None
            except LedgerEntryError as exc:
                raise LedgerError(f"cannot close ledger entry: {exc}") from exc
            raw.update(
                state=EntryState.CLOSED.value,
                closed_at=time.time(),
                outcome=self.masker.deep(
                    {"clean": True, "residue": list(outcome.residue), "detail": outcome.detail}
                ),
                closed_by=(closed_by or Owner.current("")).to_dict(),
                close_detail=self.masker.text(detail),
            )
            try:
                # Mark closed in place first: a crash before the move leaves an entry that
                # scans recognise as closed and finish moving.
                write_json_atomic(path, raw)
                self._finish_close(path)
            except OSError as exc:
                raise LedgerError(f"cannot close ledger entry {path}: {exc.strerror}") from exc
        return True

    def quarantine(self, path: Path) -> Path:
        """Move a damaged entry out of ``open/``, unchanged, and return where it went."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dest = self.quarantine_dir / f"{path.name}.{int(time.time())}"
        n = 0
        while dest.exists():
            n += 1
            dest = self.quarantine_dir / f"{path.name}.{int(time.time())}.{n}"
        try:
            os.rename(path, dest)
            fsync_dir(self.quarantine_dir)
            fsync_dir(path.parent)
        except OSError as exc:
            raise LedgerError(f"cannot quarantine {path}: {exc.strerror}") from exc
        return dest

    def prune_closed(self, older_than_s: float) -> int:
        """Delete closed entries older than ``older_than_s``; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            names = os.listdir(self.closed_dir)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LedgerError(f"cannot list {self.closed_dir}: {exc.strerror}") from exc
        for name in names:
            p = self.closed_dir / name
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # --- reading ----------------------------------------------------------------------

    def scan(self) -> LedgerScan:
        """Read every open entry. Damaged ones are returned as problems, left in place.

        Raises ``LedgerError`` if the directory itself cannot be listed.
        """
        try:
            names = sorted(os.listdir(self.open_dir))
        except FileNotFoundError:
            return LedgerScan(entries=(), problems=())
        except OSError as exc:
            raise LedgerError(
                f"cannot read the ledger directory {self.open_dir}: {exc.strerror}; fix its"
                " permissions or run as the user that ran chaoslab"
            ) from exc
        entries: list[LedgerEntry] = []
        problems: list[LedgerEntryError] = []
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue  # temp files of writers in progress (or that crashed before link)
            path = self.open_dir / name
            try:
                raw = _load_json(path)
                entry, state = _parse_entry(path, raw, self.masker)
            except FileNotFoundError:
                continue  # closed while we listed
            except LedgerEntryError as exc:
                problems.append(exc)
                continue
            if state is EntryState.CLOSED:
                self._finish_close_quietly(path)
                continue
            entries.append(entry)
        entries.sort(key=lambda e: (e.opened_at, e.fault_id))
        return LedgerScan(entries=tuple(entries), problems=tuple(problems))

    def open_entries(self) -> list[LedgerEntry]:
        """Every readable open entry (see ``scan`` for the unreadable ones)."""
        return list(self.scan().entries)

    def entry(self, fault_id: str) -> LedgerEntry | None:
        """The open entry of ``fault_id``, or None if it is not open."""
        return self._read_open(self._entry_path(fault_id), unseal_with=self.masker)

    def open_entries_for_targets(self, targets: Iterable[str]) -> list[LedgerEntry]:
        wanted = set(targets)
        return [e for e in self.scan().entries if e.target in wanted]

    def check_targets_clear(self, targets: Iterable[str]) -> None:
        """Raise ``LedgerError`` if a run must not start on ``targets``.

        Blocks on open entries for those targets and on entries that cannot be read
        whose target is one of them or cannot be told (a damaged entry might concern any
        target: fail closed). The message lists each entry and says to run
        ``chaoslab recover``.
        """
        wanted = set(targets)
        scan = self.scan()
        blocking = [e for e in scan.entries if e.target in wanted]
        damaged = [p for p in scan.problems if p.target is None or p.target in wanted]
        if not blocking and not damaged:
            return
        lines = []
        if blocking:
            lines.append(
                f"the ledger has {len(blocking)} open entr{'y' if len(blocking) == 1 else 'ies'}"
                " on this run's targets (faults an earlier run may have left active):"
            )
            lines += [f"  - {e.describe()}" for e in blocking]
        if damaged:
            lines.append(f"{len(damaged)} ledger entr{'y' if len(damaged) == 1 else 'ies'} cannot be read:")
            lines += [f"  - {p}" for p in damaged]
        lines.append("Run `chaoslab recover` to revert and close them, then run again.")
        raise LedgerError("\n".join(lines))

    def check_keys_clear(self, keys: Iterable[str], run_id: str) -> None:
        """Raise ``LedgerError`` if another run's open entry hits any of ``keys``.

        Keys are resolved identities (``RevertRecord.keys``), so one container named
        ``name:`` in one run and ``label:`` in another is one key. A run's own entries
        never block it. Damaged entries block when their target cannot be told.
        """
        wanted = set(keys)
        scan = self.scan()
        held = {e.record.fault_id: self.held_keys(e.record) for e in scan.entries}
        blocking = [e for e in scan.entries if e.record.run_id != run_id and wanted & held[e.record.fault_id]]
        damaged = [p for p in scan.problems if p.target is None]
        if not blocking and not damaged:
            return
        lines = []
        if blocking:
            lines.append(
                f"the ledger has {len(blocking)} open entr{'y' if len(blocking) == 1 else 'ies'}"
                " on what this fault would hit (faults an earlier run may have left active):"
            )
            lines += [
                f"  - {e.describe()} hits {', '.join(sorted(wanted & held[e.record.fault_id]))}"
                for e in blocking
            ]
        if damaged:
            lines.append(f"{len(damaged)} ledger entr{'y' if len(damaged) == 1 else 'ies'} cannot be read:")
            lines += [f"  - {p}" for p in damaged]
        lines.append("Run `chaoslab recover` to revert and close them, then run again.")
        raise LedgerError("\n".join(lines))

    def held_keys(self, record: RevertRecord) -> set[str]:
        """The keys an open entry holds: those stamped when it was opened and, when this
        ledger was given the drivers' ``identities``, those its driver derives from the
        record today -- so an entry an older chaoslab keyed another way (kubernetes: by
        name, now by uid) still blocks the object it hit. A driver that cannot read the
        record leaves the stamped keys."""
        keys = set(record.identity_keys())
        if self.identities is not None:
            try:
                keys.update(self.identities(record))
            except ChaoslabError:
                pass
        return keys

    def claim(self, record: RevertRecord) -> None:
        """Called before ``open_entry``: refuse a fault whose resolved identities another
        run's open entry still holds. (``ClaimingLedger`` also locks them.)"""
        self.check_keys_clear(record.identity_keys(), record.run_id)

    @contextmanager
    def recover_lock(self, timeout_s: float = 60.0) -> Iterator[None]:
        """Exclusive right to revert entries that are not one's own (recover, halt)."""
        self._ensure_dirs()
        with flocked(self.directory / RECOVER_LOCK, timeout_s=timeout_s, what="ledger recovery"):
            yield

    # --- internals --------------------------------------------------------------------

    def _entry_path(self, fault_id: str) -> Path:
        if not _FAULT_ID.match(fault_id):
            raise LedgerError(f"fault id {fault_id!r} is not usable as a ledger file name")
        return self.open_dir / f"{fault_id}.json"

    def _ensure_dirs(self) -> None:
        try:
            self.open_dir.mkdir(parents=True, exist_ok=True)
            self.closed_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger directory {self.directory}: {exc.strerror}") from exc

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        self._ensure_dirs()
        with flocked(self.directory / MUTATE_LOCK, timeout_s=30.0, what="ledger update"):
            yield

    def _read_open(self, path: Path, unseal_with: Masker | None = None) -> LedgerEntry | None:
        try:
            entry, state = _parse_entry(path, _load_json(path), unseal_with)
        except FileNotFoundError:
            return None
        return entry if state is EntryState.OPEN else None

    def _finish_close(self, path: Path) -> None:
        os.replace(path, self.closed_dir / path.name)
        fsync_dir(self.closed_dir)
        fsync_dir(path.parent)

    def _finish_close_quietly(self, path: Path) -> None:
        try:
            self._ensure_dirs()
            self._finish_close(path)
        except (OSError, LedgerError):
            pass  # read-only ledger: the entry still reads as closed, nothing is lost

    def _entry_dict(
        self, record: RevertRecord, owner: Owner, opened_at: float, updated_at: float
    ) -> dict[str, Any]:
        try:
            sealed, table = self.masker.seal(record.to_dict())
        except Unsealable as exc:
            raise LedgerError(
                f"fault {record.fault_id} ({record.driver}.{record.operation}) holds a secret in"
                f" {', '.join(exc.fields)} that chaoslab could not read again after a crash (it"
                " came from a control, Vault or a computed value), and the ledger never keeps a"
                " secret in clear; pass it through an environment variable or a file (a CTK"
                " `env` or inline secret), or keep it out of the fault's target and arguments"
            ) from None
        # Target and fault id come first so that even a truncated file still says whom it
        # concerns (``_salvage_target`` reads the first "target" key).
        entry: dict[str, Any] = {
            "ledger_version": LEDGER_VERSION,
            "target": sealed["target"],
            "fault_id": record.fault_id,
            "state": EntryState.OPEN.value,
            "owner": owner.to_dict(),
            "record": sealed,
            "opened_at": opened_at,
            "updated_at": updated_at,
            "opened_at_iso": iso(opened_at),
        }
        if table:
            entry["sealed"] = table
        return entry


def _load_json(path: Path) -> dict[str, Any]:
    """Read one entry file. Raises FileNotFoundError, or LedgerEntryError for anything else."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise LedgerEntryError(path, ProblemKind.UNREADABLE, exc.strerror or str(exc)) from exc
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = "empty file" if not data.strip() else f"not valid JSON, truncated or damaged ({exc})"
        raise LedgerEntryError(path, ProblemKind.CORRUPT, why, target=_salvage_target(data)) from exc
    if not isinstance(raw, dict):
        raise LedgerEntryError(
            path, ProblemKind.CORRUPT, f"expected a JSON object, found {type(raw).__name__}"
        )
    return raw


def _parse_entry(
    path: Path, raw: Mapping[str, Any], unseal_with: Masker | None = None
) -> tuple[LedgerEntry, EntryState]:
    rec = raw.get("record")
    target = rec.get("target") if isinstance(rec, Mapping) else None
    target = target if isinstance(target, str) else None
    version = raw.get("ledger_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise LedgerEntryError(path, ProblemKind.CORRUPT, "no integer ledger_version", target=target)
    if version > LEDGER_VERSION:
        raise LedgerEntryError(
            path,
            ProblemKind.NEWER,
            f"written by a newer chaoslab (ledger version {version}; this one reads up to {LEDGER_VERSION})",
            target=target,
        )
    if isinstance(rec, Mapping):
        rv = rec.get("version", RECORD_VERSION)
        if isinstance(rv, int) and rv > RECORD_VERSION:
            raise LedgerEntryError(
                path,
                ProblemKind.NEWER,
                f"its revert record has version {rv}; this chaoslab reads up to {RECORD_VERSION}",
                target=target,
            )
    table = raw.get("sealed")
    needs: tuple[str, ...] = ()
    if unseal_with is not None and isinstance(table, Mapping) and table and isinstance(rec, Mapping):
        from chaoslab.engine.secrets import resolve_ref

        unsealed, values, problems = unseal(rec, table, resolve_ref)
        if problems:
            needs = tuple(problems)  # the entry stays usable (owner, keys, target) but sealed
        else:
            rec = unsealed
            for value in values:
                unseal_with.add(value)
    try:
        state = EntryState(raw["state"])
        owner_raw = raw["owner"]
        if not isinstance(rec, Mapping) or not isinstance(owner_raw, Mapping):
            raise TypeError("record and owner must be objects")
        record = RevertRecord.from_dict(rec)
        owner = Owner.from_dict(owner_raw)
        opened_at = float(raw["opened_at"])
        updated_at = float(raw.get("updated_at", opened_at))
    except KeyError as exc:
        raise LedgerEntryError(path, ProblemKind.CORRUPT, f"missing field {exc}", target=target) from exc
    except (TypeError, ValueError) as exc:
        raise LedgerEntryError(path, ProblemKind.CORRUPT, f"malformed: {exc}", target=target) from exc
    if f"{record.fault_id}.json" != path.name:
        raise LedgerEntryError(
            path,
            ProblemKind.CORRUPT,
            f"holds fault {record.fault_id}, not the one its name says",
            target=target,
        )
    entry = LedgerEntry(
        path=path, record=record, owner=owner, opened_at=opened_at, updated_at=updated_at, needs_secret=needs
    )
    return entry, state


def _salvage_target(data: bytes) -> str | None:
    m = _TARGET_FIELD.search(data.decode("utf-8", errors="replace"))
    if not m:
        return None
    try:
        value = json.loads(f'"{m.group(1)}"')
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None
