"""Contract cases of the net driver, each inside a network namespace the test creates.

Nothing on the host is touched: the rules and qdiscs live in the throwaway namespace,
and "visible on the target" means a TCP connect from inside it fails (or is slow).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from chaoslab.drivers.base import RevertRecord
from chaoslab.drivers.net import netem_support
from tests.contract.cases import FaultCase, Target
from tests.contract.targets import netns_available, netns_server


@contextlib.contextmanager
def _ns_target(tmp_path: Path) -> Iterator[Target]:
    with netns_server() as server:
        yield Target(selector=f"netns:{server.netns}", handle=server, args={"port": server.port})


@contextlib.contextmanager
def _ns_plain(tmp_path: Path) -> Iterator[Target]:
    with netns_server() as server:
        yield Target(selector=f"netns:{server.netns}", handle=server)


@contextlib.contextmanager
def _ns_iface(tmp_path: Path) -> Iterator[Target]:
    with netns_server() as server:
        yield Target(selector=f"netns:{server.netns}", handle=server, args={"interface": "lo"})


def _blocked(target: Target, record: RevertRecord) -> bool:
    return not target.handle.reachable("127.0.0.1")


def _peer_blocked(target: Target, record: RevertRecord) -> bool:
    return not target.handle.reachable("127.0.0.2")


def _slow(target: Target, record: RevertRecord) -> bool:
    took = target.handle.connect_s(timeout_s=2.0)
    return took is None or took >= 0.15  # SYN and SYN-ACK each delayed by 100 ms


def _netem() -> tuple[bool, str]:
    ok, why = netns_available()
    return netem_support() if ok else (ok, why)


CASES = [
    FaultCase(
        id="net.drop",
        driver="net",
        op="drop",
        args={"protocol": "tcp", "direction": "ingress"},
        make_target=_ns_target,
        observe=_blocked,
        available=netns_available,
    ),
    FaultCase(
        id="net.partition",
        driver="net",
        op="partition",
        args={"peer": "127.0.0.2"},
        make_target=_ns_plain,
        observe=_peer_blocked,
        available=netns_available,
    ),
    # netem: this sandbox's kernel has none. DESIGN: tested where the kernel has it,
    # so a kernel without netem skips these even in CI (the Unsupported path is tested
    # in tests/integration/test_net_driver.py).
    FaultCase(
        id="net.latency",
        driver="net",
        op="latency",
        args={"delay": "100ms"},
        make_target=_ns_iface,
        observe=_slow,
        available=_netem,
        required_in_ci=False,
    ),
    FaultCase(
        id="net.loss",
        driver="net",
        op="loss",
        args={"percent": 100},
        make_target=_ns_iface,
        observe=_blocked,
        available=_netem,
        required_in_ci=False,
    ),
]
