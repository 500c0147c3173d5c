"""One proxied connection: two sockets and the toxic pipes between them.

Shape of one proxied connection::

    client ─► Side(client) ──upstream Pipe──► Side(server) ─► upstream service
    client ◄─ Side(client) ◄─downstream Pipe── Side(server) ◄─ upstream service

Fast path: while a direction has no toxic acting on it and nothing queued, the reading
protocol's ``data_received`` writes straight into the other transport — no task, no
queue, no copy — and flow control is the transports' own: when a writer's buffer passes
its high-water mark, ``pause_writing`` pauses reading on the other side. That keeps the
added latency of an idle proxy to one event-loop hop per direction.

Slow path: with toxics, chunks are stamped with their arrival time and queued; one task
per direction carries each chunk through the toxic chain in order. Sleeps are to
monotonic deadlines (``loop.call_at``), so a 100 ms latency toxic adds 100 ms to every
chunk however fast chunks arrive. Toxics added or removed apply to live connections
too; a sleeping chunk is released at once when its toxic goes. The queue is bounded:
past ``QUEUE_HIGH`` bytes the source stops being read.

A connection sees its proxy only through ``ProxyView`` (``server.Proxy`` is one), so this
module, ``server.py`` (which creates connections) and ``httpmode.py`` (which extends
them) import each other in one direction only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Protocol, cast

from chaoslab.drivers.proxy.toxics import Behaviour, Chunk, ToxicSpec, behaviour

log = logging.getLogger("chaoslab.drivers.proxy.server")  # one logger for the proxy engine

QUEUE_HIGH = 1 << 20  # bytes queued in a toxic pipe before the source is paused
QUEUE_LOW = 1 << 18
TIMER_SLACK_S = 0.0005


class ProxyView(Protocol):
    """What a connection reads and updates of the proxy it belongs to."""

    loop: asyncio.AbstractEventLoop
    name: str
    upstream_addr: tuple[str, int]
    connections: set[Connection]
    stats: dict[str, Stats]

    def specs(self) -> list[ToxicSpec]:
        """The TCP toxics acting on the proxy's connections, in the order they were added."""
        ...


