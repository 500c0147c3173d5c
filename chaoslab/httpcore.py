"""Minimal HTTP/1.1 framing shared by the lab's replica, its balancer and the load generator.

Written by hand, deliberately: the lab and the SLI sampler must move thousands of requests
per second on one core, with keep-alive, from plain asyncio protocols (no task per request
on the hot path). ``http.server`` is a thread per connection, h11 is a general state
machine that costs several times more per message, and httpx/aiohttp clients add a
coroutine, a timeout context and header objects to every request. We need much less:

- requests (server side): request line, headers, ``Content-Length`` bodies;
- responses (client side): status line, headers, a body framed by ``Content-Length``,
  ``Transfer-Encoding: chunked`` or the end of the connection.

Invariants: a parser never consumes bytes beyond the message it returns; heads larger
than ``MAX_HEAD`` bytes are a ``ProtocolError``; a ``ClientConnection`` carries at most
one request at a time (no pipelining), so a response always belongs to the request sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

MAX_HEAD = 64 * 1024
CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ErrorKind(IntEnum):
    """Outcomes that are not an HTTP status, stored as negative codes next to statuses."""

    CONNECT = -1  # refused, unreachable: nothing was sent
    RESET = -2  # the connection closed or reset before the full response
    TIMEOUT = -3  # no full response before the deadline
    PROTOCOL = -4  # malformed response
    OTHER = -5


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.x as this module understands it."""


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    raw: bytes  # the whole message as received (the balancer forwards it unchanged)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


def parse_request(buf: bytearray) -> tuple[Request | None, int]:
    """Parse one request from the start of ``buf``; return it and the bytes it used.

    Returns ``(None, 0)`` while the message is incomplete.
    """
    end = buf.find(HEAD_END)
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ProtocolError("request head too large")
        return None, 0
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"bad request line {lines[0][:80]!r}")
    headers = _headers(lines)
    size = end + 4
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError as exc:
            raise ProtocolError("bad content-length") from exc
        if n < 0 or n > 16 * 1024 * 1024:
            raise ProtocolError("content-length out of range")
        if len(buf) < size + n:
            return None, 0
        body = bytes(buf[size : size + n])
        size += n
    elif "transfer-encoding" in headers:
        raise ProtocolError("chunked request bodies are not supported")
    else:
        body = b""
    req = Request(
        method=parts[0],
        target=parts[1],
        version=parts[2],
        headers=headers,
        body=body,
        raw=bytes(buf[:size]),
    )
    return req, size


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def response(
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: str = "",
    keep_alive: bool = True,
) -> bytes:
    """Serialise a complete response. ``extra`` is preformatted ``Name: value\\r\\n`` lines."""
    reason = REASONS.get(status, "Unknown")
    conn = "" if keep_alive else "Connection: close\r\n"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{conn}{extra}\r\n"
    ).encode("latin-1") + body


