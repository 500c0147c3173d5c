"""Triggers: the nominal slot times of a scenario, and each slot's jitter.

A trigger answers one question, ``next_after(t)``: the first nominal slot strictly after
``t``. Slots are timezone-aware UTC datetimes with whole seconds; a slot's identity in the
store is its ISO form (``slot_key``), so every scheduler that evaluates the same
scenario must compute the very same slots. Hence:

- cron slots: croniter (a well-kept library: day-of-week names, ranges, steps) walks the
  *wall-clock* times of the expression (naive, so it never sees a DST change), and each
  wall time is then placed in the scenario's time zone with these documented DST rules
  (Vixie cron's, also systemd's and AWS EventBridge's for repeats):

  - a wall time that occurs twice (the hour repeated when DST ends) runs **once**, at its
    first occurrence; the repeated hour runs nothing a second time;
  - a wall time that does not exist (the hour skipped when DST starts) runs at the first
    valid instant after the gap (``dst_gap: shift``, the default: 02:30 on the spring
    change in Europe/Berlin runs at 03:00 CEST), or not at all (``dst_gap: skip``);
  - several wall times that land on one instant (``*/15 2 * * *`` in a gap) run once.

  ``CronTrigger.dst_note`` says how a DST change touched a slot (``schedule next`` shows
  it). Interval triggers count seconds in UTC and are not affected by DST;
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


DST_GAP_POLICIES = ("shift", "skip")
_CRON_SCAN_LIMIT = 100_000  # wall times examined per next_after (a yearly cron in a gap, skipped)


@dataclass(frozen=True, kw_only=True)
class CronTrigger:
    """A five-field cron expression evaluated on the wall clock of ``tz`` (e.g.
    ``0 11 * * mon-fri``), with the DST rules of the module docstring."""

    expression: str
    tz: ZoneInfo
    dst_gap: str = "shift"

    @staticmethod
    def problem(expression: str) -> str | None:
        """Why ``expression`` is not a usable cron expression, or None."""
        if len(expression.split()) != 5:
            return "a cron expression has five fields: minute hour day-of-month month day-of-week"
        if not croniter.is_valid(expression):
            return f"not a valid cron expression: {expression!r}"
        return None

    def place(self, wall: datetime) -> tuple[datetime | None, str | None]:
        """The UTC instant at which naive wall time ``wall`` runs (None: skipped) and, when
        a DST change touched it, a note saying how."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return first, None
        day = f"{wall:%Y-%m-%d}"
        if first.astimezone(self.tz).replace(tzinfo=None) == wall:
            # Both exist: the repeated hour of the autumn change. fold=0 is the earlier one.
            earlier = min(first, second)
            zone = earlier.astimezone(self.tz).tzname()
            return earlier, (
                f"{wall:%H:%M} occurs twice on {day} (DST ends in {self.tz.key}):"
                f" runs once, at the first ({zone})"
            )
        # A gap: fold=1 reads it with the offset after the change (an instant before the
        # change), fold=0 with the offset before (an instant after it).
        lo, hi = min(first, second), max(first, second)
        after = hi.astimezone(self.tz).utcoffset()
        while (hi - lo).total_seconds() > 1:
            mid = lo + (hi - lo) / 2
            if mid.astimezone(self.tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        end = hi.replace(microsecond=0)
        if end.astimezone(self.tz).utcoffset() != after:
            end += timedelta(seconds=1)
        local_end = end.astimezone(self.tz)
        what = f"{wall:%H:%M} does not exist on {day} (DST starts in {self.tz.key})"
        if self.dst_gap == "skip":
            return None, f"{what}: skipped (dst_gap: skip)"
        return end, f"{what}: runs at {local_end:%H:%M} {local_end.tzname()}, right after the gap"

    def next_with_note(self, after: datetime) -> tuple[datetime | None, str | None]:
        """``next_after`` plus the DST note of the slot (and of any slot skipped on the way)."""
        after = utc(after)
        wall = after.astimezone(self.tz).replace(tzinfo=None)
        walls = croniter(self.expression, wall)
        notes: list[str] = []
        for _ in range(_CRON_SCAN_LIMIT):
            w: datetime = walls.get_next(datetime)
            at, note = self.place(w)
            if at is None:
                if note:
                    notes.append(note)
                continue
            # A wall time earlier on the clock than ``after`` (its first occurrence when
            # ``after`` lies in the repeated hour) is in the past: keep walking.
            if at > after:
                if note:
                    notes.append(note)
                return at.replace(microsecond=0), "; ".join(notes) or None
        return None, "; ".join(notes) or None

    def next_after(self, after: datetime) -> datetime | None:
        return self.next_with_note(after)[0]

    def describe(self) -> str:
        gap = ", DST gap: skip" if self.dst_gap == "skip" else ""
        return f"cron {self.expression!r} ({self.tz.key}{gap})"


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
