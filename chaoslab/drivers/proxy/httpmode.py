"""HTTP mode of the fault proxy: HTTP/1.1 (keep-alive, pipelining, chunked bodies) parsed
per request, so faults can break one request, one route, the first N calls.

Shape of one connection in HTTP mode::

    client ─► request parser ─► HTTP toxics (abort, delay) ─► upstream Pipe (TCP toxics) ─► service
    client ◄─ HTTP toxics (delay, rewrite, truncate) ◄─ response parser ◄─ downstream Pipe ◄─ service

The TCP engine of ``connection.py`` still carries the bytes between the HTTP layer and the
service, so TCP toxics (latency, reset_peer, ``down``…) keep working on an HTTP-mode
proxy; the HTTP layer sits on the client's side of them. Each request is matched once,
at the end of its headers, against the proxy's HTTP toxics (``httpfaults.py``); the plan
says whether it is answered locally (abort), held (delay), or has its response rewritten
or truncated. Answers go back to the client in request order, local ones included, so
pipelining clients stay in step. Requests and responses are re-serialised from the
parsed head (bodies pass through untouched; chunked bodies are re-chunked, trailers
dropped); an ``Upgrade``/``CONNECT`` exchange turns the connection into a tunnel.

Parser: ``httptools`` (the MagicStack binding of llhttp, Node.js's HTTP parser, which
uvicorn uses by default). It is maintained, fuzzed upstream, C-speed (a few µs per
message), and callback-driven, so it fits the proxy's protocol-callback data path
without a task per request. ``h11`` was the alternative: pure Python and very correct,
but its per-message cost (tens of µs each way) alone would spend most of the 150 µs
budget of an added request. What httptools cannot do: tell the parser a response answers
a HEAD request (it would wait for the announced body), so a HEAD response's head is cut
at its blank line here and fed to the parser with a zero length. To make the cut
certain, a pipelined HEAD request is sent to the service only once every answer before
it has come back, and the requests after it wait for its answer (a service that sends
bytes nobody asked for gets the connection closed, logged).

HTTP/2 and gRPC are not offered: httptools parses HTTP/1.x only, and faults on HTTP/2
streams need a frame-level implementation (h2 is sans-IO but would put an HPACK codec
and a stream state machine per connection on this path). A prior-knowledge HTTP/2
client talking to an HTTP-mode proxy gets its connection closed (the preface does not
parse as HTTP/1.1); use a TCP-mode proxy for HTTP/2 traffic.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from chaoslab.drivers.proxy.connection import (
    QUEUE_HIGH,
    QUEUE_LOW,
    TIMER_SLACK_S,
    Connection,
    Pipe,
    ProxyView,
    Side,
)
from chaoslab.drivers.proxy.httpfaults import Plan, Rule, plan
from chaoslab.drivers.proxy.toxics import Chunk

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024  # a response head longer than this while cutting a HEAD answer is refused
_CLOSE = None  # queue item: close the connection once everything before it is written
_HEAD = b"HEAD"
_BODILESS = re.compile(rb"(?im)^(content-length|transfer-encoding)([ \t]*):")
_ORIG = b"x-chaoslab-orig-"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpProxyView(ProxyView, Protocol):
    """What an HTTP-mode connection reads and updates of its proxy (``server.Proxy``)."""

    http_requests: int

    def http_rules(self) -> list[Rule]:
        """The proxy's http_* toxics, compiled, in the order they were added."""
        ...


class _PipelinedHead(Exception):
    """A HEAD response arrived in the same read as the one before it; it cannot be cut."""


class _Timed:
    """An ordered queue of writes, each released no earlier than its time (loop clock).

    Items go straight to ``sink`` while nothing is waiting; a held item holds everything
    behind it, so order is kept. An item may carry a tag that ``gate`` must let through
    besides its time (a HEAD request waits for the answers before it); whoever opens the
    gate calls ``kick``. Bytes held are bounded: past ``QUEUE_HIGH`` the source is paused
    until they drain below ``QUEUE_LOW``.
    """

    __slots__ = ("_paused", "_timer", "gate", "held", "loop", "pause", "queue", "resume", "sink")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[bytes | None], None],
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.sink = sink
        self.pause, self.resume = pause, resume
        self.queue: collections.deque[tuple[float, bytes | None, object]] = collections.deque()
        self.gate: Callable[[object], bool] = lambda _tag: True
        self.held = 0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False

    def put(self, at: float, item: bytes | None, tag: object = None) -> None:
        if not self.queue and (at == 0.0 or at - TIMER_SLACK_S <= self.loop.time()) and self.gate(tag):
            self.sink(item)
            return
        self.queue.append((at, item, tag))
        if item is not None:
            self.held += len(item)
            if self.held > QUEUE_HIGH and not self._paused:
                self._paused = True
                self.pause()
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self.queue:
            self._timer = self.loop.call_at(self.queue[0][0] - TIMER_SLACK_S, self._fire)

    def kick(self) -> None:
        """The gate may have opened: release what is due."""
        if self._timer is None and self.queue:
            self._fire()

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        queue = self.queue
        while queue and queue[0][0] - TIMER_SLACK_S <= now:
            if not self.gate(queue[0][2]):
                return  # closed: ``kick`` comes when it opens
            item = queue.popleft()[1]
            if item is not None:
                self.held -= len(item)
            self.sink(item)
        if self._paused and self.held < QUEUE_LOW:
            self._paused = False
            self.resume()
        self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queue.clear()


