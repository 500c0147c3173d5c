"""The schedule store: one row per slot, claimed once, plus the live schedulers.

Backends: SQLite (default, ``<home>/scheduler.db``; several schedulers on one machine may
share it) and PostgreSQL (``postgresql://…``, psycopg 3; several schedulers on several
machines). Both run the same SQL; only the placeholder differs.

Exactly once: ``chaoslab_slots`` has the primary key ``(scenario, slot)``. Every decision
about a slot (run it, skip it, it was missed) is an ``INSERT … ON CONFLICT DO NOTHING``;
the scheduler whose insert wrote the row owns the slot, every other one sees zero rows
affected and moves on. The database's unique index is the arbiter, so no clock, lock
service or leader election is needed. A row is never deleted.

Fencing: each claim carries a random ``token``. Every later write to the row (started,
finished, heartbeat) is ``UPDATE … WHERE token = ?``; a scheduler that took a dead
scheduler's claim over (``adopt``) changes the token first, so a scheduler that was only
presumed dead cannot overwrite the new owner's outcome.

One run at a time (``concurrency: forbid``): ``claim_exclusive`` checks "no other slot of
this scenario is claimed or running" and inserts the claim in one transaction, serialised
per scenario (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock
on the scenario), so two schedulers cannot both start a run of a busy scenario; the loser
records its slot ``skipped`` with the reason in the same transaction.

Liveness: each scheduler has a row in ``chaoslab_schedulers`` with its process identity
(``chaoslab.safety.owner.Owner``) and a heartbeat. A claim whose scheduler is provably
dead (same host, process gone) or whose heartbeat is older than the lease (another host)
may be adopted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from chaoslab.errors import ChaoslabError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chaoslab_slots (
        scenario TEXT NOT NULL,
        slot TEXT NOT NULL,
        run_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        scheduler TEXT NOT NULL,
        token TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        run_dir TEXT,
        child TEXT,
        verdict TEXT,
        exit_code INTEGER,
        detail TEXT NOT NULL,
        steps TEXT NOT NULL,
        PRIMARY KEY (scenario, slot)
    )""",
    "CREATE INDEX IF NOT EXISTS chaoslab_slots_status ON chaoslab_slots (status)",
    """CREATE TABLE IF NOT EXISTS chaoslab_schedulers (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL
    )""",
)
COLUMNS = (
    "scenario", "slot", "run_at", "kind", "status", "scheduler", "token", "attempt", "claimed_at",
    "updated_at", "finished_at", "run_dir", "child", "verdict", "exit_code", "detail", "steps",
)  # fmt: skip
_PG_SCHEMA_LOCK = 727_001  # pg_advisory_xact_lock key: one schema creator at a time
_PG_SCENARIO_LOCK = 727_002  # (this, hashtext(scenario)): one exclusive claim per scenario at a time


class StoreError(ChaoslabError):
    """The schedule store cannot be opened, read or written."""


class SlotStatus(StrEnum):
    CLAIMED = "claimed"  # a scheduler owns the slot and is checking its gates
    RUNNING = "running"  # its experiments are running
    FINISHED = "finished"  # it ran; ``verdict`` says how it went
    REFUSED = "refused"  # a gate said no
    SKIPPED = "skipped"  # outside the windows, in a blackout, busy, over max-parallel, min_gap
    MISSED = "missed"  # found too late (misfire policy), or coalesced into a later slot
    LEASHED = "leashed"  # monkey in leashed mode: logged what it would have killed
    INTERRUPTED = "interrupted"  # stopped by SIGTERM, or its scheduler died and it was past grace


ACTIVE = (SlotStatus.CLAIMED, SlotStatus.RUNNING)
# Rows whose slot started a run (or, leashed, would have): the monkey's min_gap counts from these.
STARTED = (SlotStatus.CLAIMED, SlotStatus.RUNNING, SlotStatus.FINISHED, SlotStatus.INTERRUPTED,
           SlotStatus.LEASHED)  # fmt: skip


class Claim(StrEnum):
    """What ``claim_exclusive`` did."""

    WON = "won"  # the claim row is ours: run it
    TAKEN = "taken"  # the slot already had a row (another scheduler decided it)
    BUSY = "busy"  # another slot of the scenario is active: the slot was recorded skipped


