"""The fault proxy's server-side lease (``chaoslab.drivers.proxy.leases``) on a real event
loop, with short windows: renewed in time it never ends; unrenewed it ends once, no
sooner than ``heartbeat_s`` after the last renewal; the ceiling ends it whatever the
renewals; a cancelled lease never ends anything."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.drivers.proxy.leases import Lease, Tombstones

HEARTBEAT_S = 0.05


def _run(
    gaps: list[float], *, lease_s: float | None, heartbeat_s: float | None
) -> tuple[list[str], float, float]:
    """Renew after each gap, then stop renewing; returns (endings, loop time of the last
    renewal, loop time of the end)."""

    async def scenario() -> tuple[list[str], float, float]:
        loop = asyncio.get_running_loop()
        ended: list[str] = []
        at: list[float] = []
        done = asyncio.Event()

        def on_end(reason: str) -> None:
            ended.append(reason)
            at.append(loop.time())
            done.set()

        lease = Lease(loop, lease_s=lease_s, heartbeat_s=heartbeat_s, on_end=on_end)
        last = loop.time()
        for gap in gaps:
            await asyncio.sleep(gap)
            if ended:
                break
            lease.renew()
            last = loop.time()
        await asyncio.wait_for(done.wait(), timeout=5)
        await asyncio.sleep(0.02)  # nothing more may fire
        return ended, last, at[0]

    return asyncio.run(scenario())


@settings(max_examples=10, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0.0, max_value=HEARTBEAT_S * 0.4), min_size=1, max_size=6))
def test_renewed_in_time_it_holds_and_then_ends_once_no_sooner_than_its_window(gaps: list[float]) -> None:
    ended, last, end = _run(gaps, lease_s=None, heartbeat_s=HEARTBEAT_S)
    assert len(ended) == 1 and ended[0].startswith("no renewal for"), ended
    # Never early (the safety that matters: a live run's fault is never cut short)...
    assert end - last >= HEARTBEAT_S - 0.002, end - last
    # ...and not much later (a loaded machine delays a timer, hence the slack).
    assert end - last <= HEARTBEAT_S + 0.5, end - last


def test_the_ceiling_ends_it_whatever_the_renewals() -> None:
    ended, _, _ = _run([0.01] * 30, lease_s=0.1, heartbeat_s=HEARTBEAT_S)
    assert ended == ["its lease expired (0.1s)"]


def test_a_cancelled_lease_ends_nothing() -> None:
    async def scenario() -> list[str]:
        ended: list[str] = []
        lease = Lease(asyncio.get_running_loop(), lease_s=0.02, heartbeat_s=0.01, on_end=ended.append)
        lease.cancel()
        await asyncio.sleep(0.1)
        return ended

    assert asyncio.run(scenario()) == []


def test_a_lease_needs_a_ceiling_or_a_heartbeat() -> None:
    async def scenario() -> None:
        Lease(asyncio.get_running_loop(), lease_s=None, heartbeat_s=None, on_end=lambda _r: None)

    with pytest.raises(ValueError, match="lease_s or heartbeat_s"):
        asyncio.run(scenario())


def test_tombstones_remember_the_latest_endings_only() -> None:
    graves = Tombstones(size=2)
    for name in ("a", "b", "c"):
        graves.bury(name, f"{name} lapsed")
    assert graves.why("a") is None
    assert (graves.why("c") or "").startswith("c lapsed, ")
    graves.forget("c")
    assert graves.why("c") is None and graves.why("b") is not None
