"""The control API: Toxiproxy's HTTP API, so Toxiproxy clients drive this server unchanged.

HTTP parsing is the stdlib's (``http.server``), run in one thread beside the proxy's
event loop; each request is handed to the loop with ``run_coroutine_threadsafe``, so
all proxy state is touched by the loop thread only. The API is low-traffic (a few calls
per fault), so a thread costs nothing on the data path.

Routes and answers follow Toxiproxy 2.x (its ``api.go``): JSON bodies; errors as
``{"error": message, "status": code}``; 201 for created proxies and /populate, 204 for
deletes and /reset; ``POST`` and ``PATCH`` both update; a path no route has answers 404
``404 page not found`` (text), a known path with another method (``PUT``) 405 with an
empty body, as Toxiproxy's router does. ``GET /version`` answers ``{"version": …}`` with
the Toxiproxy release whose API this server implements; ``/metrics`` is the Prometheus
text format. Requests to a route whose User-Agent starts with ``Mozilla/`` are refused
(403) like Toxiproxy does, so a web page cannot drive the local API through the user's
browser.

chaoslab's own routes, beside Toxiproxy's (a Toxiproxy answers them 404
``404 page not found``, which tells a client it has no heartbeat leases):
``POST /proxies/{proxy}/toxics/{toxic}/renew`` and ``POST /proxies/{proxy}/renew`` renew
the heartbeat lease of a toxic or of a proxy's down (``heartbeat_s``, see ``leases.py``).
200 answers the lease (``renewed_at``, ``heartbeat_s``, ``lease_s``,
``lease_expires_at``); 410 Gone says its lease already ended it, with the reason in
``error``; 404 says it is not there (deleted, reset, re-enabled, never made); 409 says it
is there without a heartbeat lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from chaoslab.drivers.proxy.errors import ApiError
from chaoslab.drivers.proxy.server import ProxyServer

log = logging.getLogger(__name__)

# The Toxiproxy release whose HTTP API this server implements, as ``/version`` reports it.
VERSION = "2.12.0"
CALL_TIMEOUT_S = 25.0  # Toxiproxy's own handler timeout
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Toxiproxy's routes: path pattern → methods. ``/metrics`` takes any method, as there.
_SEGMENT = "[^/]+"
ROUTES: tuple[tuple[re.Pattern[str], frozenset[str] | None], ...] = tuple(
    (re.compile(pattern.replace("{}", _SEGMENT)), None if methods is None else frozenset(methods))
    for pattern, methods in (
        ("/reset", ("POST",)),
        ("/proxies", ("GET", "POST")),
        ("/populate", ("POST",)),
        ("/proxies/{}", ("GET", "POST", "PATCH", "DELETE")),
        ("/proxies/{}/toxics", ("GET", "POST")),
        ("/proxies/{}/toxics/{}", ("GET", "POST", "PATCH", "DELETE")),
        ("/proxies/{}/renew", ("POST",)),  # chaoslab's heartbeat leases
        ("/proxies/{}/toxics/{}/renew", ("POST",)),
        ("/version", ("GET",)),
        ("/metrics", None),
    )
)


class Answer:
    """One HTTP answer: status, content type (None for no body) and body bytes."""

    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, content_type: str | None = None, body: bytes = b"") -> None:
        self.status, self.content_type, self.body = status, content_type, body

    @classmethod
    def json(cls, status: int, payload: Any) -> Answer:
        if status == 204:
            return cls(204)
        return cls(status, "application/json", json.dumps(payload).encode() + b"\n")


def _route_allows(path: str, method: str) -> bool | None:
    """None: no route has this path; else whether one of them takes ``method``."""
    allowed: bool | None = None
    for pattern, methods in ROUTES:
        if pattern.fullmatch(path):
            allowed = bool(allowed) or methods is None or method in methods
    return allowed


class ApiServer:
    """The HTTP API for ``proxies``, served from a background thread."""

    def __init__(self, proxies: ProxyServer, host: str, port: int) -> None:
        self.proxies = proxies
        self.loop = proxies.loop
        server_class = _IPv6HTTPServer if ":" in host else ThreadingHTTPServer
        self.httpd = server_class((host, port), _make_handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="chaoslab-proxy-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; call from a thread other than the loop's if requests may be live."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- routing (runs on the loop) -----------------------------------------------------
    async def dispatch(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        p = self.proxies
        match method, parts:
            case "POST", ["reset"]:
                await p.reset()
                return 204, None
            case "GET", ["proxies"]:
                return 200, await p.list_proxies()
            case "POST", ["proxies"]:
                return 201, await p.create_proxy(body)
            case "POST", ["populate"]:
                return 201, await p.populate(body)
            case "GET", ["proxies", name]:
                return 200, await p.get_proxy(name)
            case (("POST" | "PATCH"), ["proxies", name]):
                return 200, await p.update_proxy(name, body)
            case "DELETE", ["proxies", name]:
                await p.delete_proxy(name)
                return 204, None
            case "GET", ["proxies", name, "toxics"]:
                return 200, await p.list_toxics(name)
            case "POST", ["proxies", name, "toxics"]:
                return 200, await p.create_toxic(name, body)
            case "GET", ["proxies", name, "toxics", toxic]:
                return 200, await p.get_toxic(name, toxic)
            case (("POST" | "PATCH"), ["proxies", name, "toxics", toxic]):
                return 200, await p.update_toxic(name, toxic, body)
            case "DELETE", ["proxies", name, "toxics", toxic]:
                await p.delete_toxic(name, toxic)
                return 204, None
            case "POST", ["proxies", name, "renew"]:
                return 200, await p.renew_down(name)
            case "POST", ["proxies", name, "toxics", toxic, "renew"]:
                return 200, await p.renew_toxic(name, toxic)
        raise ApiError(404, f"no route for {method} /{'/'.join(parts)}")

    def handle(self, method: str, path: str, raw: bytes, agent: str) -> Answer:
        """Called on an HTTP thread: route, parse, run on the loop, answer."""
        path = urlsplit(path).path
        allowed = _route_allows(path, method)
        if allowed is None:
            return Answer(404, "text/plain; charset=utf-8", b"404 page not found\n")
        if not allowed:
            return Answer(405)
        if agent.startswith("Mozilla/"):
            return Answer(403, "text/plain; charset=utf-8", b"User agent not allowed\n")
        if path == "/version":
            return Answer(
                200, "application/json;charset=utf-8", json.dumps({"version": VERSION}).encode() + b"\n"
            )
        if path == "/metrics":
            return self._call(
                lambda: self.proxies.metrics(), lambda text: Answer(200, METRICS_TYPE, text.encode())
            )
        parts = [unquote(x) for x in path.split("/")[1:]]
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            return Answer.json(400, {"error": f"bad request body: {exc}", "status": 400})
        return self._call(lambda: self.dispatch(method, parts, body), lambda result: Answer.json(*result))

    def _call(self, make: Callable[[], Awaitable[Any]], answer: Callable[[Any], Answer]) -> Answer:
        async def run() -> Any:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return answer(future.result(timeout=CALL_TIMEOUT_S))
        except ApiError as exc:
            return Answer.json(exc.status, {"error": exc.message, "status": exc.status})
        except Exception as exc:  # an unexpected bug must answer 500, not hang the client
            log.exception("API call failed")
            return Answer.json(500, {"error": f"{type(exc).__name__}: {exc}", "status": 500})


class _IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _make_handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
        server_version = "chaoslab-proxy"  # the Server header names the implementation

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            answer = api.handle(self.command, self.path, raw, self.headers.get("User-Agent", ""))
            self.send_response(answer.status)
            if answer.content_type is not None:
                self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":  # HEAD: the headers of the answer, no body
                self.wfile.write(answer.body)

        # Every method reaches the router, which answers 404/405 as Toxiproxy's does.
        do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return _Handler
