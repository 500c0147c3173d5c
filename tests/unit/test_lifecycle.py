"""The fault skeleton (chaoslab/drivers/lifecycle.py) with a tiny driver written on it.

``MarkDriver``'s leased fault writes a marker file; its lease is a second file (armed
before the change, removed when the lease is retired), so every lifecycle rule shows on
disk: a failed revert keeps the lease and the ledger entry, a fault never applied is
closed as "not applied", a kill that cannot heal gets the same verdict everywhere. The
typed record data of every fault kind of every installed driver goes through the
ledger's JSON and back unchanged (hypothesis).
"""

from __future__ import annotations

import json
import math
import textwrap
import time
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.drivers.base import (
    CleanReport,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
)
from chaoslab.drivers.lifecycle import (
    Ask,
    FaultData,
    FaultDriver,
    Heal,
    HealingData,
    HealingFault,
    LeasedData,
    LeasedFault,
    decode,
    encode,
    not_applied,
)
from chaoslab.drivers.proxy.driver import DownData, ProxyDriver, ToxicData
from chaoslab.drivers.proxy.http_driver import HttpDriver
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.journal import read_events
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.errors import DriverError
from chaoslab.safety.ledger import Ledger
from chaoslab.verdict import Verdict
from tests.statepaths import env_state

# --- a tiny driver written on the skeleton ----------------------------------------------------


class MarkData(LeasedData, frozen=True, kw_only=True):
    path: str  # absolute
    lease_file: str  # absolute: the stand-in for a watchdog
    mode: str = ""


class Mark(LeasedFault[MarkData]):
    operation = "mark"
    data_type = MarkData

    def plan(self, ctx: DriverContext, ask: Ask) -> MarkData:
        where = Path(str(ask.target)).absolute()
        return MarkData(
            path=str(where / "mark"), lease_file=str(where / "lease"), mode=str(ask.full.get("mode", ""))
        )

    def identities(self, record: RevertRecord, data: MarkData) -> tuple[str, ...]:
        return (f"file:{data.path}",)

    def arm(self, ctx: DriverContext, record: RevertRecord, data: MarkData) -> MarkData:
        if data.mode == "no-lease":
            raise DriverError("the lease could not be armed", driver="mark")
        Path(data.lease_file).write_text(record.fault_id)
        return data

    def apply(self, ctx: DriverContext, record: RevertRecord, data: MarkData) -> MarkData:
        if data.mode == "refused":
            raise not_applied("the target said no", driver="mark", target=record.target)
        Path(data.path).write_text("x")
        if data.mode == "half":
            raise DriverError("failed half-way", driver="mark", target=record.target)
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: MarkData) -> str:
        if data.mode == "stubborn":
            return "pretended"
        if data.mode == "broken":
            raise DriverError("cannot reach the target", driver="mark")
        Path(data.path).unlink(missing_ok=True)
        return "removed"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: MarkData) -> list[str]:
        return [f"{data.path} still exists"] if Path(data.path).exists() else []

    def retire(self, ctx: DriverContext, record: RevertRecord, data: MarkData) -> None:
        Path(data.lease_file).unlink(missing_ok=True)

    def lease_residue(self, record: RevertRecord, data: MarkData) -> list[str]:
        return ["lease still armed"] if Path(data.lease_file).exists() else []


class DropData(HealingData, frozen=True, kw_only=True):
    """The "kill": removes a file that something else (the test) may bring back."""

    path: str
    restartable: bool = True
    dropped_at: float | None = None


class Drop(HealingFault[DropData]):
    operation = "drop"
    data_type = DropData
    poll_s = 0.01

    def plan(self, ctx: DriverContext, ask: Ask) -> DropData:
        return DropData(
            path=str(Path(str(ask.target)).absolute() / "alive"),
            restartable=bool(ask.full.get("restartable", True)),
            timeout_s=float(ask.full.get("timeout", 1.0)),
        )

    def identities(self, record: RevertRecord, data: DropData) -> tuple[str, ...]:
        return (f"file:{data.path}",)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: DropData) -> DropData:
        at = time.time()
        Path(data.path).unlink()
        return msgspec.structs.replace(data, dropped_at=at)

    def since(self, record: RevertRecord, data: DropData) -> float:
        return data.dropped_at or record.created_at

    def heal(self, ctx: DriverContext, record: RevertRecord, data: DropData) -> Heal:
        p = Path(data.path)
        if p.exists():
            return Heal(healed=True, recovered_at=p.stat().st_mtime, detail="back")
        if not data.restartable:
            return Heal(healed=False, possible=False, detail="nothing restarts it")
        return Heal(healed=False, detail="still gone")