@dataclass(frozen=True, kw_only=True)
class SlotRecord:
    """One row of ``chaoslab_slots``. ``slot``/``run_at`` are ``slot_key`` strings."""

    scenario: str
    slot: str
    run_at: str
    kind: str
    status: str
    scheduler: str
    token: str
    attempt: int = 1
    claimed_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    run_dir: str | None = None
    child: str | None = None  # JSON of the running child's Owner
    verdict: str | None = None
    exit_code: int | None = None
    detail: str = ""
    steps: str = "[]"  # JSON list of step results

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)

    def step_results(self) -> list[dict[str, Any]]:
        loaded = json.loads(self.steps or "[]")
        return loaded if isinstance(loaded, list) else []


@dataclass(frozen=True, kw_only=True)
class SchedulerRow:
    id: str
    owner: Mapping[str, Any]
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, kw_only=True)
class Update:
    """Fields to change on a claimed row (None: leave as is)."""

    status: str | None = None
    run_dir: str | None = None
    child: str | None = None
    verdict: str | None = None
    exit_code: int | None = None
    detail: str | None = None
    steps: str | None = None
    finished_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def assignments(self) -> dict[str, Any]:
        names = ("status", "run_dir", "child", "verdict", "exit_code", "detail", "steps", "finished_at")
        out = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        out.update(self.extra)
        return out


class Store(Protocol):
    """What the scheduler needs from a store. Every method is atomic and thread-safe."""

    url: str

    def insert(self, record: SlotRecord) -> bool:
        """Write ``record`` unless its slot has a row; True iff this call wrote it."""
        ...

    def insert_many(self, records: Sequence[SlotRecord]) -> list[bool]:
        """``insert`` for each record in one transaction; per-record results."""
        ...

    def claim_exclusive(self, record: SlotRecord, busy: Callable[[str], str]) -> tuple[Claim, str | None]:
        """Insert the claim ``record`` iff its slot has no row and no other slot of its
        scenario is active; when one is, insert the slot as ``skipped`` with detail
        ``busy(that slot)`` instead. Atomic per scenario. Returns what happened and the
        active slot found (for ``BUSY``)."""
        ...

    def update(self, scenario: str, slot: str, token: str, change: Update) -> bool:
        """Apply ``change`` to the row iff it still carries ``token``; True iff it did."""
        ...

    def adopt(self, record: SlotRecord, *, scheduler: str, token: str, now: float) -> bool:
        """Take over an active claim iff it still carries ``record.token``."""
        ...

    def get(self, scenario: str, slot: str) -> SlotRecord | None: ...

    def active(self) -> list[SlotRecord]:
        """Rows still claimed or running, by any scheduler."""
        ...

    def last_slots(self) -> dict[str, str]:
        """The latest recorded slot of every scenario."""
        ...

    def last_started(self, scenario: str) -> SlotRecord | None:
        """The latest row of ``scenario`` whose slot started a run (``STARTED``)."""
        ...

    def history(self, scenario: str | Sequence[str] | None = None, limit: int = 50) -> list[SlotRecord]:
        """Newest first; ``scenario``: one name, several, or None for all."""
        ...

    def register(self, scheduler: str, owner: Mapping[str, Any], now: float) -> None: ...

    def heartbeat(self, scheduler: str, now: float) -> None: ...

    def unregister(self, scheduler: str) -> None: ...

    def schedulers(self) -> dict[str, SchedulerRow]: ...

    def close(self) -> None: ...


