"""Server-side leases of the fault proxy: a ceiling, and a heartbeat that follows the run.

A toxic (or a proxy's "down") set with chaoslab's ``lease_s`` field ends by itself when
that time is up: the ceiling. Set with ``heartbeat_s`` too, it also ends as soon as no
client has renewed it for ``heartbeat_s`` seconds (``POST /proxies/{proxy}/toxics/{toxic}/renew``,
``POST /proxies/{proxy}/renew`` for a down): a live runner renews it every second, so the
fault lasts as long as the run, and a dead runner's fault ends ``heartbeat_s`` after its
last renewal, whatever its planned duration.

One timer per lease on the server's event loop, never moved by a renewal: a renewal only
stamps the time, and when the timer fires it either ends the fault or re-arms itself for
the new deadline. So a renewal costs an attribute write, whatever the rate.

What a lease ended is remembered for a while (``Tombstones``, bounded), so a renewal that
arrives afterwards is told why (410 Gone) instead of only "not found".
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

HEARTBEAT_KEY = "heartbeat_s"
TOMBSTONES = 256  # lease endings remembered per proxy
_EARLY_S = 1e-3  # a loop timer may fire a hair before its time


class Lease:
    """The lease of one fault on the server: ``on_end(reason)`` is called once, when the
    ceiling passes or renewals stop for ``heartbeat_s``; never after ``cancel``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        lease_s: float | None,
        heartbeat_s: float | None,
        on_end: Callable[[str], None],
    ) -> None:
        if lease_s is None and heartbeat_s is None:
            raise ValueError("a lease needs lease_s or heartbeat_s")
        self.loop = loop
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        now = loop.time()
        self.ends_at = None if lease_s is None else now + lease_s  # loop time
        self.expires_at = None if lease_s is None else time.time() + lease_s  # Unix time, shown
        self.renewed = now  # loop time of the last renewal
        self.renewed_at = time.time()  # the same, as Unix time (shown)
        self._on_end = on_end
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def _deadline(self) -> float:
        times = [t for t in (self.ends_at, self._lapses_at()) if t is not None]
        return min(times)

    def _lapses_at(self) -> float | None:
        return None if self.heartbeat_s is None else self.renewed + self.heartbeat_s

    def _arm(self) -> None:
        self._timer = self.loop.call_at(self._deadline(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time() + _EARLY_S
        lapses = self._lapses_at()
        if self.ends_at is not None and now >= self.ends_at:
            reason = f"its lease expired ({self.lease_s:g}s)"
        elif lapses is not None and now >= lapses:
            silent = self.loop.time() - self.renewed
            reason = f"no renewal for {silent:.1f}s (heartbeat_s {self.heartbeat_s:g})"
        else:
            self._arm()  # renewed since the timer was set
            return
        self._on_end(reason)

    def renew(self) -> None:
        self.renewed = self.loop.time()
        self.renewed_at = time.time()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def to_json(self) -> dict[str, float]:
        """What a renewal answers: the lease as it now stands."""
        out: dict[str, float] = {"renewed_at": self.renewed_at}
        if self.lease_s is not None and self.expires_at is not None:
            out["lease_s"] = self.lease_s
            out["lease_expires_at"] = self.expires_at
        if self.heartbeat_s is not None:
            out[HEARTBEAT_KEY] = self.heartbeat_s
        return out


class Tombstones:
    """Why recent leases ended, by key (a toxic's name), the oldest forgotten first."""

    def __init__(self, size: int = TOMBSTONES) -> None:
        self._ended: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._size = size

    def bury(self, key: str, reason: str) -> None:
        self._ended.pop(key, None)
        self._ended[key] = (reason, time.time())
        while len(self._ended) > self._size:
            self._ended.popitem(last=False)

    def forget(self, key: str) -> None:
        self._ended.pop(key, None)

    def why(self, key: str) -> str | None:
        """Why the lease of ``key`` ended (with when), or None if no lease ended it."""
        found = self._ended.get(key)
        if found is None:
            return None
        reason, at = found
        return f"{reason}, {time.time() - at:.1f}s ago"
