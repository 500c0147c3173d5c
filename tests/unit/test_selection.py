"""Blast-radius rules shared by every platform (chaoslab.drivers.selection)."""

from __future__ import annotations

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
