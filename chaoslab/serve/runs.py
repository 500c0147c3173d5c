"""Run directories as the control room sees them: discovery, one-line summaries, tails.

A run directory is any directory holding ``events.ndjson`` (``chaoslab run`` writes it
from the first event on, flushed per event; see ``chaoslab.engine.journal.EventLog``).
A summary needs only the first line (``run-started``: title, tags, pid) and the last
(``run-finished``: verdict), so it costs two short reads however long the run was; it is
cached per file by (mtime, size), so a history of a thousand runs is listed from memory.

Events were masked by the run's event bus before they were written; the app masks what
it shows once more (URL credentials of any source) through its own ``Masker``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS = "events.ndjson"
JOURNAL = "journal.json"
REPORT = "report.html"
_HEAD_BYTES = 1 << 20  # run-started carries the experiment: bounded, but not tiny
_TAIL_BYTES = 1 << 16
_MAX_DEPTH = 4  # <root>/<run> (run), <root>/<slot>/<step> (scheduler), gate output dirs
_MAX_DIRS = 50_000  # a mistaken root (/) must not walk the disk


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One run directory in one line. ``state``: running, finished or unfinished
    (no ``run-finished`` and no live runner: killed, or its machine rebooted)."""

    run_id: str
    directory: Path
    title: str
    tags: tuple[str, ...]
    started: float
    pid: int | None
    finished: bool
    verdict: str
    exit_code: int | None
    reason: str
    duration_s: float | None
    has_journal: bool

    def state(self, live_ids: frozenset[str]) -> str:
        if self.finished:
            return "finished"
        return "running" if self.run_id in live_ids else "unfinished"


def _first_line(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as f:
        line = f.readline(_HEAD_BYTES)
    try:
        got = json.loads(line)
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


def _last_event(path: Path, size: int) -> dict[str, Any] | None:
    with path.open("rb") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        chunk = f.read(_TAIL_BYTES)
    for line in reversed(chunk.split(b"\n")):
        if not line.strip():
            continue
        try:
            got = json.loads(line)
        except ValueError:
            continue  # a torn last line (runner killed mid-write) or a cut first one
        return got if isinstance(got, dict) else None
    return None


def summarise(directory: Path) -> RunSummary | None:
    """The summary of one run directory, or None if it holds no readable run."""
    events = directory / EVENTS
    try:
        size = events.stat().st_size
        first = _first_line(events)
        last = _last_event(events, size) if first is not None else None
    except OSError:
        return None
    if first is None or first.get("kind") != "run-started":
        return None
    exp = first.get("experiment")
    tags = exp.get("tags") if isinstance(exp, dict) else None
    finished = last is not None and last.get("kind") == "run-finished"
    fin = last if finished and last is not None else {}
    pid = first.get("pid")
    return RunSummary(
        run_id=str(first.get("run_id", directory.name)),
        directory=directory,
        title=str(first.get("title", "")),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        started=float(first.get("ts", 0.0)),
        pid=pid if isinstance(pid, int) else None,
        finished=finished,
        verdict=str(fin.get("verdict", "")),
        exit_code=fin.get("exit_code") if isinstance(fin.get("exit_code"), int) else None,
        reason=str(fin.get("reason", "")),
        duration_s=float(fin["duration_s"]) if isinstance(fin.get("duration_s"), int | float) else None,
        has_journal=(directory / JOURNAL).is_file(),
    )


def run_dirs(roots: Iterable[Path]) -> list[Path]:
    """Every directory under ``roots`` (depth-bounded) that holds an event log."""
    found: list[Path] = []
    seen = 0
    stack = [(Path(r), 0) for r in roots]
    while stack and seen < _MAX_DIRS:
        d, depth = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        seen += 1
        if any(e.name == EVENTS and e.is_file() for e in entries):
            found.append(d)
            continue
        if depth < _MAX_DEPTH:
            stack.extend(
                (Path(e.path), depth + 1)
                for e in entries
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
    return found


@dataclass
class RunIndex:
    """The runs under ``roots``, summarised once per change of their event log."""

    roots: Sequence[Path]
    _cache: dict[Path, tuple[int, int, RunSummary | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def runs(self) -> list[RunSummary]:
        """Newest first."""
        out: list[RunSummary] = []
        for d in run_dirs(self.roots):
            try:
                st = (d / EVENTS).stat()
            except OSError:
                continue
            with self._lock:
                cached = self._cache.get(d)
            if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
                summary = cached[2]
            else:
                summary = summarise(d)
                with self._lock:
                    self._cache[d] = (st.st_mtime_ns, st.st_size, summary)
            if summary is not None:
                out.append(summary)
        out.sort(key=lambda s: s.started, reverse=True)
        return out

    def find(self, run_id: str) -> RunSummary | None:
        for s in self.runs():
            if s.run_id == run_id:
                return s
        return None


class EventTail:
    """Reads the complete lines appended to an event log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def read(self, limit: int = 1 << 20) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(limit)
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # the unfinished line, if any, waits for its end
        out: list[dict[str, Any]] = []
        for line in lines:
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if isinstance(got, dict):
                out.append(got)
        return out
