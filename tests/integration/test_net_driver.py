"""The net driver, inside network namespaces the tests create: the host is never touched."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoslab import paths
from chaoslab.drivers import _proc
from chaoslab.drivers.base import DriverContext, Operation, RevertRecord
from chaoslab.drivers.net import NetDriver, netem_support
from chaoslab.errors import DriverError, InvalidInput, TargetNotFound, UnsafeTarget, Unsupported
from chaoslab.lab.state import write_state
from tests.conftest import require
from tests.contract.targets import NetnsServer, adopting_orphans, netns_available, netns_server
from tests.statepaths import env_state

pytestmark = pytest.mark.root
DRIVER = NetDriver()


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="t", state_dir=tmp_path / "state", lab_dir=env_state().lab)


@pytest.fixture
def server() -> Iterator[NetnsServer]:
    ok, reason = netns_available()
    require(ok, reason)
    with netns_server() as srv:
        yield srv


def _op(name: str) -> Operation:
    op = DRIVER.operation(name)
    assert op is not None
    return op


def _rules(ns: str) -> list[str]:
    out = []
    for binary in ("iptables", "ip6tables"):
        listing = subprocess.run(
            ["ip", "netns", "exec", ns, binary, "-S"], capture_output=True, text=True, check=True
        )
        out += [line for line in listing.stdout.splitlines() if line.startswith("-A")]
    return out


def _inject(
    ctx: DriverContext, op: str, args: dict[str, Any], target: str, lease: float = 10
) -> RevertRecord:
    return DRIVER.inject(ctx, DRIVER.prepare(ctx, _op(op), args, target, lease))


@pytest.mark.parametrize(
    ("op", "args", "target", "error", "match"),
    [
        ("drop", {}, "host", InvalidInput, "drop needs a port"),
        ("drop", {"port": 70000}, "host", InvalidInput, "above the maximum"),
        ("drop", {"port": "80"}, "host", InvalidInput, "expected int"),
        ("drop", {"port": 80, "protocol": "sctp"}, "host", InvalidInput, "is not one of"),
        ("drop", {"port": 80, "peer": "not-an-ip"}, "host", InvalidInput, "does not appear to be"),
        ("partition", {}, "host", InvalidInput, "missing required argument 'peer'"),
        ("partition", {"peer": "0.0.0.0/0"}, "host", UnsafeTarget, "cut this host off"),
        ("partition", {"peer": "10.0.0.1"}, "bogus:x", InvalidInput, "invalid network target"),
        (
            "partition",
            {"peer": "10.0.0.1"},
            "netns:clt-does-not-exist",
            TargetNotFound,
            "no network namespace",
        ),
        ("drop", {}, "lab:replica-1", TargetNotFound, "lab is not running"),
        ("latency", {"interface": "lo"}, "host", InvalidInput, "missing required argument 'delay'"),
        ("latency", {"interface": "lo", "delay": "-5ms"}, "host", InvalidInput, "not a duration"),
        ("loss", {"interface": "lo", "percent": 101}, "host", InvalidInput, "above the maximum"),
    ],
)
@pytest.mark.usefixtures("host_iptables")  # compares the host's whole rule set
def test_bad_input_is_refused_before_any_rule_exists(
    ctx: DriverContext, op: str, args: dict[str, Any], target: str, error: type[Exception], match: str
) -> None:
    before = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    with pytest.raises(error, match=match):
        DRIVER.prepare(ctx, _op(op), args, target, 5)
    assert subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout == before


@pytest.mark.parametrize("lease", [-1, 0, 10**9])
def test_bad_leases_are_refused(ctx: DriverContext, lease: float) -> None:
    with pytest.raises(InvalidInput, match="lease"):
        DRIVER.prepare(ctx, _op("drop"), {"port": 80}, "host", lease)


def test_lab_target_drops_the_components_port(ctx: DriverContext) -> None:
    write_state(
        paths.lab_dir(env_state().home),
        {"components": {"replica-2": {"kind": "replica", "pid": None, "port": 40123}}},
    )
    record = DRIVER.prepare(ctx, _op("drop"), {}, "lab:replica-2", 5)  # prepare only: host untouched
    specs = [r["spec"] for r in record.data["rules"]]
    assert ["-p", "tcp", "--dport", "40123"] in specs and ["-p", "tcp", "--sport", "40123"] in specs
    assert record.data["netns"] is None


def test_revert_removes_exactly_this_faults_rules(ctx: DriverContext, server: NetnsServer) -> None:
    ns = server.netns
    foreign = [
        "-I",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-m",
        "comment",
        "--comment",
        "someone-else",
        "-j",
        "DROP",
    ]
    subprocess.run(["ip", "netns", "exec", ns, "iptables", *foreign], check=True)
    a = _inject(ctx, "drop", {"port": server.port}, f"netns:{ns}")
    b = _inject(ctx, "partition", {"peer": "127.0.0.2"}, f"netns:{ns}")
    try:
        assert not server.reachable("127.0.0.1")
        assert sum(f"chaoslab:{a.fault_id}" in r for r in _rules(ns)) == 4  # v4 + v6, in + out
        assert DRIVER.revert(ctx, a).reverted
        assert DRIVER.check_clean(ctx, a).clean
        rules = _rules(ns)
        assert not any(a.fault_id in r for r in rules)
        assert sum(f"chaoslab:{b.fault_id}" in r for r in rules) == 2
        assert any("someone-else" in r for r in rules)
        assert server.reachable("127.0.0.1") and not server.reachable("127.0.0.2")
        assert not DRIVER.check_clean(ctx, b).clean
    finally:
        DRIVER.revert(ctx, a)
        DRIVER.revert(ctx, b)
    assert DRIVER.check_clean(ctx, b).clean
    assert [r for r in _rules(ns) if "chaoslab" in r] == []
    assert any("someone-else" in r for r in _rules(ns))


def test_check_clean_finds_our_rules_beyond_the_record(ctx: DriverContext, server: NetnsServer) -> None:
    record = _inject(
        ctx, "drop", {"port": server.port, "protocol": "udp", "direction": "both"}, f"netns:{server.netns}"
    )
    DRIVER.revert(ctx, record)
    stray = [
        "-A",
        "OUTPUT",
        "-d",
        "10.9.9.9",
        "-m",
        "comment",
        "--comment",
        f"chaoslab:{record.fault_id}",
        "-j",
        "DROP",
    ]
    subprocess.run(["ip", "netns", "exec", server.netns, "iptables", *stray], check=True)
    report = DRIVER.check_clean(ctx, record)
    assert not report.clean and "10.9.9.9" in report.residue[0]
    DRIVER.revert(ctx, record)
    assert DRIVER.check_clean(ctx, record).clean


def test_egress_drop_blocks_outgoing_connections(ctx: DriverContext, server: NetnsServer) -> None:
    record = _inject(ctx, "drop", {"port": server.port, "direction": "egress"}, f"netns:{server.netns}")
    try:
        chains = {(r["chain"], r["spec"][2]) for r in record.data["rules"]}
        assert chains == {("OUTPUT", "--dport"), ("INPUT", "--sport")}
        assert not server.reachable()
    finally:
        DRIVER.revert(ctx, record)
    assert server.reachable()


def test_revert_after_the_namespace_is_gone_is_clean(ctx: DriverContext) -> None:
    ok, reason = netns_available()
    require(ok, reason)
    with netns_server() as srv:
        record = _inject(ctx, "drop", {"port": srv.port}, f"netns:{srv.netns}")
    assert DRIVER.revert(ctx, record).reverted
    assert DRIVER.check_clean(ctx, record).clean


def test_netem_is_detected_and_a_missing_netem_is_a_clear_error(
    ctx: DriverContext, server: NetnsServer
) -> None:
    supported, reason = netem_support()
    if supported:
        record = _inject(ctx, "loss", {"interface": "lo", "percent": 100}, f"netns:{server.netns}")
        try:
            assert not server.reachable()
        finally:
            DRIVER.revert(ctx, record)
        assert server.reachable() and DRIVER.check_clean(ctx, record).clean
        return
    assert "no netem" in reason
    with pytest.raises(Unsupported, match="this kernel has no netem qdisc"):
        DRIVER.prepare(ctx, _op("latency"), {"interface": "lo", "delay": "100ms"}, f"netns:{server.netns}", 5)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "chaoslab-probe" not in listed  # the throwaway probe namespace is gone


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)


def test_two_names_of_one_namespace_share_a_lock_key(ctx: DriverContext, server: NetnsServer) -> None:
    alias = f"clt-alias-{secrets.token_hex(4)}"
    (pid, *_) = _ip("netns", "pids", server.netns).stdout.split()
    assert _ip("netns", "attach", alias, pid).returncode == 0
    try:
        first = DRIVER.prepare(ctx, _op("partition"), {"peer": "127.0.0.2"}, f"netns:{server.netns}", 10)
        second = DRIVER.prepare(ctx, _op("partition"), {"peer": "127.0.0.2"}, f"netns:{alias}", 10)
    finally:
        _ip("netns", "delete", alias)
    shared = set(DRIVER.identities(first)) & set(DRIVER.identities(second))
    assert shared and all("netns-inode:" in key for key in shared)


def test_a_namespace_that_lost_its_name_is_not_called_gone(ctx: DriverContext, server: NetnsServer) -> None:
    """``ip netns delete`` while a process still lives in the namespace: the rules are
    still in force there. The revert says it cannot reach them (lease kept) instead of
    "gone, and its rules with it"; once the name is back, it reverts."""
    record = _inject(ctx, "drop", {"port": server.port}, f"netns:{server.netns}")
    (pid, *_) = _ip("netns", "pids", server.netns).stdout.split()
    assert _ip("netns", "delete", server.netns).returncode == 0
    try:
        result = DRIVER.revert(ctx, record)
        assert not result.reverted and "still holds the namespace" in result.detail, result
        report = DRIVER.check_clean(ctx, record)
        assert not report.clean and f"pid {pid}" in report.residue[0], report
    finally:
        assert _ip("netns", "attach", server.netns, pid).returncode == 0
    assert not server.reachable(), "the rules were in force all along"
    assert DRIVER.revert(ctx, record).reverted
    assert DRIVER.check_clean(ctx, record).clean and server.reachable()


def test_a_namespace_that_cannot_be_entered_is_not_applied(ctx: DriverContext, tmp_path: Path) -> None:
    """A name left as a plain file (its namespace gone): nothing could be inserted, so
    the fault is "not applied", and no lease is left armed."""
    name = f"clt-stale-{secrets.token_hex(4)}"
    stale = Path("/run/netns") / name
    stale.parent.mkdir(exist_ok=True)
    stale.touch()
    try:
        record = DRIVER.prepare(ctx, _op("drop"), {"port": 80}, f"netns:{name}", 10)
        with pytest.raises(DriverError) as caught:
            DRIVER.inject(ctx, record)
        assert caught.value.not_applied, caught.value
    finally:
        stale.unlink()
    assert not _proc.watchdog_processes(record.fault_id)