_ARGS = (
    Param(name="mode", type=str, help="how it misbehaves"),
    Param(name="restartable", type=bool, help="whether anything restarts it"),
    Param(name="timeout", type=(int, float), help="heal timeout"),
)


class MarkDriver(FaultDriver):
    name = "mark"
    faults = (Mark, Drop)

    def operations(self) -> Sequence[Operation]:
        return (
            Operation(name="mark", kind=Kind.FAULT, summary="a marker file", params=_ARGS[:1]),
            Operation(
                name="drop", kind=Kind.FAULT, summary="drop a file", params=_ARGS[1:], lease=LeaseKind.NONE
            ),
            Operation(name="count", kind=Kind.PROBE, summary="marker files"),
        )

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        return len(list(Path(str(target)).glob("mark")))


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="skel", state_dir=tmp_path / "state", lab_dir=env_state().lab)


def _record(ctx: DriverContext, where: Path, op: str = "mark", **args: Any) -> RevertRecord:
    driver = MarkDriver()
    operation = driver.operation(op)
    assert operation is not None
    return driver.prepare(ctx, operation, args, str(where), 5.0)


# --- leased faults --------------------------------------------------------------------------


def test_a_verified_revert_retires_the_lease(ctx: DriverContext, tmp_path: Path) -> None:
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path))
    assert (tmp_path / "mark").exists() and (tmp_path / "lease").exists()
    assert driver.check_clean(ctx, record).residue == (
        f"{tmp_path / 'mark'} still exists",
        "lease still armed",
    )
    result = driver.revert(ctx, record)
    assert result.reverted and result.detail == "removed"
    assert not (tmp_path / "lease").exists()
    assert driver.check_clean(ctx, record) == CleanReport(clean=True)
    assert driver.revert(ctx, record).reverted  # idempotent


@pytest.mark.parametrize(
    ("mode", "said"), [("stubborn", "still there"), ("broken", "cannot reach the target")]
)
def test_a_failed_revert_keeps_the_lease(ctx: DriverContext, tmp_path: Path, mode: str, said: str) -> None:
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path, mode=mode))
    result = driver.revert(ctx, record)
    assert not result.reverted and said in result.detail and "(lease kept)" in result.detail
    assert (tmp_path / "lease").exists(), "a failed revert retired the lease"
    report = driver.check_clean(ctx, record)
    assert not report.clean and "lease still armed" in report.residue


def test_a_fault_never_applied_raises_not_applied_and_retires_its_lease(
    ctx: DriverContext, tmp_path: Path
) -> None:
    driver = MarkDriver()
    with pytest.raises(DriverError, match="the target said no") as caught:
        driver.inject(ctx, _record(ctx, tmp_path, mode="refused"))
    assert caught.value.not_applied
    assert not (tmp_path / "mark").exists() and not (tmp_path / "lease").exists()


def test_a_lease_that_cannot_be_armed_means_nothing_was_applied(ctx: DriverContext, tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="could not be armed") as caught:
        MarkDriver().inject(ctx, _record(ctx, tmp_path, mode="no-lease"))
    assert caught.value.not_applied
    assert not (tmp_path / "mark").exists()


def test_a_half_applied_fault_is_reverted_before_the_error_surfaces(
    ctx: DriverContext, tmp_path: Path
) -> None:
    driver = MarkDriver()
    with pytest.raises(DriverError, match="half-way") as caught:
        driver.inject(ctx, _record(ctx, tmp_path, mode="half"))
    assert not caught.value.not_applied
    assert not (tmp_path / "mark").exists() and not (tmp_path / "lease").exists()


class OwnLease(Mark):
    """A lease the target counts itself (as the fault proxy's): none sent, none counted."""

    def lease_for(self, ask: Ask) -> float | None:
        return ask.lease_s

    def start_lease(self, record: RevertRecord) -> RevertRecord:
        return record if record.lease_s is None else super().start_lease(record)


def test_start_lease_counts_from_inject_unless_the_fault_counts_it_itself(
    ctx: DriverContext, tmp_path: Path
) -> None:
    before = time.time()
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path))  # the default: lease_s from inject on
    assert record.lease_expires_at is not None
    assert before + 5.0 <= record.lease_expires_at <= time.time() + 5.0
    assert driver.revert(ctx, record).reverted

    own = OwnLease(driver)
    planned = own.prepare(ctx, Ask(args={}, full={}, target=str(tmp_path), lease_s=None))
    assert planned.lease_s is None and planned.lease_expires_at is None
    injected = own.inject(ctx, planned)
    assert injected.lease_expires_at is None, "a lease nobody holds was given an expiry"
    assert (tmp_path / "mark").exists() and own.revert(ctx, injected).reverted


