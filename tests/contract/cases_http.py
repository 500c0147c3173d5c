"""Contract cases of the ``http`` driver: each request-level fault on a proxy in HTTP mode.

The target is a proxy server process (``python -m chaoslab.drivers.proxy``) with one
HTTP-mode proxy in front of a stdlib HTTP service. "Visible" is what an HTTP client of
that proxy sees (a status, a delay, a header, a short body), never the proxy's API.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target
from tests.contract.cases_proxy import LEASE_S, PROXY_NAME, ProxyTarget
from tests.integration.proxykit import proxy_server

BODY = b"catalogue and checkout\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes; no 40 ms Nagle stall

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("X-Service", "up")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _http_service() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def _proxied_http(tmp_path: Path) -> Iterator[Target]:
    with _http_service() as upstream, proxy_server() as (api, _):
        with httpx.Client(base_url=f"http://{api}", timeout=10) as client:
            resp = client.post(
                "/proxies", json={"name": PROXY_NAME, "upstream": f"127.0.0.1:{upstream}", "mode": "http"}
            )
        if resp.status_code != 201:
            raise RuntimeError(f"creating the proxy failed: HTTP {resp.status_code} {resp.text}")
        port = int(resp.json()["listen"].rsplit(":", 1)[1])
        yield Target(selector=f"proxy:{PROXY_NAME}@{api}", handle=ProxyTarget(port=port))


def _get(target: Target) -> tuple[httpx.Response | None, float]:
    t0 = time.perf_counter()
    try:
        resp = httpx.get(f"http://127.0.0.1:{target.handle.port}/checkout", timeout=3.0)
    except httpx.HTTPError:
        return None, time.perf_counter() - t0
    return resp, time.perf_counter() - t0


def _aborted(target: Target, record: RevertRecord) -> bool:
    resp, _ = _get(target)
    return resp is not None and resp.status_code == 503


def _delayed(target: Target, record: RevertRecord) -> bool:
    # Every one of three requests slowed: a loaded machine rarely stalls all three.
    for _ in range(3):
        resp, elapsed = _get(target)
        if resp is None or resp.status_code != 200 or elapsed < 0.15:
            return False
    return True


def _rewritten(target: Target, record: RevertRecord) -> bool:
    resp, _ = _get(target)
    return resp is not None and resp.headers.get("x-service") == "down"


def _truncated(target: Target, record: RevertRecord) -> bool:
    resp, _ = _get(target)
    return resp is None  # the body ends early: httpx raises RemoteProtocolError


def _case(op: str, args: dict[str, object], observe: Callable[[Target, RevertRecord], bool]) -> FaultCase:
    return FaultCase(
        id=f"http.{op}",
        driver="http",
        op=op,
        args=args,
        make_target=_proxied_http,
        observe=observe,
        lease_s=LEASE_S,
    )


CASES = [
    _case("abort", {"status": 503, "path": "/checkout"}, _aborted),
    _case("delay", {"delay": "200ms"}, _delayed),
    _case("rewrite", {"set_headers": {"X-Service": "down"}}, _rewritten),
    _case("truncate", {"bytes": 3}, _truncated),
]
