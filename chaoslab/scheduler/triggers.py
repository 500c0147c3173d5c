"""Triggers: the nominal slot times of a scenario, and each slot's jitter.

A trigger answers one question, ``next_after(t)``: the first nominal slot strictly after
``t``. Slots are timezone-aware UTC datetimes with whole seconds; a slot's identity in the
store is its ISO form (``slot_key``), so every scheduler that evaluates the same
scenario must compute the very same slots. Hence:

- cron slots come from croniter (a well-kept library: day-of-week names, ranges, steps,
  DST gaps and folds) evaluated in the scenario's time zone;
- interval slots are anchored (default: the Unix epoch), never "N seconds after this
  process started", so two schedulers started at different moments agree;
- jitter is a pure function of (scenario, slot): a hash, not ``random``, so every
  scheduler delays a slot by the same amount, and a restarted one too. Jitter only ever
  delays (``0 <= jitter < max``): a slot never runs before its nominal time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped,unused-ignore]  # stubs: types-croniter


class Trigger(Protocol):
    """When a scenario's slots happen. Implementations are immutable and deterministic."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first nominal slot strictly after ``after`` (aware, UTC, whole seconds);
        None when the trigger will never fire again."""
        ...

    def describe(self) -> str: ...


def utc(dt: datetime) -> datetime:
    """``dt`` in UTC; naive datetimes are refused (every time here is aware)."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: scheduler times must carry a time zone")
    return dt.astimezone(UTC)


def slot_key(slot: datetime) -> str:
    """The slot's identity in the store: ``2025-05-01T10:00:00Z``."""
    return utc(slot).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) from ``parts`` (same inputs, same number, anywhere)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def jitter_s(scenario: str, slot: datetime, max_jitter_s: float) -> float:
    """How long slot ``slot`` of ``scenario`` is delayed: whole seconds in [0, max)."""
    if max_jitter_s <= 0:
        return 0.0
    return float(math.floor(unit_hash("jitter", scenario, slot_key(slot)) * max_jitter_s))


def run_at(scenario: str, slot: datetime, max_jitter_s: float) -> datetime:
    """When slot ``slot`` actually runs: its nominal time plus its jitter."""
    return slot + timedelta(seconds=jitter_s(scenario, slot, max_jitter_s))


@dataclass(frozen=True, kw_only=True)
class CronTrigger:
    """A five-field cron expression evaluated in ``tz`` (e.g. ``0 11 * * mon-fri``)."""

    expression: str
    tz: ZoneInfo

    @staticmethod
    def problem(expression: str) -> str | None:
        """Why ``expression`` is not a usable cron expression, or None."""
        if len(expression.split()) != 5:
            return "a cron expression has five fields: minute hour day-of-month month day-of-week"
        if not croniter.is_valid(expression):
            return f"not a valid cron expression: {expression!r}"
        return None

    def next_after(self, after: datetime) -> datetime | None:
        start = utc(after).astimezone(self.tz)
        nxt: datetime = croniter(self.expression, start).get_next(datetime)
        return nxt.astimezone(UTC).replace(microsecond=0)

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.tz.key})"


@dataclass(frozen=True, kw_only=True)
class IntervalTrigger:
    """Every ``every_s`` whole seconds, on the grid ``anchor + k * every_s``."""

    every_s: int
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    def __post_init__(self) -> None:
        if self.every_s < 1:
            raise ValueError("an interval trigger needs at least 1 s between slots")

    def next_after(self, after: datetime) -> datetime | None:
        elapsed = (utc(after) - self.anchor).total_seconds()
        k = math.floor(elapsed / self.every_s) + 1
        return self.anchor + timedelta(seconds=k * self.every_s)

    def describe(self) -> str:
        return f"every {human(self.every_s)}"


def human(seconds: float) -> str:
    """``90`` → ``1m30s``, ``7200`` → ``2h``: durations as people write them."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts)