def build_request(method: str, host: str, target: str, *, extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode("latin-1")


class ResponseParser:
    """Incremental parser for one response at a time (call ``reset`` between requests)."""

    __slots__ = ("_buf", "_head_only", "_state", "_remaining", "status", "keep_alive", "_end")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head_only = False
        self._state = 0  # 0 head, 1 fixed body, 2 chunked, 3 until close, 4 done
        self._remaining = 0
        self._end = 0
        self.status = 0
        self.keep_alive = True

    def reset(self, *, head_only: bool = False) -> None:
        del self._buf[: self._end]
        self._end = 0
        self._state = 0
        self._head_only = head_only
        self.status = 0
        self.keep_alive = True

    def feed(self, data: bytes) -> bool:
        """Add bytes; return True once the response is complete."""
        self._buf += data
        return self._advance()

    def eof(self) -> bool:
        """The peer closed: True if that completes a close-delimited response."""
        if self._state == 3:
            self._end = len(self._buf)
            self._state = 4
            return True
        return False

    def message(self) -> bytes:
        """The complete response as received (valid after ``feed`` returned True)."""
        return bytes(self._buf[: self._end])

    def _advance(self) -> bool:
        buf = self._buf
        if self._state == 0:
            end = buf.find(HEAD_END)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("response head too large")
                return False
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ProtocolError(f"bad status line {lines[0][:80]!r}")
            try:
                self.status = int(parts[1])
            except ValueError as exc:
                raise ProtocolError(f"bad status {parts[1][:10]!r}") from exc
            headers = _headers(lines)
            conn = headers.get("connection", "").lower()
            self.keep_alive = conn == "keep-alive" if parts[0] == "HTTP/1.0" else conn != "close"
            self._end = end + 4
            no_body = self._head_only or self.status in (204, 304) or 100 <= self.status < 200
            if no_body:
                self._state = 4
                return True
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._state = 2
            elif (length := headers.get("content-length")) is not None:
                try:
                    self._remaining = int(length)
                except ValueError as exc:
                    raise ProtocolError("bad content-length") from exc
                self._state = 1
            else:
                self._state = 3
                self.keep_alive = False
        if self._state == 1:
            have = len(buf) - self._end
            if have < self._remaining:
                return False
            self._end += self._remaining
            self._state = 4
            return True
        if self._state == 2:
            return self._chunks()
        return self._state == 4

    def _chunks(self) -> bool:
        buf = self._buf
        while True:
            line_end = buf.find(CRLF, self._end)
            if line_end < 0:
                return False
            size_text = bytes(buf[self._end : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ProtocolError("bad chunk size") from exc
            if size == 0:
                # Trailers end with an empty line; without trailers that is the next CRLF.
                trailer_end = buf.find(HEAD_END, line_end)
                if buf[line_end : line_end + 4] == HEAD_END:
                    trailer_end = line_end
                if trailer_end < 0:
                    return False
                self._end = trailer_end + 4
                self._state = 4
                return True
            chunk_end = line_end + 2 + size + 2
            if len(buf) < chunk_end:
                return False
            self._end = chunk_end


OnResponse = Callable[["ClientConnection", int, bytes | None], None]
OnError = Callable[["ClientConnection", ErrorKind], None]


class ClientConnection(asyncio.Protocol):
    """A keep-alive client connection carrying one request at a time.

    ``on_response(conn, status, message_or_None)`` fires once per complete response;
    ``on_error(conn, kind)`` fires when a request in flight cannot complete (reset,
    malformed). After either, the connection is ``idle`` again or ``closed``.
    """

    def __init__(self, on_response: OnResponse, on_error: OnError, *, keep_body: bool) -> None:
        self.on_response = on_response
        self.on_error = on_error
        self.keep_body = keep_body
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.busy = False
        self.closed = False
        self.deadline = 0.0  # monotonic time; owners use it for their timeout sweep
        self.tag: object = None  # owner's per-request context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, *, head_only: bool = False) -> None:
        assert self.transport is not None and not self.busy
        self.busy = True
        self.parser.reset(head_only=head_only)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for: the peer is confused; drop the connection.
            self.close()
            return
        try:
            done = self.parser.feed(data)
        except ProtocolError:
            self._fail(ErrorKind.PROTOCOL)
            return
        if done:
            self._complete()

    def _complete(self) -> None:
        self.busy = False
        keep = self.parser.keep_alive
        message = self.parser.message() if self.keep_body else None
        if not keep:
            self.close()
        self.on_response(self, self.parser.status, message)

    def _fail(self, kind: ErrorKind) -> None:
        self.busy = False
        self.close()
        self.on_error(self, kind)

    def eof_received(self) -> bool | None:
        if self.busy and self.parser.eof():
            self._complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy:
            self.busy = False
            self.on_error(self, ErrorKind.RESET)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now without reporting (the owner already recorded why)."""
        self.busy = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
