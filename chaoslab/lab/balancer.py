"""The lab's HTTP load balancer: ``python -m chaoslab.lab.balancer --port P --upstream NAME=HOST:PORT ...``.

Round-robin over healthy upstreams, keep-alive on both sides, and retries: a request that
meets a connect error, a reset, a malformed answer or a 5xx from one replica is sent to
the next one, so losing one replica costs clients nothing while another is healthy.
Non-idempotent methods are retried only when nothing was sent (connect error).

Timeouts: each attempt of an idempotent request has a per-try timeout (``--try-timeout``,
default 1 s, like Envoy's ``per_try_timeout``): a replica that stops answering — a
partition, a SIGSTOP — costs the client that much latency, not an error, and is marked
down at once (outlier detection). Connects and health checks use the same short timeout.
Non-idempotent requests get one attempt under ``--timeout``; the client gets 504.

Health: every ``--health-interval`` seconds each upstream gets ``GET /health``; a connect
error on live traffic marks it down at once (passive check), a 200 brings it back.

``GET /__lb/status`` answers JSON with each upstream's health, its failed request attempts
(``failed``) and failed health checks (``checks_failed``), and the retry counters (the
lab's tests read it); every other path is forwarded.

Written on the raw asyncio protocols of ``httpcore`` for the reasons given there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import deque
from dataclasses import dataclass, field

from chaoslab.httpcore import (
    ClientConnection,
    ErrorKind,
    ProtocolError,
    Request,
    build_request,
    parse_request,
    response,
)
from chaoslab.lab.listen import server_address

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_PIPELINE = 64


class UpstreamFailed(Exception):
    def __init__(self, kind: ErrorKind) -> None:
        self.kind = kind
        super().__init__(kind.name)


@dataclass(kw_only=True)
class Upstream:
    """Mutable health and pool of one upstream; touched only by the event loop thread."""

    name: str
    host: str
    port: int
    healthy: bool = True
    idle: list[ClientConnection] = field(default_factory=list)
    sent: int = 0
    failed: int = 0  # client-request attempts on this upstream that failed
    checks_failed: int = 0  # health checks that failed: whichever notices a dead upstream first


@dataclass(kw_only=True)
class Counters:
    requests: int = 0
    retries: int = 0
    failed: int = 0  # requests the balancer could not serve from any upstream


class Balancer:
    def __init__(
        self,
        upstreams: list[Upstream],
        *,
        timeout_s: float,
        health_interval_s: float,
        try_timeout_s: float = 1.0,
    ):
        self.upstreams = upstreams
        self.timeout_s = timeout_s
        self.try_timeout_s = min(try_timeout_s, timeout_s)
        self.health_interval_s = health_interval_s
        self.counters = Counters()
        self._rr = 0

    # -- one attempt on one upstream ----------------------------------------------------

    async def fetch(
        self, up: Upstream, raw: bytes, *, head_only: bool, timeout_s: float | None = None
    ) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        conn = None
        while up.idle:
            candidate = up.idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            try:
                _, fresh = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: ClientConnection(_on_response, _on_error, keep_body=True),
                        up.host,
                        up.port,
                    ),
                    self.try_timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                raise UpstreamFailed(ErrorKind.CONNECT) from exc
            conn = fresh
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        conn.tag = fut
        conn.send(raw, head_only=head_only)
        timer = loop.call_later(timeout_s, _on_timeout, conn)
        try:
            status, message = await fut
        finally:
            timer.cancel()
        if not conn.closed:
            up.idle.append(conn)
        return status, message

    # -- a client request, with retries -------------------------------------------------

    async def forward(self, req: Request) -> bytes:
        self.counters.requests += 1
        n = len(self.upstreams)
        start = self._rr
        self._rr = (self._rr + 1) % max(n, 1)
        order = [self.upstreams[(start + i) % n] for i in range(n)]
        # Healthy first; unhealthy ones last, since the health view may be stale.
        order.sort(key=lambda u: not u.healthy)
        last = response(503, b"no upstream available\n", keep_alive=req.keep_alive)
        for attempt, up in enumerate(order):
            if attempt:
                self.counters.retries += 1
            up.sent += 1
            idempotent = req.method in IDEMPOTENT
            try:
                status, message = await self.fetch(
                    up,
                    req.raw,
                    head_only=req.method == "HEAD",
                    timeout_s=self.try_timeout_s if idempotent else self.timeout_s,
                )
            except UpstreamFailed as exc:
                up.failed += 1
                if exc.kind is ErrorKind.CONNECT:
                    up.healthy = False
                    continue
                if exc.kind is ErrorKind.TIMEOUT and idempotent:
                    up.healthy = False  # outlier: stop sending it traffic until /health says so
                    last = response(504, b"upstream timed out\n", keep_alive=req.keep_alive)
                    continue
                if exc.kind is ErrorKind.TIMEOUT:
                    self.counters.failed += 1
                    return response(504, b"upstream timed out\n", keep_alive=req.keep_alive)
                if req.method not in IDEMPOTENT:
                    break
                last = response(
                    502, f"upstream {exc.kind.name.lower()}\n".encode(), keep_alive=req.keep_alive
                )
                continue
            if status >= 500:
                up.failed += 1
                last = message
                continue
            return message
        self.counters.failed += 1
        return last

    # -- health ---------------------------------------------------------------------------

    async def health_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(up) for up in self.upstreams))
            await asyncio.sleep(self.health_interval_s)

    async def check(self, up: Upstream) -> None:
        raw = build_request("GET", f"{up.host}:{up.port}", "/health")
        try:
            status, _ = await self.fetch(up, raw, head_only=False, timeout_s=self.try_timeout_s)
        except UpstreamFailed:
            up.healthy = False
            up.checks_failed += 1
            return
        up.healthy = status == 200
        up.checks_failed += not up.healthy

    def status_json(self) -> bytes:
        return json.dumps(
            {
                "upstreams": {
                    u.name: {
                        "address": f"{u.host}:{u.port}",
                        "healthy": u.healthy,
                        "sent": u.sent,
                        "failed": u.failed,
                        "checks_failed": u.checks_failed,
                    }
                    for u in self.upstreams
                },
                "requests": self.counters.requests,
                "retries": self.counters.retries,
                "failed": self.counters.failed,
            }
        ).encode()


def _on_response(conn: ClientConnection, status: int, message: bytes | None) -> None:
    fut = conn.tag
    assert isinstance(fut, asyncio.Future)
    if not fut.done():
        fut.set_result((status, message or b""))


def _on_error(conn: ClientConnection, kind: ErrorKind) -> None:
    fut = conn.tag
    assert isinstance(fut, asyncio.Future)
    if not fut.done():
        fut.set_exception(UpstreamFailed(kind))


def _on_timeout(conn: ClientConnection) -> None:
    conn.abort()
    _on_error(conn, ErrorKind.TIMEOUT)


class FrontProtocol(asyncio.Protocol):
    """A client connection: requests are answered in order, one at a time."""

    def __init__(self, lb: Balancer, tasks: set[asyncio.Task[None]]) -> None:
        self.lb = lb
        self.tasks = tasks
        self.buf = bytearray()
        self.queue: deque[Request] = deque()
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while self.buf:
            try:
                req, used = parse_request(self.buf)
            except ProtocolError as exc:
                self.transport.write(response(400, str(exc).encode(), keep_alive=False))
                self.transport.close()
                return
            if req is None:
                break
            del self.buf[:used]
            self.queue.append(req)
        if len(self.queue) > MAX_PIPELINE:
            self.transport.close()
            return
        if not self.busy and self.queue:
            self._next()

    def _next(self) -> None:
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._serve(self.queue.popleft()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, req: Request) -> None:
        transport = self.transport
        assert transport is not None
        if req.target == "/__lb/status":
            message = response(
                200, self.lb.status_json(), content_type="application/json", keep_alive=req.keep_alive
            )
        else:
            message = await self.lb.forward(req)
        if transport.is_closing():
            return
        transport.write(message)
        if not req.keep_alive:
            transport.close()
            return
        self.busy = False
        if self.queue:
            self._next()


def parse_upstream(text: str) -> Upstream:
    name, _, address = text.rpartition("=")
    host, _, port = address.rpartition(":")
    if not name or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return Upstream(name=name, host=host, port=int(port))


async def serve(
    host: str,
    port: int,
    upstreams: list[Upstream],
    timeout_s: float,
    health_interval_s: float,
    try_timeout_s: float = 1.0,
    listen_fd: int | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    lb = Balancer(
        upstreams, timeout_s=timeout_s, health_interval_s=health_interval_s, try_timeout_s=try_timeout_s
    )
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(
        lambda: FrontProtocol(lb, tasks), **server_address(host, port, listen_fd)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = loop.create_task(lb.health_loop())
    async with server:
        await stop.wait()
    health.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaoslab.lab.balancer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=parse_upstream, action="append", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--health-interval", type=float, default=0.5)
    parser.add_argument("--try-timeout", type=float, default=1.0)
    parser.add_argument("--listen-fd", type=int, help="serve on this inherited listening socket")
    args = parser.parse_args(argv)
    asyncio.run(
        serve(
            args.host,
            args.port,
            args.upstream,
            args.timeout,
            args.health_interval,
            args.try_timeout,
            args.listen_fd,
        )
    )


if __name__ == "__main__":
    main()
