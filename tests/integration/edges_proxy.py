"""Edge-column hooks of the proxy driver (every toxic and ``down``): see matrix_edges.py.

The target is the matrix's proxy case target (``proxykit.own_proxy``): a proxy named
``echo`` in front of an echo service, on a proxy server process of the cell's own, so
freezing it touches no other test.

- revert fails: for a toxic, the control plane stops answering (the proxy server is
  frozen with SIGSTOP, so the revert's DELETE and the clean check's GET time out); for
  ``down``, the proxy's own listen port is held by another socket while it is down, so
  the server cannot re-enable it (the revert's re-enable answers 500).
- target unreachable: the same proxy name at an API port nobody listens on (a socket
  bound to it and never listening, so nobody else can take it during the cell).
- named two ways: ``proxy:NAME@localhost:PORT`` for the ``proxy:NAME@127.0.0.1:PORT``
  the first run names.
- relative path: a proxy fault has no path argument; the relative experiment and run
  directory are still exercised (``unchanged``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import Target
from tests.integration.matrix_edges import EdgeHooks, Variant
from tests.integration.proxykit import ProxyRef

OPERATIONS = ("latency", "bandwidth", "timeout", "reset_peer", "slicer", "slow_close", "limit_data", "down")


def _ref(target: Target) -> ProxyRef:
    ref = target.handle
    assert isinstance(ref, ProxyRef), ref
    return ref


def _api_port(ref: ProxyRef) -> int:
    port = urlsplit(ref.api).port
    assert port is not None, ref.api
    return port


def _server_process(ref: ProxyRef) -> psutil.Process:
    """The cell's own proxy server process (``proxykit.own_proxy``), never a shared one."""
    assert ref.pid is not None, f"{ref.api} is not a proxy server of the cell's own"
    server = psutil.Process(ref.pid)
    assert server.ppid() == os.getpid() and "chaoslab.drivers.proxy" in " ".join(server.cmdline())
    return server


@contextlib.contextmanager
def _frozen_control_plane(target: Target, record: RevertRecord) -> Iterator[None]:
    """The cell's proxy server stops answering (SIGSTOP), its toxics still in place: the
    revert's DELETE and the clean check's GET time out. Continued on exit."""
    server = _server_process(_ref(target))
    server.suspend()
    try:
        yield
    finally:
        server.resume()


@contextlib.contextmanager
def _listen_port_taken(target: Target, record: RevertRecord) -> Iterator[None]:
    """While the proxy is down its listen port is free; another socket takes it, so the
    server cannot listen again: re-enabling answers 500 until the socket is closed."""
    ref = _ref(target)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: bound despite connections of the proxy's in TIME_WAIT; listening,
        # it still keeps the server's own (SO_REUSEADDR) bind out.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ref.port))
        squatter.listen(1)
        yield
    finally:
        squatter.close()


@contextlib.contextmanager
def _nobody_listens(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same proxy name at an API port held by a socket that never listens: every
    connection to it is refused, and no other process can take the port meanwhile."""
    ref = _ref(target)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port = int(held.getsockname()[1])
        yield Variant(selector=f"proxy:{ref.name}@127.0.0.1:{port}")


@contextlib.contextmanager
def _by_localhost(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same proxy on the same server, its API named ``localhost`` instead of 127.0.0.1."""
    ref = _ref(target)
    yield Variant(selector=f"proxy:{ref.name}@localhost:{_api_port(ref)}")


def _hooks(op: str) -> EdgeHooks:
    return EdgeHooks(
        break_revert=_listen_port_taken if op == "down" else _frozen_control_plane,
        unreachable=_nobody_listens,
        alias=_by_localhost,
    )


HOOKS: dict[str, EdgeHooks] = {f"proxy.{op}": _hooks(op) for op in OPERATIONS}

__all__ = ["HOOKS"]
