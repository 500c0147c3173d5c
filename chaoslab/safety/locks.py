"""Blast-radius locks: one per target string, so two runs never inject on one target at once.

A target is whatever string names the blast radius (``lab:replica-1``, ``pid:123``,
``docker:web``, ``ssh:host``, ``k8s:ns/app=web``); equal strings conflict, nothing else
does. Each held lock is a small JSON file under ``<home>/locks/`` naming its holder.

How it stays safe:

- Every decision (is it free? can it be reclaimed? take it; release it) happens while
  holding one short-lived flock on ``locks/.mutex``. A set of targets is therefore
  checked and taken all-or-nothing, and no acquirer ever waits for a lock while holding
  another, so there is no lock-ordering deadlock (targets are still handled in sorted
  order, so files and messages are deterministic). The mutex is a kernel flock: a
  holder killed mid-decision releases it.
- A lock file is never stolen from a live holder. It is reclaimed only when its holder
  is provably dead: same host and the pid is gone, a zombie, reused (start time differs)
  or the machine rebooted (see ``chaoslab.safety.owner``). A holder on another host
  (a shared state directory) cannot be checked; its lock is reclaimed only once its
  lease has expired, so such holders must ``renew()``.
- A lock file that cannot be read is treated as held: the message names the file.
- Release removes only files that carry this ``LockSet``'s token.

Why hand-written: ``filelock``/``fasteners`` provide an flock per file but no holder
identity, no all-or-nothing sets, and no dead-owner reclaim; those are the point here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from chaoslab.errors import LedgerError, LockHeld
from chaoslab.safety.durable import flocked, fsync_dir, write_json_atomic
from chaoslab.safety.owner import Life, Owner, iso

LOCK_VERSION = 1
MUTEX = ".mutex"
_MUTEX_TIMEOUT_S = 10.0


def locks_dir(base: Path) -> Path:
    """The locks directory under chaoslab's home ``base`` (``StatePaths.locks``)."""
    return base / "locks"


def lock_path(directory: Path, target: str) -> Path:
    """A file name for ``target``: readable, unique, and short enough for any filesystem."""
    readable = quote(target, safe="")[:80]
    digest = hashlib.sha256(target.encode()).hexdigest()[:16]
    return directory / f"{readable}.{digest}.lock"


@dataclass(frozen=True, kw_only=True)
class LockInfo:
    """A held lock as recorded in its file."""

    target: str
    owner: Owner
    token: str
    acquired_at: float
    lease_expires_at: float | None
    path: Path

    def holder(self) -> str:
        """Who holds it: run id, pid, host, since (what ``LockHeld`` reports)."""
        text = (
            f"run {self.owner.run_id} (pid {self.owner.pid} on {self.owner.hostname},"
            f" since {iso(self.acquired_at)})"
        )
        if self.lease_expires_at is not None and self.lease_expires_at < time.time():
            text += f"; its lease expired at {iso(self.lease_expires_at)} but it is still alive"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LOCK_VERSION,
            "target": self.target,
            "owner": self.owner.to_dict(),
            "token": self.token,
            "acquired_at": self.acquired_at,
            "lease_expires_at": self.lease_expires_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> LockInfo:
        expires = raw.get("lease_expires_at")
        return cls(
            target=str(raw["target"]),
            owner=Owner.from_dict(raw["owner"]),
            token=str(raw["token"]),
            acquired_at=float(raw["acquired_at"]),
            lease_expires_at=float(expires) if expires is not None else None,
            path=path,
        )


@dataclass(frozen=True, kw_only=True)
class Reclaimed:
    """A lock taken over from a dead holder (the engine should journal it)."""

    target: str
    former_holder: str
    reason: str