class SQLStore:
    """A ``Store`` over a DB-API connection (sqlite3 or psycopg). Use ``open_store``."""

    def __init__(
        self, url: str, conn: Any, *, placeholder: str, integrity_errors: tuple[type[BaseException], ...]
    ):
        self.url = url
        self._conn = conn
        self._ph = placeholder
        self._lock = threading.Lock()  # one connection, many threads: one statement at a time
        self._integrity = integrity_errors

    def _sql(self, text: str) -> str:
        return text.replace("?", self._ph) if self._ph != "?" else text

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            try:
                cur = self._conn.cursor()
                try:
                    yield cur
                finally:
                    cur.close()
            except StoreError:
                raise
            except Exception as exc:
                if isinstance(exc, self._integrity):
                    raise
                raise StoreError(f"schedule store {redact(self.url)}: {type(exc).__name__}: {exc}") from exc

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._cursor() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return int(cur.rowcount)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def insert(self, record: SlotRecord) -> bool:
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO chaoslab_slots ({cols}) VALUES ({marks}) ON CONFLICT (scenario, slot) DO NOTHING"
        return self._exec(sql, record.values()) == 1

    def insert_many(self, records: Sequence[SlotRecord]) -> list[bool]:
        """``insert`` for each record, in one transaction (one commit, one fsync): for the
        many terminal records (skipped, missed) a tick can make. Same per-row semantics."""
        if not records:
            return []
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        sql = self._sql(
            f"INSERT INTO chaoslab_slots ({cols}) VALUES ({marks}) ON CONFLICT (scenario, slot) DO NOTHING"
        )
        with self._cursor() as cur:
            if self._ph == "?":
                cur.execute("BEGIN IMMEDIATE")
                try:
                    out = []
                    for r in records:
                        cur.execute(sql, r.values())
                        out.append(cur.rowcount == 1)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                return out
            with self._conn.transaction():
                out = []
                for r in records:
                    cur.execute(sql, r.values())
                    out.append(cur.rowcount == 1)
                return out

    def claim_exclusive(self, record: SlotRecord, busy: Callable[[str], str]) -> tuple[Claim, str | None]:
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        insert = self._sql(
            f"INSERT INTO chaoslab_slots ({cols}) VALUES ({marks}) ON CONFLICT (scenario, slot) DO NOTHING"
        )
        exists = self._sql("SELECT 1 FROM chaoslab_slots WHERE scenario = ? AND slot = ?")
        holder_sql = self._sql(
            "SELECT slot FROM chaoslab_slots WHERE scenario = ? AND status IN (?, ?) ORDER BY slot LIMIT 1"
        )

        def decide(cur: Any) -> tuple[Claim, str | None]:
            cur.execute(exists, (record.scenario, record.slot))
            if cur.fetchone() is not None:
                return Claim.TAKEN, None
            cur.execute(holder_sql, (record.scenario, *ACTIVE))
            row = cur.fetchone()
            if row is not None:
                holder = str(row[0])
                skipped = replace(
                    record,
                    status=SlotStatus.SKIPPED.value,
                    detail=busy(holder),
                    finished_at=record.claimed_at,
                    run_dir=None,
                )
                cur.execute(insert, skipped.values())
                return (Claim.BUSY if cur.rowcount == 1 else Claim.TAKEN), holder
            cur.execute(insert, record.values())
            return (Claim.WON if cur.rowcount == 1 else Claim.TAKEN), None

        with self._cursor() as cur:
            if self._ph == "?":
                cur.execute("BEGIN IMMEDIATE")  # SQLite: one writer at a time, check included
                try:
                    out = decide(cur)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                return out
            with self._conn.transaction():
                cur.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PG_SCENARIO_LOCK, record.scenario)
                )
                return decide(cur)

    def update(self, scenario: str, slot: str, token: str, change: Update) -> bool:
        fields = change.assignments()
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE chaoslab_slots SET {sets} WHERE scenario = ? AND slot = ? AND token = ?"
        return self._exec(sql, [*fields.values(), scenario, slot, token]) == 1

    def adopt(self, record: SlotRecord, *, scheduler: str, token: str, now: float) -> bool:
        sql = (
            "UPDATE chaoslab_slots SET scheduler = ?, token = ?, updated_at = ?, attempt = attempt + 1"
            " WHERE scenario = ? AND slot = ? AND token = ? AND status IN (?, ?)"
        )
        params = [scheduler, token, now, record.scenario, record.slot, record.token, *ACTIVE]
        return self._exec(sql, params) == 1

    def get(self, scenario: str, slot: str) -> SlotRecord | None:
        rows = self._rows(
            f"SELECT {', '.join(COLUMNS)} FROM chaoslab_slots WHERE scenario = ? AND slot = ?",
            [scenario, slot],
        )
        return _record(rows[0]) if rows else None

    def active(self) -> list[SlotRecord]:
        rows = self._rows(
            f"SELECT {', '.join(COLUMNS)} FROM chaoslab_slots WHERE status IN (?, ?) ORDER BY slot",
            list(ACTIVE),
        )
        return [_record(r) for r in rows]

    def last_slots(self) -> dict[str, str]:
        rows = self._rows("SELECT scenario, MAX(slot) FROM chaoslab_slots GROUP BY scenario")
        return {str(a): str(b) for a, b in rows}

    def last_started(self, scenario: str) -> SlotRecord | None:
        marks = ", ".join("?" for _ in STARTED)
        rows = self._rows(
            f"SELECT {', '.join(COLUMNS)} FROM chaoslab_slots WHERE scenario = ? AND status IN ({marks})"
            " ORDER BY slot DESC LIMIT 1",
            [scenario, *STARTED],
        )
        return _record(rows[0]) if rows else None

    def history(self, scenario: str | Sequence[str] | None = None, limit: int = 50) -> list[SlotRecord]:
        names = [scenario] if isinstance(scenario, str) else list(scenario or [])
        where, params = ("", [])
        if names:
            where, params = f"WHERE scenario IN ({', '.join('?' for _ in names)})", names
        rows = self._rows(
            f"SELECT {', '.join(COLUMNS)} FROM chaoslab_slots {where} ORDER BY slot DESC, scenario LIMIT ?",
            [*params, limit],
        )
        return [_record(r) for r in rows]

    def all_slots(self, scenario: str) -> list[SlotRecord]:
        """Every row of ``scenario``, oldest first (tests and audits)."""
        rows = self._rows(
            f"SELECT {', '.join(COLUMNS)} FROM chaoslab_slots WHERE scenario = ? ORDER BY slot", [scenario]
        )
        return [_record(r) for r in rows]

    def register(self, scheduler: str, owner: Mapping[str, Any], now: float) -> None:
        self._exec(
            "INSERT INTO chaoslab_schedulers (id, owner, started_at, heartbeat_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, heartbeat_at = excluded.heartbeat_at",
            [scheduler, json.dumps(dict(owner)), now, now],
        )

    def heartbeat(self, scheduler: str, now: float) -> None:
        self._exec("UPDATE chaoslab_schedulers SET heartbeat_at = ? WHERE id = ?", [now, scheduler])

    def unregister(self, scheduler: str) -> None:
        self._exec("DELETE FROM chaoslab_schedulers WHERE id = ?", [scheduler])

    def schedulers(self) -> dict[str, SchedulerRow]:
        rows = self._rows("SELECT id, owner, started_at, heartbeat_at FROM chaoslab_schedulers")
        return {
            str(r[0]): SchedulerRow(id=str(r[0]), owner=json.loads(r[1]), started_at=r[2], heartbeat_at=r[3])
            for r in rows
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _record(row: tuple[Any, ...]) -> SlotRecord:
    return SlotRecord(**dict(zip(COLUMNS, row, strict=True)))


def default_url(home: Path) -> str:
    """The default store: SQLite in chaoslab's home ``home``."""
    return f"sqlite:///{home / 'scheduler.db'}"


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def open_store(url: str) -> SQLStore:
    """Open (and create the tables of) the store at ``url``.

    ``sqlite:///abs/path.db``, a bare file path, or ``postgresql://user:pw@host:port/db``
    (``default_url(home)``: SQLite in chaoslab's home).
    """
    if url.startswith(("postgresql://", "postgres://")):
        return _open_postgres(url)
    raw = url[len("sqlite:///") - 1 :] if url.startswith("sqlite:///") else url
    path = Path("/" + raw.lstrip("/")) if raw.startswith("/") else Path(raw)  # sqlite:////x → /x
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block the claiming writer
        conn.execute("PRAGMA busy_timeout=30000")
        for stmt in SCHEMA:
            conn.execute(stmt)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open the schedule store {path}: {exc}") from exc
    return SQLStore(f"sqlite:///{path}", conn, placeholder="?", integrity_errors=(sqlite3.IntegrityError,))


def _open_postgres(url: str) -> SQLStore:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'chaoslab[postgres]'") from exc
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        with conn.transaction():
            # CREATE TABLE IF NOT EXISTS races with itself across sessions: serialise it.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            for stmt in SCHEMA:
                conn.execute(stmt)
    except psycopg.Error as exc:
        raise StoreError(f"cannot open the schedule store {redact(url)}: {exc}") from exc
    return SQLStore(url, conn, placeholder="%s", integrity_errors=(psycopg.IntegrityError,))