class _Exchange:
    """One request and the answer the client is owed for it."""

    __slots__ = ("chunked", "keep_alive", "left", "local", "method", "plan", "release")

    def __init__(self, method: bytes, plan: Plan | None, keep_alive: bool) -> None:
        self.method = method
        self.plan = plan
        self.keep_alive = keep_alive
        self.local: bytes | None = None  # a locally made answer (abort)
        self.release = 0.0  # loop time before which no byte of the answer is sent
        self.left: int | None = None  # body bytes still let through (truncate)
        self.chunked = False


class _BodyOf:
    """Tags the body bytes of a HEAD request: they follow their head past the gate that
    holds every other request while that HEAD's answer is owed (the service reads the
    body before it answers, so holding it would deadlock the connection)."""

    __slots__ = ("ex",)

    def __init__(self, ex: _Exchange) -> None:
        self.ex = ex


def _serialise_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers)


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n.lower() == b"transfer-encoding" and b"chunked" in v.lower() for n, v in headers)


def _path(url: bytes) -> str:
    if not url.startswith(b"/"):  # absolute form (http://host/path) or '*'
        scheme_end = url.find(b"://")
        if scheme_end >= 0:
            slash = url.find(b"/", scheme_end + 3)
            url = url[slash:] if slash >= 0 else b"/"
    query = url.find(b"?")
    return (url[:query] if query >= 0 else url).decode("latin-1")


class _Requests:
    """Callbacks of the request parser (client → service)."""

    def __init__(self, conn: HttpConnection) -> None:
        self.conn = conn
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.ex: _Exchange | None = None
        self.drop = False
        self.at = 0.0

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        conn = self.conn
        parser = conn.req_parser
        method = parser.get_method()
        proxy = conn.proxy
        proxy.http_requests += 1
        rules = proxy.http_rules()
        p = plan(rules, method, _path(self.url), self.headers) if rules else None
        ex = _Exchange(method, p, parser.should_keep_alive())
        ex.chunked = _is_chunked(self.headers)
        self.ex = ex
        now = conn.loop.time()
        conn.pending.append(ex)
        if p is not None and p.abort is not None:
            self.drop = True
            local = p.abort.abort
            if method == _HEAD:  # the head of the answer a GET would get, no body
                local = local[: local.index(b"\r\n\r\n") + 4]
            if not ex.keep_alive:
                local = local.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            ex.local = local
            ex.release = now + p.request_delay + p.response_delay
            conn.advance()
            return
        self.drop = False
        self.at = now + p.request_delay if p is not None and p.request_delay else 0.0
        head = b"%s %s HTTP/%s\r\n" % (method, self.url, parser.get_http_version().encode())
        # A HEAD answer can only be cut from the service's stream when it comes alone:
        # the request waits for the answers before it, and holds the requests after it.
        conn.to_server(
            self.at, head + _serialise_headers(self.headers) + b"\r\n", ex if method == _HEAD else None
        )

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if self.drop or ex is None:
            return
        tag = _BodyOf(ex) if ex.method == _HEAD else None
        if ex.chunked:
            self.conn.to_server(self.at, b"%x\r\n%s\r\n" % (len(body), body), tag)
        else:
            self.conn.to_server(self.at, bytes(body), tag)

    def on_message_complete(self) -> None:
        ex = self.ex
        if ex is not None and ex.chunked and not self.drop:
            self.conn.to_server(self.at, b"0\r\n\r\n", _BodyOf(ex) if ex.method == _HEAD else None)
        self.ex = None


