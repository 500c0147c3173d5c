"""Blast-radius rules shared by every platform (chaoslab.drivers.selection)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaoslab.drivers.selection import Selection, pick, picked_targets
from chaoslab.errors import TargetNotFound, UnsafeTarget


@given(
    n=st.integers(1, 60),
    count=st.integers(1, 80),
    cap=st.one_of(st.none(), st.integers(1, 80)),
    fewer=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_count_max_and_allow_fewer(n: int, count: int, cap: int | None, fewer: bool, seed: int) -> None:
    items = list(range(n))
    sel = Selection.from_args({"count": count, "allow_fewer": fewer, **({"max": cap} if cap else {})})
    if cap is not None and n > cap:
        with pytest.raises(UnsafeTarget):
            pick(items, sel, seed, key=lambda i: i)
        return
    if count > n and not fewer:
        with pytest.raises(TargetNotFound):
            pick(items, sel, seed, key=lambda i: i)
        return
    got = pick(items, sel, seed, key=lambda i: i)
    assert len(got.items) == min(count, n)
    assert got.items == pick(list(reversed(items)), sel, seed, key=lambda i: i).items  # order-free
    assert got.to_dict()["selection"].get("max") == cap


@given(n=st.integers(1, 60), percent=st.floats(0.01, 100), seed=st.integers(0, 2**32 - 1))
def test_percent_and_all_never_fall_short(n: int, percent: float, seed: int) -> None:
    items = list(range(n))
    assert 1 <= len(pick(items, Selection.from_args({"percent": percent}), seed, key=lambda i: i).items) <= n
    assert len(pick(items, Selection.from_args({"all": True}), seed, key=lambda i: i).items) == n


def test_default_is_one_target() -> None:
    assert len(pick(list(range(9)), Selection.from_args({}), 1, key=lambda i: i).items) == 1


def test_picked_targets_names_every_kind() -> None:
    data = {
        "containers": [{"id": "abc", "name": "web-1"}],
        "procs": [{"pid": 42, "name": "sleep"}],
        "namespace": "shop",
        "victims": [{"name": "web-7f", "uid": "u"}],
        "hosts": [{"name": "eu-1", "address": "127.0.0.1"}],
    }
    assert picked_targets(data) == ("container web-1", "pid 42 (sleep)", "pod shop/web-7f", "host eu-1")
    assert picked_targets({}) == ()


def test_ssh_name_globs_max_and_fewer(tmp_path: Path) -> None:
    from chaoslab.drivers.ssh.inventory import load_inventory, pick_hosts

    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "hosts:\n"
        + "".join(
            f"  {n}: {{address: 127.0.0.1, agent: true, tags: [{t}]}}\n"
            for n, t in [("web-1", "eu"), ("web-2", "us"), ("db-1", "eu")]
        )
    )
    hosts = load_inventory(inv).match("ssh:web-*")
    assert [h.name for h in hosts] == ["web-1", "web-2"]
    with pytest.raises(TargetNotFound):
        load_inventory(inv).match("ssh:cache-*")
    with pytest.raises(UnsafeTarget, match="more than max 1"):
        pick_hosts(hosts, 1, "7", cap=1)
    with pytest.raises(TargetNotFound, match="only 2 hosts match"):
        pick_hosts(hosts, 3, "7")
    assert len(pick_hosts(hosts, 3, "7", allow_fewer=True)) == 2
    assert pick_hosts(hosts, 1, "7") == pick_hosts(hosts, 1, "7")  # same seed, same host
