"""Durable small-file writes and advisory file locks, the two primitives of chaoslab's state.

- ``write_json_atomic``: temp file in the same directory → write → flush → fsync →
  rename (or hard-link, to refuse an existing name) → fsync the directory. A reader sees
  the old file or the new one, never half of one, and the change survives a power cut
  once the call returns.
- ``flocked``: an exclusive ``fcntl.flock`` on a lock file, with a deadline. flock locks
  belong to an open file description, so the kernel drops them when the holder dies,
  even by SIGKILL: a crashed holder can never wedge the lock. The holder writes its pid
  into the file so that a waiter can say who it waits for.

Why hand-written: ``filelock``/``portalocker`` give the lock but neither the directory
fsync nor the link-based exclusive create, and the lock is ten lines of ``fcntl``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chaoslab.errors import LedgerError

_POLL_S = 0.02


def fsync_dir(directory: Path) -> None:
    """Make a rename/unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, *, exclusive: bool = False) -> None:
    """Durably write ``data`` as JSON to ``path``.

    With ``exclusive`` the final name is created with ``link``, which fails with
    ``FileExistsError`` if it exists, so two writers of one name cannot both succeed.
    Temp files start with a dot; scanners skip dot-files.
    """
    directory = path.parent
    # What tempfile.mkstemp does (O_EXCL, mode 0600), without importing tempfile, whose
    # shutil and random imports cost every `chaoslab run` a few milliseconds of start-up.
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)  # insertion order: callers put key facts first
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


@contextmanager
def flocked(path: Path, *, timeout_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the ``with`` body.

    Waits at most ``timeout_s``; then raises ``LedgerError`` naming the lock file and the
    pid that holds it. ``what`` says what the lock protects, for that message.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LedgerError(f"cannot open the lock file {path} for {what}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LedgerError(f"cannot lock {path} for {what}: {exc.strerror}") from exc
            if time.monotonic() >= deadline:
                holder = _read_holder(path)
                raise LedgerError(
                    f"{what} is busy: {path} is held by {holder} for more than {timeout_s:g}s;"
                    " wait for it to finish, or check whether that process is stuck"
                )
            time.sleep(_POLL_S)
        # Note the holder for waiters' messages (best effort: a full disk must not block).
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield
    finally:
        # Closing the descriptor releases the flock.
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        pid = path.read_text("ascii").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"