class _Responses:
    """Callbacks of the response parser (service → client)."""

    def __init__(self, conn: HttpConnection) -> None:
        self.conn = conn
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.ex: _Exchange | None = None
        self.cutting = False  # feeding a HEAD answer's head with its length zeroed
        self.idle = True

    def on_message_begin(self) -> None:
        self.idle = False
        self.reason = b""
        self.headers = []
        ex = self.conn.next_upstream()
        if ex is not None and ex.method == _HEAD and not self.cutting:
            raise _PipelinedHead
        self.ex = ex

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.cutting:
            lower = name.lower()
            if lower == b"content-length":
                return  # the zero length put in for the parser
            if lower.startswith(_ORIG):
                name = name[len(_ORIG) :]
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        conn = self.conn
        ex = self.ex
        parser = conn.resp_parser
        code = parser.get_status_code()
        headers = self.headers
        p = ex.plan if ex is not None else None
        if ex is not None and code >= 200:
            if p is not None:
                for rule in p.rewrites:
                    headers = [(n, v) for n, v in headers if n.lower() not in rule.drop]
                    headers += rule.set_headers
                if p.response_delay:
                    ex.release = conn.loop.time() + p.response_delay
                ex.left = p.truncate
            ex.chunked = _is_chunked(headers)
        head = b"HTTP/%s %d %s\r\n" % (parser.get_http_version().encode(), code, self.reason)
        conn.to_client(ex.release if ex is not None else 0.0, head + _serialise_headers(headers) + b"\r\n")

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None:
            return
        data = bytes(body)
        if ex.left is not None:
            if ex.left <= 0:
                return
            data = data[: ex.left]
            ex.left -= len(data)
        if ex.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.conn.to_client(ex.release, data)
        if ex.left == 0:
            self.conn.to_client(ex.release, _CLOSE)

    def on_message_complete(self) -> None:
        conn = self.conn
        self.idle = True
        ex = self.ex
        self.ex = None
        if ex is None or conn.resp_parser.get_status_code() < 200:
            return  # an interim answer (100 Continue): the final one is still owed
        if ex.plan is not None and ex.plan.truncate is not None:
            conn.to_client(ex.release, _CLOSE)  # cut or not, a truncate fault ends the connection
        elif ex.chunked:
            conn.to_client(ex.release, b"0\r\n\r\n")
        if conn.pending and conn.pending[0] is ex:
            conn.pending.popleft()
        conn.advance()
        if conn.head_sent is ex:
            conn.head_sent = None
        conn.up_q.kick()


class _HttpClientSide(Side):
    """The client's socket in HTTP mode: what it reads goes to the request parser."""

    conn: HttpConnection

    def data_received(self, data: bytes) -> None:
        self.stats.received += len(data)
        self.conn.feed_request(data)

    def eof_received(self) -> bool:
        self.conn.to_server(0.0, None)
        return True


class _HttpDownPipe(Pipe):
    """Service → client in HTTP mode: after the TCP toxics, bytes go to the response parser."""

    conn: HttpConnection

    def refresh_fast(self) -> None:
        idle = not self.chain and not self.queue and self.task is None
        self.src.fast_write = (
            self.conn.feed_response if idle and not self.eof_sent and not self.conn.closed else None
        )

    async def _deliver(self, chunk: Chunk) -> None:
        await self.dst.drain()
        if self.conn.closed or self.eof_sent:
            return
        if chunk[0] is None:
            self.forward_eof()
        else:
            self.src.stats.sent += len(chunk[0])
            self.conn.feed_response(chunk[0])

    def forward_eof(self) -> None:
        self.eof_sent = True
        self.src.fast_write = None
        self.conn.to_client(0.0, _CLOSE)


