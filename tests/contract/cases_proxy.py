"""Contract cases of the proxy driver: every toxic and ``down``, measured through the proxy.

The target is a proxy server process of its own (``python -m chaoslab.drivers.proxy``)
with one proxy in front of the threaded echo service of
``tests/integration/proxykit``. "Visible" is what a client of that proxy
measures on its own socket (a round-trip time, a reset, an early EOF, a refused
connect), never what the proxy's API says about its toxics.

``proxykit``'s ``echo_service`` and ``proxy_server`` are the context managers a
``make_target`` enters (its fixtures cannot be).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target
from tests.integration.proxykit import connect, echo_service, proxy_server, recv_exactly

LEASE_S = 2.0
PROXY_NAME = "contract"


@dataclass(frozen=True, kw_only=True)
class ProxyTarget:
    """Where a client reaches the echo service through the proxy."""

    port: int


@contextlib.contextmanager
def _proxied_echo(tmp_path: Path) -> Iterator[Target]:
    with echo_service() as upstream, proxy_server() as (api, _):
        with httpx.Client(base_url=f"http://{api}", timeout=10) as client:
            resp = client.post("/proxies", json={"name": PROXY_NAME, "upstream": f"127.0.0.1:{upstream}"})
        if resp.status_code != 201:
            raise RuntimeError(f"creating the proxy failed: HTTP {resp.status_code} {resp.text}")
        port = int(resp.json()["listen"].rsplit(":", 1)[1])
        yield Target(selector=f"proxy:{PROXY_NAME}@{api}", handle=ProxyTarget(port=port))


# --- what a client of the proxy sees ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One request/echo through the proxy: how it ended, how long it took, what came back.

    ``outcome`` is ``ok`` (all bytes back), ``eof`` (closed early), ``reset``,
    ``timeout`` (nothing more within the deadline) or ``refused`` (no connection).
    """

    outcome: str
    elapsed_s: float
    received: int


def _exchange(target: Target, payload: bytes, timeout_s: float) -> Exchange:
    t0 = time.perf_counter()
    got = b""
    try:
        with connect(target.handle.port, timeout=timeout_s) as sock:
            sock.sendall(payload)
            got = recv_exactly(sock, len(payload))
            outcome = "ok" if got == payload else "eof"
    except ConnectionRefusedError:
        outcome = "refused"
    except ConnectionResetError:
        outcome = "reset"
    except TimeoutError:
        outcome = "timeout"
    return Exchange(outcome=outcome, elapsed_s=time.perf_counter() - t0, received=len(got))


def _every(exchange: Callable[[], Exchange], slow_s: float, times: int = 3) -> bool:
    """Every one of ``times`` exchanges answered and took at least ``slow_s``: a fault
    slows each of them, a loaded machine (a stall, a busy core) rarely all three."""
    for _ in range(times):
        ex = exchange()
        if ex.outcome != "ok" or ex.elapsed_s < slow_s:
            return False
    return True


def _delayed(target: Target, record: RevertRecord) -> bool:
    # latency 200 ms on the reply; a bare round trip here is a few ms.
    return _every(lambda: _exchange(target, b"ping", timeout_s=3.0), 0.15)


def _throttled(target: Target, record: RevertRecord) -> bool:
    # 400 bytes at 1 KB/s take 0.4 s to come back.
    return _every(lambda: _exchange(target, b"b" * 400, timeout_s=3.0), 0.25, times=2)


def _sliced(target: Target, record: RevertRecord) -> bool:
    # 100 bytes in 10-byte slices, 20 ms apart: 180 ms.
    return _every(lambda: _exchange(target, b"s" * 100, timeout_s=3.0), 0.1)


def _blackholed(target: Target, record: RevertRecord) -> bool:
    return _exchange(target, b"ping", timeout_s=0.5).outcome == "timeout"


def _reset(target: Target, record: RevertRecord) -> bool:
    return _exchange(target, b"ping", timeout_s=2.0).outcome == "reset"


def _cut_short(target: Target, record: RevertRecord) -> bool:
    # 64 bytes let through, then the connection is closed.
    ex = _exchange(target, b"l" * 128, timeout_s=2.0)
    return ex.outcome in ("eof", "reset") and ex.received < 128


def _refused(target: Target, record: RevertRecord) -> bool:
    return _exchange(target, b"ping", timeout_s=2.0).outcome == "refused"


def _close_held(target: Target, record: RevertRecord) -> bool:
    """After our half-close the echo service closes at once; the client sees EOF only
    once the proxy lets the close through (1 s with slow_close)."""
    try:
        with connect(target.handle.port, timeout=3.0) as sock:
            sock.sendall(b"ping")
            if recv_exactly(sock, 4) != b"ping":
                return False
            t0 = time.perf_counter()
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
            return time.perf_counter() - t0 >= 0.5
    except OSError:
        return False


def _case(op: str, args: dict[str, object], observe: Callable[[Target, RevertRecord], bool]) -> FaultCase:
    return FaultCase(
        id=f"proxy.{op}",
        driver="proxy",
        op=op,
        args=args,
        make_target=_proxied_echo,
        observe=observe,
        lease_s=LEASE_S,
    )


CASES = [
    _case("latency", {"latency": "200ms"}, _delayed),
    _case("bandwidth", {"rate": 1}, _throttled),
    _case("timeout", {"timeout": 0}, _blackholed),
    _case("reset_peer", {"timeout": 0}, _reset),
    _case("slicer", {"average_size": 10, "delay_us": 20_000}, _sliced),
    _case("slow_close", {"delay": "1s"}, _close_held),
    _case("limit_data", {"bytes": 64}, _cut_short),
    _case("down", {}, _refused),
]
