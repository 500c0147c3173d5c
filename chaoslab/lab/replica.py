"""One replica of the lab's service: ``python -m chaoslab.lab.replica --name N --port P``.

Endpoints:

- ``GET /``            fast: a few bytes, no work
- ``GET /work?ms=N``   CPU-bound: spins the (single) event loop for N ms (max 10,000), so
                       concurrent requests queue behind it like on a saturated core
- ``GET /health``      200 ``ok`` while the process serves
- ``GET /metrics``     Prometheus text exposition: ``lab_requests_total{path,code}`` and
                       the ``lab_request_duration_seconds`` histogram

Every response carries ``X-Replica: <name>`` so tests can see which replica answered.

Served by a raw asyncio protocol with keep-alive (see ``httpcore``). The exposition text
is written by hand rather than with prometheus_client: the lab stays dependency-free, the
metric set is two families, and prometheus_client's locked ``observe`` would sit on a hot
path that handles thousands of requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import signal
import time
from urllib.parse import parse_qs, urlsplit

from chaoslab.httpcore import ProtocolError, parse_request, response
from chaoslab.lab.listen import server_address

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_WORK_MS = 10_000
PATHS = (
    "/",
    "/work",
    "/health",
    "/metrics",
    "/checkout",
    "/catalogue",
)  # the last two: routes for per-route examples


class Metrics:
    """Counters for one replica. Only the event loop thread touches them."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, path: str, code: int, seconds: float) -> None:
        key = (path, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def exposition(self, name: str) -> bytes:
        out = [
            "# HELP lab_requests_total Requests served, by path and status code.",
            "# TYPE lab_requests_total counter",
        ]
        for (path, code), n in sorted(self.requests.items()):
            out.append(f'lab_requests_total{{replica="{name}",path="{path}",code="{code}"}} {n}')
        out += [
            "# HELP lab_request_duration_seconds Time to serve a request.",
            "# TYPE lab_request_duration_seconds histogram",
        ]
        cumulative = 0
        for le, n in zip((*map(str, BUCKETS), "+Inf"), self.buckets, strict=True):
            cumulative += n
            out.append(f'lab_request_duration_seconds_bucket{{replica="{name}",le="{le}"}} {cumulative}')
        out.append(f'lab_request_duration_seconds_sum{{replica="{name}"}} {self.sum}')
        out.append(f'lab_request_duration_seconds_count{{replica="{name}"}} {self.count}')
        return ("\n".join(out) + "\n").encode()


class ReplicaProtocol(asyncio.Protocol):
    def __init__(self, name: str, metrics: Metrics) -> None:
        self.name = name
        self.metrics = metrics
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.extra = f"X-Replica: {name}\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        transport = self.transport
        assert transport is not None
        while self.buf:
            try:
                req, used = parse_request(self.buf)
            except ProtocolError as exc:
                transport.write(response(400, str(exc).encode(), keep_alive=False))
                transport.close()
                return
            if req is None:
                return
            del self.buf[:used]
            start = time.perf_counter()
            path, code, body, ctype = self.handle(req.method, req.target)
            keep = req.keep_alive
            msg = response(code, body, content_type=ctype, extra=self.extra, keep_alive=keep)
            if req.method == "HEAD":
                msg = msg[: len(msg) - len(body)]
            transport.write(msg)
            self.metrics.observe(path, code, time.perf_counter() - start)
            if not keep:
                transport.close()
                return

    def handle(self, method: str, target: str) -> tuple[str, int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "other", 405, b"method not allowed\n", text
        if target == "/":
            return "/", 200, b"ok\n", text
        if target == "/health":
            return "/health", 200, b"ok\n", text
        if target == "/metrics":
            return "/metrics", 200, self.metrics.exposition(self.name), "text/plain; version=0.0.4"
        split = urlsplit(target)
        if split.path == "/work":
            try:
                ms = float(parse_qs(split.query).get("ms", ["10"])[0])
            except ValueError:
                return "/work", 400, b"ms must be a number\n", text
            ms = min(max(ms, 0.0), MAX_WORK_MS)
            spin(ms / 1000.0)
            return "/work", 200, f"worked {ms:g}ms\n".encode(), text
        if split.path in PATHS:
            return split.path, 200, b"ok\n", text
        return "other", 404, b"not found\n", text


def spin(seconds: float) -> None:
    """Burn CPU for ``seconds`` (a real CPU cost, not a sleep)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(200):
            x ^= i * i


async def serve(name: str, host: str, port: int, listen_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    server = await loop.create_server(
        lambda: ReplicaProtocol(name, metrics), **server_address(host, port, listen_fd)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaoslab.lab.replica")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, help="serve on this inherited listening socket")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.name, args.host, args.port, args.listen_fd))


if __name__ == "__main__":
    main()