def test_proxy_records_keep_the_keys_open_ledger_entries_have() -> None:
    """The proxy and http faults moved onto the skeleton; entries an older chaoslab left
    open (plain dicts with these keys) still decode, and new ones look the same."""
    toxic = {
        "name": "chaoslab-f1",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 300, "jitter": 0},
    }
    old = RevertRecord(driver="proxy", operation="latency", target="lab:replica-1").with_data(
        api="http://127.0.0.1:8474", proxy="replica-1", toxic=toxic, heartbeat_s=3.0
    )
    data = decode(old, ToxicData)
    assert data.toxic.attributes == {"latency": 300, "jitter": 0} and data.heartbeat_s == 3.0
    assert encode(old, data).data == old.data
    down = RevertRecord(driver="proxy", operation="down", target="t").with_data(api="http://a", proxy="p")
    assert encode(down, decode(down, DownData)).data == {"api": "http://a", "proxy": "p"}
    assert ProxyDriver().heartbeat_ops == {f.operation for f in ProxyDriver.faults}
    assert HttpDriver().heartbeat_ops == {"abort", "delay", "rewrite", "truncate"}


def test_a_dry_inject_touches_nothing(tmp_path: Path) -> None:
    dry = DriverContext(run_id="plan", state_dir=tmp_path / "state", dry=True, lab_dir=env_state().lab)
    driver = MarkDriver()
    record = driver.inject(dry, _record(dry, tmp_path))
    assert record.data["dry"] is True and not (tmp_path / "lease").exists()
    assert driver.revert(dry, record).reverted and driver.check_clean(dry, record).clean


# --- healing faults ----------------------------------------------------------------------------


def test_a_kill_that_heals_reports_its_time_to_recover(ctx: DriverContext, tmp_path: Path) -> None:
    (tmp_path / "alive").write_text("1")
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path, "drop", timeout=5))
    assert record.lease_s is None and record.lease_expires_at is None
    assert not driver.check_clean(ctx, record).clean
    time.sleep(0.05)
    (tmp_path / "alive").write_text("2")  # the "supervisor" brings it back
    result = driver.revert(ctx, record)
    assert result.reverted and result.time_to_recover_s is not None
    assert 0.0 <= result.time_to_recover_s < 5.0
    assert driver.check_clean(ctx, record).clean


def test_a_kill_that_cannot_heal_is_done_with_no_time_to_recover(ctx: DriverContext, tmp_path: Path) -> None:
    (tmp_path / "alive").write_text("1")
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path, "drop", restartable=False, timeout=30))
    t0 = time.monotonic()
    result = driver.revert(ctx, record)
    assert time.monotonic() - t0 < 5, "waited for a heal that can never come"
    assert result.reverted and result.time_to_recover_s is None
    assert result.detail.startswith("cannot heal, nothing to wait for: nothing restarts it")
    report = driver.check_clean(ctx, record)
    assert report.clean and report.detail == "nothing restarts it"


def test_a_kill_that_could_heal_but_did_not_is_not_clean(ctx: DriverContext, tmp_path: Path) -> None:
    (tmp_path / "alive").write_text("1")
    driver = MarkDriver()
    record = driver.inject(ctx, _record(ctx, tmp_path, "drop", timeout=0.2))
    result = driver.revert(ctx, record)
    assert not result.reverted and result.detail == "not healed within 0.2s: still gone"
    report = driver.check_clean(ctx, record)
    assert not report.clean and "has not healed: still gone" in report.residue[0]


def test_heal_all_combines_several_targets() -> None:
    ok = Heal(healed=True, recovered_at=5.0, detail="a back")
    gone = Heal(healed=False, possible=False, detail="b gone for good")
    waiting = Heal(healed=False, detail="c starting")
    assert Heal.all([ok, Heal(healed=True, recovered_at=7.0)], since=1.0).recovered_at == 7.0
    assert not Heal.all([ok, gone], since=1.0).possible
    combined = Heal.all([gone, waiting], since=1.0)
    assert combined.possible and not combined.healed  # one may still come back: wait
    assert combined.detail == "b gone for good; c starting"


# --- dispatch ------------------------------------------------------------------------------------


def test_dispatch_is_on_the_record_operation_through_the_table(ctx: DriverContext, tmp_path: Path) -> None:
    driver = MarkDriver()
    assert driver.heartbeat_ops == frozenset({"mark"})
    record = _record(ctx, tmp_path)
    assert driver.identities(record) == (f"file:{tmp_path / 'mark'}",)
    stray = msgspec.structs.replace(record, operation="explode")
    for call in (driver.inject, driver.revert, driver.check_clean):
        with pytest.raises(DriverError, match="has no fault 'explode'"):
            call(ctx, stray)