class HttpConnection(Connection):
    """A proxied connection whose client side speaks HTTP/1.x through the HTTP toxics."""

    proxy: HttpProxyView

    def __init__(self, proxy: HttpProxyView) -> None:
        super().__init__(proxy)
        self.client = _HttpClientSide(self, "client")
        self.client.peer, self.server.peer = self.server, self.client
        self.up = Pipe(self, "upstream", self.client, self.server)
        self.down = _HttpDownPipe(self, "downstream", self.server, self.client)
        self.client.out, self.server.out = self.up, self.down
        self.client.stats, self.server.stats = proxy.stats["upstream"], proxy.stats["downstream"]
        self.pending: collections.deque[_Exchange] = collections.deque()
        self.requests = _Requests(self)
        self.responses = _Responses(self)
        self.req_parser = httptools.HttpRequestParser(self.requests)
        self.resp_parser = httptools.HttpResponseParser(self.responses)
        self.req_tunnel = False
        self.resp_tunnel = False
        self.head_buf: bytes | None = None
        self.up_q = _Timed(
            self.loop, self._write_up, lambda: self.client.pause("http"), lambda: self.client.resume("http")
        )
        self.down_q = _Timed(
            self.loop, self._write_down, lambda: self.server.pause("http"), lambda: self.server.resume("http")
        )
        self.head_sent: _Exchange | None = None  # a HEAD request sent, its answer not yet cut
        self.up_q.gate = self._may_send

    # -- client → service -------------------------------------------------------------
    def feed_request(self, data: bytes) -> None:
        if self.closed:
            return
        if self.req_tunnel:
            self.to_server(0.0, data)
            return
        try:
            self.req_parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.req_tunnel = True
            rest = data[int(exc.args[0]) :]
            if rest:
                self.to_server(0.0, rest)
        except httptools.HttpParserError as exc:
            log.info("proxy %s: bad request from client: %s", self.proxy.name, exc)
            if not self.pending:
                self.to_client(0.0, _BAD_REQUEST)
            self.to_client(0.0, _CLOSE)
            self.client.pause("bad-request")

    def to_server(self, at: float, data: bytes | None, tag: _Exchange | _BodyOf | None = None) -> None:
        self.up_q.put(at, data, tag)

    def _may_send(self, tag: object) -> bool:
        """Nothing passes a HEAD request whose answer is owed but that request's own body;
        a HEAD request passes once it is the first exchange the service owes an answer for."""
        if isinstance(tag, _BodyOf):
            return self.head_sent is None or self.head_sent is tag.ex
        if self.head_sent is not None:
            return False
        if tag is None:
            return True
        if self.next_upstream() is not tag:
            return False
        assert isinstance(tag, _Exchange)
        self.head_sent = tag
        return True

    def _write_up(self, data: bytes | None) -> None:
        if self.closed:
            return
        fast = self.client.fast_write
        if fast is not None and data is not None:
            self.client.stats.sent += len(data)
            fast(data)
        else:
            self.up.push(data)

    # -- service → client -------------------------------------------------------------
    def next_upstream(self) -> _Exchange | None:
        for ex in self.pending:
            if ex.local is None:
                return ex
        return None

    def feed_response(self, data: bytes) -> None:
        for _ in range(1 << 16):  # one pass per HEAD answer cut from this read
            if self.closed or not data:
                return
            if self.resp_tunnel:
                self.to_client(0.0, data)
                return
            ex = self.next_upstream() if self.responses.idle else None
            if self.head_buf is not None or (ex is not None and ex.method == _HEAD):
                data = self._cut_head(data)
                continue
            try:
                self.resp_parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self.resp_tunnel = True
                rest = data[int(exc.args[0]) :]
                if rest:
                    self.to_client(0.0, rest)
            except (httptools.HttpParserError, _PipelinedHead) as exc:
                log.info("proxy %s: cannot follow the service's answer (%s); closing", self.proxy.name, exc)
                self.close()
            return

    def _cut_head(self, data: bytes) -> bytes:
        """Feed the parser one HEAD answer's head (its body length zeroed); return the rest."""
        buf = (self.head_buf or b"") + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                log.info("proxy %s: answer head over %d bytes; closing", self.proxy.name, MAX_HEAD)
                self.close()
                return b""
            self.head_buf = buf
            return b""
        self.head_buf = None
        head, rest = buf[: end + 2], buf[end + 4 :]
        head = _BODILESS.sub(lambda m: _ORIG + m[1] + m[2] + b":", head) + b"Content-Length: 0\r\n\r\n"
        self.responses.cutting = True
        try:
            self.resp_parser.feed_data(head)
        except httptools.HttpParserError as exc:
            log.info("proxy %s: bad answer to HEAD (%s); closing", self.proxy.name, exc)
            self.close()
            return b""
        finally:
            self.responses.cutting = False
        return rest

    def advance(self) -> None:
        """Send the local answers that are now first in line."""
        pending = self.pending
        while pending and pending[0].local is not None:
            ex = pending.popleft()
            self.to_client(ex.release, ex.local)
            if not ex.keep_alive:
                self.to_client(ex.release, _CLOSE)

    def to_client(self, at: float, data: bytes | None) -> None:
        self.down_q.put(at, data)

    def _write_down(self, data: bytes | None) -> None:
        transport = self.client.transport
        if self.closed or transport is None:
            return
        if data is None:
            self.close()
        else:
            transport.write(data)

    def close(self, *, reset: bool = False) -> None:
        if not self.closed:
            self.up_q.cancel()
            self.down_q.cancel()
        super().close(reset=reset)


def connection_factory(proxy: HttpProxyView) -> Callable[[], Any]:
    """The protocol factory ``loop.create_server`` takes for an HTTP-mode proxy."""
    return lambda: HttpConnection(proxy).client