class LockSet:
    """Locks held together on a set of targets. A context manager; release is idempotent."""

    def __init__(
        self,
        *,
        directory: Path,
        infos: tuple[LockInfo, ...],
        lease_s: float | None,
        reclaimed: tuple[Reclaimed, ...],
    ) -> None:
        self.directory = directory
        self.infos = infos
        self.lease_s = lease_s
        self.reclaimed = reclaimed
        self._released = False

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(i.target for i in self.infos)

    @property
    def held(self) -> bool:
        return not self._released

    def renew(self, lease_s: float | None = None) -> None:
        """Push the lease forward (needed only when runs on other hosts share the state)."""
        if self._released:
            raise LedgerError("cannot renew released locks")
        lease = self.lease_s if lease_s is None else lease_s
        expires = time.time() + lease if lease is not None else None
        with _mutex(self.directory):
            renewed = []
            for info in self.infos:
                current = _read(info.path)
                if not isinstance(current, LockInfo) or current.token != info.token:
                    raise LedgerError(f"the lock on {info.target} ({info.path}) is no longer ours")
                updated = replace(info, lease_expires_at=expires)
                _write(updated)
                renewed.append(updated)
        self.infos = tuple(renewed)

    def release(self) -> None:
        """Remove our lock files (only those still carrying our token)."""
        if self._released:
            return
        with _mutex(self.directory):
            for info in self.infos:
                current = _read(info.path)
                if isinstance(current, LockInfo) and current.token == info.token:
                    try:
                        info.path.unlink()
                    except FileNotFoundError:
                        pass
            fsync_dir(self.directory)
        self._released = True

    def __enter__(self) -> LockSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire(
    targets: Iterable[str],
    owner: str,
    lease_s: float | None = None,
    *,
    directory: Path,
) -> LockSet:
    """Lock every target for run ``owner`` (its run id), all or nothing.

    Raises ``LockHeld(target, holder)`` naming the first target held by a live run (or
    by an unreadable lock file); then nothing is taken. Locks of dead holders are
    reclaimed and listed in ``LockSet.reclaimed``. ``lease_s`` (None: no expiry) matters
    only to runs on other hosts sharing this state directory.
    """
    wanted = sorted({t.strip() for t in targets})
    if any(not t for t in wanted):
        raise ValueError("a lock target must be a non-empty string")
    me = Owner.current(owner)
    token = uuid.uuid4().hex
    now = time.time()
    expires = now + lease_s if lease_s is not None else None
    reclaimed: list[Reclaimed] = []
    infos: list[LockInfo] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(f"cannot create the locks directory {directory}: {exc.strerror}") from exc
    with _mutex(directory):
        # Decide for every target before writing anything: all or nothing.
        for target in wanted:
            path = lock_path(directory, target)
            current = _read(path)
            if current is None:
                continue
            if isinstance(current, str):
                raise LockHeld(
                    target,
                    f"an unreadable lock file {path} ({current}); remove it by hand if no"
                    f" run is using {target}",
                )
            why = _reclaimable(current, now)
            if why is None:
                raise LockHeld(target, current.holder())
            reclaimed.append(Reclaimed(target=target, former_holder=current.holder(), reason=why))
        try:
            for target in wanted:
                info = LockInfo(
                    target=target,
                    owner=me,
                    token=token,
                    acquired_at=now,
                    lease_expires_at=expires,
                    path=lock_path(directory, target),
                )
                _write(info)
                infos.append(info)
        except BaseException:
            for info in infos:  # a failed write: give back what we took
                try:
                    info.path.unlink()
                except OSError:
                    pass
            raise
    return LockSet(directory=directory, infos=tuple(infos), lease_s=lease_s, reclaimed=tuple(reclaimed))


def holders(directory: Path) -> list[LockInfo | str]:
    """Every lock file: a ``LockInfo``, or a message for a file that cannot be read."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LedgerError(f"cannot read the locks directory {directory}: {exc.strerror}") from exc
    out: list[LockInfo | str] = []
    for name in names:
        if name.startswith(".") or not name.endswith(".lock"):
            continue
        got = _read(directory / name)
        if got is not None:
            out.append(got if isinstance(got, LockInfo) else f"{directory / name}: {got}")
    return out


def _reclaimable(info: LockInfo, now: float) -> str | None:
    """Why ``info``'s lock may be taken over, or None if it must be respected."""
    life = info.owner.liveness()
    if life.life is Life.DEAD:
        return life.reason
    if life.life is Life.UNKNOWN and info.lease_expires_at is not None and info.lease_expires_at < now:
        return f"{life.reason} and its lease expired at {iso(info.lease_expires_at)}"
    return None


def _mutex(directory: Path) -> AbstractContextManager[None]:
    return flocked(directory / MUTEX, timeout_s=_MUTEX_TIMEOUT_S, what="the blast-radius locks")


def _read(path: Path) -> LockInfo | str | None:
    """The lock in ``path``; None if free; a reason string if the file cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict):
            return "not a JSON object"
        version = raw.get("version")
        if isinstance(version, int) and version > LOCK_VERSION:
            return f"written by a newer chaoslab (lock version {version})"
        return LockInfo.from_dict(raw, path)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({exc})"
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed lock file ({type(exc).__name__}: {exc})"


def _write(info: LockInfo) -> None:
    try:
        write_json_atomic(info.path, info.to_dict())
    except OSError as exc:
        raise LedgerError(f"cannot write the lock file {info.path}: {exc.strerror}") from exc
