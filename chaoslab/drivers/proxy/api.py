"""The control API: Toxiproxy's HTTP API, so Toxiproxy clients drive this server unchanged.

HTTP parsing is the stdlib's (``http.server``), run in one thread beside the proxy's
event loop; each request is handed to the loop with ``run_coroutine_threadsafe``, so
all proxy state is touched by the loop thread only. The API is low-traffic (a few calls
per fault), so a thread costs nothing on the data path.

Routes and answers follow Toxiproxy 2.x: JSON bodies; errors as
``{"error": message, "status": code}``; 201 for created proxies and /populate, 204 for
deletes and /reset; ``POST`` and ``PATCH`` both update. Requests whose User-Agent starts
with ``Mozilla/`` are refused (403) like Toxiproxy does, so a web page cannot drive the
local API through the user's browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from chaoslab.drivers.proxy.server import ProxyServer
from chaoslab.drivers.proxy.toxics import ApiError

log = logging.getLogger(__name__)

VERSION = "chaoslab-proxy 0.1.0 (toxiproxy-api 2)"
CALL_TIMEOUT_S = 25.0  # Toxiproxy's own handler timeout

Handler = Callable[[list[str], Any], Awaitable[tuple[int, Any]]]


class ApiServer:
    """The HTTP API for ``proxies``, served from a background thread."""

    def __init__(self, proxies: ProxyServer, host: str, port: int) -> None:
        self.proxies = proxies
        self.loop = proxies.loop
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
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
            case "GET", ["version"]:
                return 200, {"version": VERSION}
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
        raise ApiError(404, f"no route for {method} /{'/'.join(parts)}")

    def handle(self, method: str, path: str, raw: bytes, agent: str) -> tuple[int, Any]:
        """Called on an HTTP thread: parse, run on the loop, return (status, json)."""
        if agent.startswith("Mozilla/"):
            return 403, {"error": "User agent not allowed", "status": 403}
        parts = [unquote(x) for x in urlsplit(path).path.split("/") if x]
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            return 400, {"error": f"bad request body: {exc}", "status": 400}
        future = asyncio.run_coroutine_threadsafe(self.dispatch(method, parts, body), self.loop)
        try:
            return future.result(timeout=CALL_TIMEOUT_S)
        except ApiError as exc:
            return exc.status, {"error": exc.message, "status": exc.status}
        except Exception as exc:  # an unexpected bug must answer 500, not hang the client
            log.exception("API %s %s failed", method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}", "status": 500}


def _make_handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
        server_version = "chaoslab-proxy"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            status, payload = api.handle(self.command, self.path, raw, self.headers.get("User-Agent", ""))
            data = b"" if status == 204 else json.dumps(payload).encode() + b"\n"
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return _Handler
