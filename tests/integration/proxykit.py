"""Real components for the proxy tests (no tests here): the proxy server as a child
process (``python -m chaoslab.drivers.proxy``), a threaded TCP echo service, and
socket helpers. Everything listens on 127.0.0.1 and is stopped by the fixture that
started it."""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

_names = itertools.count()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass  # reset by a reset_peer test, or closed by the proxy: expected


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # peers vanishing mid-request is what these tests provoke


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@contextlib.contextmanager
def echo_service() -> Iterator[int]:
    """The echo service on 127.0.0.1 for one caller; yields its port."""
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    # A short poll interval: shutdown() waits for the loop's next poll (0.5 s by default).
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="echo", daemon=True
    )
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def proxy_server() -> Iterator[tuple[str, int]]:
    """A proxy server process for one caller; yields its API address (``127.0.0.1:PORT``)
    and pid. Stopped with SIGKILL (continued first, in case it was frozen): its proxies
    and toxics live in its memory only, and a graceful stop costs half a second (the API
    server's shutdown poll)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.drivers.proxy", "--api", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("chaoslab-proxy api="):
            raise RuntimeError(f"the proxy server did not start: {line!r}")
        yield line.split("api=")[1].split()[0], proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def own_proxy(name: str = "echo") -> Iterator[ProxyRef]:
    """A proxy named ``name`` in front of an echo service, on a proxy server process of
    the caller's own (``ProxyRef.pid``): a test may freeze or stop that server without
    touching anybody else's. Everything is stopped on exit."""
    with echo_service() as upstream, proxy_server() as (api, pid):
        with httpx.Client(base_url=f"http://{api}", timeout=10) as client:
            resp = client.post("/proxies", json={"name": name, "upstream": f"127.0.0.1:{upstream}"})
        if resp.status_code != 201:
            raise RuntimeError(f"creating the proxy failed: HTTP {resp.status_code} {resp.text}")
        port = int(resp.json()["listen"].rsplit(":", 1)[1])
        yield ProxyRef(api=f"http://{api}", name=name, port=port, pid=pid)


@contextlib.contextmanager
def proxy_process(loop: str = "auto") -> Iterator[str]:
    """Base URL of a proxy server running in its own process on ``loop``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.drivers.proxy", "--api", "127.0.0.1:0", "--loop", loop],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line.startswith("chaoslab-proxy api="), line
        yield "http://" + line.split("api=")[1].split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def proxy_api() -> Iterator[str]:
    """A proxy server on its default loop (uvloop when installed)."""
    with proxy_process() as url:
        yield url


@dataclass(frozen=True)
class ProxyRef:
    """One proxy: its server's API base URL, its name, its listen port, and the server's
    pid when the server is the caller's own (``own_proxy``: free to freeze or kill)."""

    api: str
    name: str
    port: int
    pid: int | None = None

    @property
    def target(self) -> str:
        return f"proxy:{self.name}@{self.api.removeprefix('http://')}"

    def http(self, method: str, path: str, body: Any = None) -> httpx.Response:
        with httpx.Client(base_url=self.api, timeout=10) as client:
            return client.request(method, path, json=body)

    def add_toxic(self, **body: Any) -> dict[str, Any]:
        resp = self.http("POST", f"/proxies/{self.name}/toxics", body)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result

    def toxics(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http("GET", f"/proxies/{self.name}/toxics").json()
        return result


@pytest.fixture
def proxy(proxy_api: str, echo_port: int) -> Iterator[ProxyRef]:
    """A fresh proxy in front of the echo service; deleted afterwards."""
    name = f"echo{next(_names)}"
    with httpx.Client(base_url=proxy_api, timeout=10) as client:
        resp = client.post("/proxies", json={"name": name, "upstream": f"127.0.0.1:{echo_port}"})
        assert resp.status_code == 201, resp.text
        port = int(resp.json()["listen"].rsplit(":", 1)[1])
        yield ProxyRef(api=proxy_api, name=name, port=port)
        client.delete(f"/proxies/{name}")


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF."""
    buf = bytearray()
    while chunk := sock.recv(65536):
        buf += chunk
    return bytes(buf)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    t0 = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - t0


def median_rtt(port: int, n: int = 10, sock: socket.socket | None = None) -> float:
    if sock is not None:
        return statistics.median(round_trip(sock) for _ in range(n))
    with connect(port) as own:
        return statistics.median(round_trip(own) for _ in range(n))