def test_two_fault_classes_for_one_operation_are_refused() -> None:
    with pytest.raises(TypeError, match="two fault classes for 'mark'"):
        types.new_class("Twice", (MarkDriver,), exec_body=lambda ns: ns.update(faults=(Mark, Mark)))


def test_a_record_that_does_not_fit_its_type_is_a_driver_error(ctx: DriverContext, tmp_path: Path) -> None:
    record = _record(ctx, tmp_path).with_data(path=42)
    with pytest.raises(DriverError, match=r"cannot be read: Expected `str`, got `int` - at `\$.path`"):
        MarkDriver().revert(ctx, record)


def _fault_drivers() -> list[FaultDriver]:
    return [d for d in DriverRegistry() if isinstance(d, FaultDriver)] + [MarkDriver()]


def test_every_fault_driver_table_matches_its_operations() -> None:
    drivers = _fault_drivers()
    assert {d.name for d in drivers} >= {"process", "proxy", "http", "ssh", "mark"}
    for driver in drivers:
        faults = {o.name: o for o in driver.operations() if o.kind is Kind.FAULT}
        assert set(faults) == {f.operation for f in driver.faults}, driver.name
        for f in driver.faults:
            assert faults[f.operation].lease is f.lease_kind, (driver.name, f.operation)
        leased = {f.operation for f in driver.faults if issubclass(f, LeasedFault) and f.heartbeat}
        assert driver.heartbeat_ops == leased
        # The lifecycle is the skeleton's: no driver writes it again by hand.
        for method in ("prepare", "inject", "revert", "check_clean", "identities"):
            assert getattr(type(driver), method) is getattr(FaultDriver, method), (driver.name, method)


# --- the typed record codec ---------------------------------------------------------------------

_JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_JSON = st.recursive(
    _JSON_SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a record-data field type, as they come back from the ledger's JSON."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct(tp)
    if tp is Any:
        return _JSON
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy(a) for a in args))
    if origin is tuple:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    if origin is list:
        return st.lists(_strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=6), _strategy(args[1]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        bool: st.booleans(),
        int: st.integers(-(2**53), 2**53),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: st.text(max_size=12),
    }
    return simple[tp]


def _struct(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name]) for f in msgspec.structs.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


_DATA_TYPES: list[type[FaultData]] = sorted(
    {f.data_type for d in _fault_drivers() for f in d.faults}, key=lambda t: t.__qualname__
)


@pytest.mark.parametrize("data_type", _DATA_TYPES, ids=[t.__qualname__ for t in _DATA_TYPES])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_typed_record_data_survives_the_ledger(data_type: type[FaultData], data: st.DataObject) -> None:
    value = data.draw(_struct(data_type))
    record = encode(RevertRecord(driver="d", operation="o", target="t"), value)
    back = RevertRecord.from_dict(json.loads(record.to_json()))  # what recover reads
    assert decode(back, data_type) == value


def test_the_codec_keeps_floats_exact() -> None:
    value = DropData(path="/x", timeout_s=math.pi, dropped_at=1_700_000_000.123456)
    back = RevertRecord.from_dict(
        json.loads(encode(RevertRecord(driver="d", operation="o", target="t"), value).to_json())
    )
    assert decode(back, DropData) == value


# --- through the engine: ledger entry and verdict ---------------------------------------------


def _run(tmp_path: Path, mode: str) -> tuple[Any, Ledger]:
    target = tmp_path / "target"
    target.mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text(
        textwrap.dedent(
            f"""
            title: t
            description: d
            method:
              - {{do: mark.mark, target: "{target}", with: {{mode: "{mode}"}}, duration: 0.1}}
            """
        )
    )
    reg = DriverRegistry(extra={"mark": MarkDriver()}, load_installed=False)
    ledger = Ledger(tmp_path / "ledger")
    exp = load_experiment(str(f), registry=reg)
    options = RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state())
    return Runner(exp, registry=reg, options=options, ledger=ledger).run(), ledger


def test_the_engine_keeps_the_entry_open_after_a_failed_revert(tmp_path: Path) -> None:
    result, ledger = _run(tmp_path, "stubborn")
    assert result.verdict is Verdict.NOT_CLEAN
    assert [e.record.operation for e in ledger.open_entries()] == ["mark"]
    assert (tmp_path / "target" / "lease").exists()


def test_the_engine_closes_a_fault_never_applied_as_not_applied(tmp_path: Path) -> None:
    result, ledger = _run(tmp_path, "refused")
    assert result.verdict is not Verdict.NOT_CLEAN
    assert ledger.open_entries() == []
    kinds = [e["kind"] for e in read_events(result.events_path)]
    assert "fault-not-applied" in kinds and "fault-injected" not in kinds
    assert not (tmp_path / "target" / "lease").exists()
