"""Allowed windows and blackouts: may a slot run at this moment?

- A ``Window`` is a set of weekdays and a local time range in the scenario's time zone
  (``mon-fri 10:00-16:00``). ``end`` before ``start`` spans midnight: the part after
  midnight belongs to the day the window started (``fri 22:00-02:00`` allows Saturday
  01:00). A scenario with no windows may run at any time.
- A ``Blackout`` is a half-open range ``[start, end)`` of local datetimes; a bare date is
  the whole day. Blackouts win over windows.

Times are compared in the scenario's time zone through ``zoneinfo``, so "10:00" means
10:00 on the wall clock on both sides of a DST change. Hand-written because it is a
few comparisons; no calendar library expresses "weekdays 10–16 except these ranges".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, kw_only=True)
class Window:
    """Allowed on ``days`` (0 = Monday) from ``start`` to ``end`` local time."""

    days: frozenset[int]
    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        # Spans midnight (or the whole day when start == end).
        if local.weekday() in self.days and t >= self.start:
            return True
        yesterday = (local.weekday() - 1) % 7
        return yesterday in self.days and t < self.end

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, kw_only=True)
class Blackout:
    """No run in ``[start, end)`` (aware datetimes)."""

    start: datetime
    end: datetime
    reason: str = ""

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"blackout {self.start.isoformat()} to {self.end.isoformat()}{why}"


@dataclass(frozen=True, kw_only=True)
class Calendar:
    """A scenario's windows and blackouts in its time zone."""

    tz: ZoneInfo
    windows: tuple[Window, ...] = ()
    blackouts: tuple[Blackout, ...] = ()

    def refusal(self, moment: datetime) -> str | None:
        """Why a run may not start at ``moment``, or None when it may."""
        local = moment.astimezone(self.tz)
        for b in self.blackouts:
            if b.contains(local):
                return b.describe()
        if self.windows and not any(w.contains(local) for w in self.windows):
            allowed = "; ".join(w.describe() for w in self.windows)
            return f"outside the allowed windows ({allowed}, {self.tz.key}) at {local:%a %H:%M}"
        return None

    def allows(self, moment: datetime) -> bool:
        return self.refusal(moment) is None


def day_range(text: str) -> frozenset[int] | None:
    """``mon-fri`` / ``sat`` / ``mon,wed,fri`` → weekday numbers; None if unreadable."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if a not in DAY_NAMES or b not in DAY_NAMES:
                return None
            i, j = DAY_NAMES.index(a), DAY_NAMES.index(b)
            k = i
            while True:
                days.add(k)
                if k == j:
                    break
                k = (k + 1) % 7
        elif part in DAY_NAMES:
            days.add(DAY_NAMES.index(part))
        else:
            return None
    return frozenset(days) if days else None


def whole_days(tz: ZoneInfo, first: datetime, last: datetime) -> tuple[datetime, datetime]:
    """``[first 00:00, day after last 00:00)`` in ``tz`` for a blackout given as dates."""
    start = datetime.combine(first.date(), time(0), tzinfo=tz)
    end = datetime.combine(last.date() + timedelta(days=1), time(0), tzinfo=tz)
    return start, end