class Stats:
    """Byte counters of one proxy direction, kept across its connections (``/metrics``)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


class Side(asyncio.Protocol):
    """One socket of a proxied connection; reads feed the pipe towards the other side."""

    def __init__(self, conn: Connection, role: str) -> None:
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.out: Pipe | None = None  # the pipe carrying what this side reads
        self.stats = Stats()  # replaced by the proxy's counters for this side's direction
        # Fast path: bound ``write`` of the other transport, or None while toxics act.
        self.fast_write: Callable[[bytes], None] | None = None
        self._pause_reasons: set[str] = set()
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.role == "client":
            # Hold client bytes until the upstream connection exists.
            self.pause("connecting")
            self.conn.client_connected()

    def data_received(self, data: bytes) -> None:
        fast = self.fast_write
        if fast is not None:
            stats = self.stats
            stats.received += len(data)
            stats.sent += len(data)
            fast(data)
        elif self.out is not None:
            self.stats.received += len(data)
            self.out.push(data)

    def eof_received(self) -> bool:
        if self.out is not None:
            self.out.push(None)
        return True  # keep our write side open: TCP half-close is forwarded, not forced

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._wake_drain()
        self.conn.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.peer is not None:
            self.peer.pause("peer-buffer")

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        if self.peer is not None:
            self.peer.resume("peer-buffer")

    # -- helpers --------------------------------------------------------------------------
    def pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None:
            self.transport.resume_reading()

    async def drain(self) -> None:
        while self.write_paused and self.transport is not None:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)


class Pipe:
    """One direction of one connection, with the toxics acting on it (implements Link)."""

    def __init__(self, conn: Connection, stream: str, src: Side, dst: Side) -> None:
        self.conn = conn
        self.stream = stream
        self.src = src
        self.dst = dst
        self.loop: asyncio.AbstractEventLoop = conn.loop
        self.chain: list[Behaviour] = []  # toxics acting here, in the order they were added
        self.seen: set[int] = set()  # uids already drawn against toxicity (acting or not)
        self.queue: collections.deque[Chunk] = collections.deque()
        self.queued = 0
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.eof_sent = False

    # -- Link protocol ----------------------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, callback)

    def close_connection(self, *, reset: bool = False) -> None:
        self.conn.close(reset=reset)

    def acting(self, uid: int) -> bool:
        return not self.conn.closed and any(b.uid == uid for b in self.chain)

    async def sleep_until(self, deadline: float, uid: int) -> bool:
        # epoll's timeout is in whole milliseconds, rounded up, so a timer at ``deadline``
        # fires 0-1 ms late. Aiming half a millisecond early centres the error on zero.
        target = deadline - TIMER_SLACK_S
        while self.acting(uid):
            if target - self.loop.time() <= 0:
                return True
            fut = self.loop.create_future()
            self.wake = fut
            handle = self.loop.call_at(target, _set_done, fut)
            try:
                await fut
            finally:
                handle.cancel()
                self.wake = None
        return False

    # -- toxics -----------------------------------------------------------------------
    def sync(self, specs: Iterable[ToxicSpec]) -> None:
        """Make the chain match the proxy's toxics for this stream."""
        wanted = [s for s in specs if s.direction == self.stream]
        uids = {s.uid for s in wanted}
        for b in [b for b in self.chain if b.uid not in uids]:
            self.chain.remove(b)
            b.deactivate(self)
            if self.conn.closed:
                return
        for spec in wanted:
            if spec.uid in self.seen:
                continue
            self.seen.add(spec.uid)
            # Toxicity is drawn once per toxic per connection, as Toxiproxy does.
            if spec.toxicity >= 1.0 or random.random() < spec.toxicity:
                b = behaviour(spec)
                self.chain.append(b)
                b.activate(self)
                if self.conn.closed:
                    return
        self.seen &= uids
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)
        self.refresh_fast()

    def refresh_fast(self) -> None:
        idle = not self.chain and not self.queue and self.task is None
        dst = self.dst.transport
        self.src.fast_write = dst.write if idle and dst is not None and not self.eof_sent else None

    # -- data -------------------------------------------------------------------------
    def push(self, data: bytes | None) -> None:
        if self.conn.closed:
            return
        self.queue.append((data, self.loop.time()))
        if data is not None:
            self.queued += len(data)
            if self.queued > QUEUE_HIGH:
                self.src.pause("queue")
        self.src.fast_write = None
        if self.dst.transport is not None:
            self.kick()

    def kick(self) -> None:
        """Carry what is queued (also what arrived before the far side was connected:
        uvloop, unlike asyncio since 3.12, starts reading even when ``connection_made``
        paused the transport)."""
        if self.queue and self.task is None and not self.conn.closed:
            self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue and not self.conn.closed:
                chunk = self.queue.popleft()
                if chunk[0] is not None:
                    self.queued -= len(chunk[0])
                    if self.queued < QUEUE_LOW:
                        self.src.resume("queue")
                await self._through(list(self.chain), 0, chunk)
        except Exception:  # a failing toxic must not leave a half-working connection
            log.exception("proxy %s: %s pipe failed; closing", self.conn.proxy.name, self.stream)
            self.conn.close()
        finally:
            self.task = None
            if not self.conn.closed:
                self.refresh_fast()

    async def _through(self, chain: list[Behaviour], index: int, chunk: Chunk) -> None:
        if self.conn.closed:
            return
        while index < len(chain) and chain[index] not in self.chain:
            index += 1  # removed while an earlier chunk was in flight
        if index == len(chain):
            await self._deliver(chunk)
            return

        async def emit(out: Chunk) -> None:
            await self._through(chain, index + 1, out)

        await chain[index].apply(self, chunk, emit)

    async def _deliver(self, chunk: Chunk) -> None:
        await self.dst.drain()
        transport = self.dst.transport
        if transport is None or self.conn.closed or self.eof_sent:
            return
        if chunk[0] is None:
            self.forward_eof()
        else:
            self.src.stats.sent += len(chunk[0])
            transport.write(chunk[0])

    def forward_eof(self) -> None:
        transport = self.dst.transport
        self.eof_sent = True
        self.src.fast_write = None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        self.conn.eof_forwarded()

    def cancel(self) -> None:
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for b in self.chain:
            b.discard()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Connection:
    """A client connection and its upstream connection, closed together."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy
        self.loop: asyncio.AbstractEventLoop = proxy.loop
        self.closed = False
        self.client = Side(self, "client")
        self.server = Side(self, "server")
        self.client.peer, self.server.peer = self.server, self.client
        self.up = Pipe(self, "upstream", self.client, self.server)
        self.down = Pipe(self, "downstream", self.server, self.client)
        self.client.out, self.server.out = self.up, self.down
        self.client.stats, self.server.stats = proxy.stats["upstream"], proxy.stats["downstream"]
        self._connect_task: asyncio.Task[None] | None = None

    def client_connected(self) -> None:
        self.proxy.connections.add(self)
        self._connect_task = self.loop.create_task(self._connect_upstream())

    async def _connect_upstream(self) -> None:
        host, port = self.proxy.upstream_addr
        try:
            await self.loop.create_connection(lambda: self.server, host, port)
        except OSError as exc:
            log.info("proxy %s: upstream %s:%s unreachable: %s", self.proxy.name, host, port, exc)
            self.close()
            return
        finally:
            self._connect_task = None
        if self.closed:
            if self.server.transport is not None:
                self.server.transport.close()
            return
        self.sync(self.proxy.specs())
        if not self.closed:
            self.up.kick()
            self.client.resume("connecting")

    def sync(self, specs: list[ToxicSpec]) -> None:
        for pipe in (self.up, self.down):
            if not self.closed:
                pipe.sync(specs)

    def eof_forwarded(self) -> None:
        if self.up.eof_sent and self.down.eof_sent:
            self.close()

    def close(self, *, reset: bool = False) -> None:
        """Close both sockets (flushing what was written), or reset them (RST, no flush)."""
        if self.closed:
            return
        self.closed = True
        self.proxy.connections.discard(self)
        for pipe in (self.up, self.down):
            pipe.cancel()
            if pipe.wake is not None and not pipe.wake.done():
                pipe.wake.set_result(None)
        if self._connect_task is not None and self._connect_task is not asyncio.current_task():
            self._connect_task.cancel()
        for side in (self.client, self.server):
            transport = side.transport
            if transport is None:
                continue
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
