"""Toxic definitions: the Toxiproxy JSON shape, its validation, and how each toxic acts.

A toxic is described by ``ToxicSpec`` (immutable; an update makes a new spec with a new
``uid``) and acts through a ``Behaviour`` created once per connection direction it
applies to. The JSON shape is Toxiproxy's (``name``, ``type``, ``stream``, ``toxicity``,
``attributes``) so its clients work unchanged; chaoslab adds two optional fields, the
lease (``lease_s``: the toxic ends by itself that long after it was set) and the
heartbeat (``heartbeat_s``: it also ends once no client renewed it for that long; see
``leases.py``), each at the top level or inside ``attributes`` for clients that only
pass attributes through. Clients that do not know them never send them and ignore them
in replies.

Behaviours are written against the small ``Link`` protocol (sleep until a monotonic
deadline, pass a chunk on, close or reset the connection) so this module knows nothing
about sockets. Why hand-written: Toxiproxy is a Go binary, not a library we can embed,
and no Python package implements its toxics; semantics follow its documentation.

A chunk is ``(data, t)``: ``data`` is bytes or ``None`` for end-of-stream, ``t`` is the
``loop.time()`` at which the chunk became due at this stage. Latency is scheduled from
``t`` (the arrival time), never from "now", so sequential processing does not drift.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from chaoslab.drivers.proxy.errors import ApiError
from chaoslab.drivers.proxy.httpfaults import HTTP_TYPES, check_http_attributes

STREAMS = ("upstream", "downstream")

# Every toxic type Toxiproxy registers and its attributes, in Toxiproxy's units
# (ms, KB/s, bytes, µs). ``noop`` passes everything on, as in Toxiproxy.
ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "noop": (),
        "latency": ("latency", "jitter"),
        "bandwidth": ("rate",),
        "timeout": ("timeout",),
        "reset_peer": ("timeout",),
        "slicer": ("average_size", "size_variation", "delay"),
        "slow_close": ("delay",),
        "limit_data": ("bytes",),
    }
)

LEASE_KEY = "lease_s"
HEARTBEAT_KEY = "heartbeat_s"
MAX_LEASE_S = 24 * 3600.0

Chunk = tuple[bytes | None, float]
Emit = Callable[[Chunk], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class ToxicSpec:
    """One toxic as the API sees it. ``uid`` changes on every create/update, so links
    redraw their toxicity and reset their per-link state exactly like Toxiproxy does."""

    name: str
    type: str
    stream: str  # as the client spelled it (Toxiproxy echoes it); ``direction`` is canonical
    toxicity: float
    attributes: Mapping[str, Any] = field(default_factory=dict)  # ints, or JSON values for http_* toxics
    uid: int
    lease_s: float | None = None
    lease_expires_at: float | None = None  # Unix time, for humans and the driver
    heartbeat_s: float | None = None  # ends once not renewed for this long (``leases.py``)

    @property
    def direction(self) -> str:
        """``upstream`` or ``downstream``: the stream, case-folded as Toxiproxy parses it."""
        return self.stream.lower()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }
        if self.lease_s is not None:
            out[LEASE_KEY] = self.lease_s
            out["lease_expires_at"] = self.lease_expires_at
        if self.heartbeat_s is not None:
            out[HEARTBEAT_KEY] = self.heartbeat_s
        return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"bad request body: {where} must be a number, got {value!r}")
    return float(value)


def _attribute(value: Any, where: str) -> int:
    number = _number(value, where)
    if number != int(number) or number < 0:
        raise ApiError(400, f"bad request body: {where} must be a non-negative integer")
    return int(number)


def _lease(body: Mapping[str, Any], attributes: Mapping[str, Any], key: str = LEASE_KEY) -> float | None:
    """A lease field (``lease_s`` or ``heartbeat_s``) of a body, in seconds, or None."""
    raw = body.get(key, attributes.get(key))
    if raw is None:
        return None
    lease = _number(raw, key)
    if not 0 < lease <= MAX_LEASE_S:
        raise ApiError(400, f"bad request body: {key} must be in (0, {MAX_LEASE_S:.0f}]")
    return lease


def _toxicity(raw: Any) -> float:
    toxicity = _number(raw, "toxicity")
    if not 0.0 <= toxicity <= 1.0:
        raise ApiError(400, "bad request body: toxicity must be between 0 and 1")
    return toxicity


def _attributes(kind: str, raw: Any, base: Mapping[str, int]) -> dict[str, int]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ApiError(400, "bad request body: attributes must be an object")
    # Unknown attribute keys are ignored, as Toxiproxy's decoder does.
    return {
        key: _attribute(raw[key], f"attributes.{key}") if key in raw else base.get(key, 0)
        for key in ATTRIBUTES[kind]
    }


def parse_toxic(body: Any, *, uid: int) -> ToxicSpec:
    """Validate a create-toxic body in Toxiproxy's order (stream, then name, then type);
    defaults follow Toxiproxy: stream downstream, toxicity 1.0, name ``<type>_<stream>``,
    missing attributes 0. The stream is case-insensitive; an empty stream is invalid."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "bad request body: expected a JSON object")
    stream = body.get("stream")
    if stream is None:  # absent or null: Toxiproxy's decoder keeps its default
        stream = "downstream"
    if not isinstance(stream, str):
        raise ApiError(400, "bad request body: stream must be a string")
    if stream.lower() not in STREAMS:
        raise ApiError(400, "stream was invalid, can be either upstream or downstream")
    kind = body.get("type")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "bad request body: name must be a string")
    if kind is not None and not isinstance(kind, str):
        raise ApiError(400, "bad request body: type must be a string")
    name = name or f"{kind or ''}_{stream}"
    if kind not in ATTRIBUTES and kind not in HTTP_TYPES:
        raise ApiError(400, f"invalid toxic type {kind!r} (known: {', '.join((*ATTRIBUTES, *HTTP_TYPES))})")
    raw_attrs = body.get("attributes") or {}
    if kind in HTTP_TYPES:
        attributes: dict[str, Any] = check_http_attributes(str(kind), raw_attrs)
    else:
        attributes = _attributes(str(kind), raw_attrs, {})
    return ToxicSpec(
        name=name,
        type=str(kind),
        stream=stream,
        toxicity=1.0 if body.get("toxicity") is None else _toxicity(body["toxicity"]),
        attributes=attributes,
        uid=uid,
        lease_s=_lease(body, raw_attrs if isinstance(raw_attrs, Mapping) else {}),
        heartbeat_s=_lease(body, raw_attrs if isinstance(raw_attrs, Mapping) else {}, HEARTBEAT_KEY),
    )


def update_toxic(spec: ToxicSpec, body: Any, *, uid: int) -> ToxicSpec:
    """Apply an update body: attributes merge into the old ones, toxicity, the lease and
    the heartbeat replace theirs when given. Name, type and stream cannot change (as in
    Toxiproxy)."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "bad request body: expected a JSON object")
    raw_attrs = body.get("attributes") or {}
    lease = _lease(body, raw_attrs if isinstance(raw_attrs, Mapping) else {})
    heartbeat = _lease(body, raw_attrs if isinstance(raw_attrs, Mapping) else {}, HEARTBEAT_KEY)
    if spec.type.startswith("http_"):
        if not isinstance(raw_attrs, Mapping):
            raise ApiError(400, "bad request body: attributes must be an object")
        attributes: Mapping[str, Any] = check_http_attributes(spec.type, {**spec.attributes, **raw_attrs})
    else:
        attributes = _attributes(spec.type, raw_attrs, spec.attributes)
    return replace(
        spec,
        toxicity=spec.toxicity if body.get("toxicity") is None else _toxicity(body["toxicity"]),
        attributes=attributes,
        uid=uid,
        lease_s=lease if lease is not None else spec.lease_s,
        heartbeat_s=heartbeat if heartbeat is not None else spec.heartbeat_s,
    )


# --- behaviour --------------------------------------------------------------------------


class Link(Protocol):
    """What a behaviour may do to the connection direction it sits on."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float, uid: int) -> bool:
        """Sleep until ``deadline`` (loop time). False if the toxic was removed or the
        connection closed meanwhile: the caller then stops acting and passes data on."""
        ...

    def close_connection(self, *, reset: bool = False) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle: ...


class Behaviour:
    """Per-connection-direction state of one toxic. Default: pass everything on."""

    def __init__(self, spec: ToxicSpec) -> None:
        self.spec = spec
        self.uid = spec.uid
        self.attrs = spec.attributes

    def activate(self, link: Link) -> None:
        """Called once when the toxic starts acting on a link (connection or toxic new)."""

    def deactivate(self, link: Link) -> None:
        """Called when the toxic is removed while the link is alive."""

    def discard(self) -> None:
        """Called when the link closes: cancel any timer this behaviour holds."""

    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        await emit(chunk)


class Latency(Behaviour):
    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        delay_ms = float(self.attrs["latency"])
        jitter = self.attrs["jitter"]
        if jitter:
            delay_ms += random.uniform(-jitter, jitter)
        deadline = chunk[1] + max(0.0, delay_ms) / 1000.0
        await link.sleep_until(deadline, self.uid)
        # The next stage counts from when this chunk left, as on a real slow hop.
        await emit((chunk[0], max(deadline, chunk[1])))


class Bandwidth(Behaviour):
    def __init__(self, spec: ToxicSpec) -> None:
        super().__init__(spec)
        self.vclock = 0.0  # when the link is free again, in loop time

    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        data, _ = chunk
        rate = self.attrs["rate"] * 1000  # KB/s as in Toxiproxy: 1 KB = 1000 bytes
        if data is None or rate <= 0:
            await emit(chunk)
            return
        step = max(1, rate // 10)  # at most 100 ms worth per write, so slow rates trickle
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            self.vclock = max(self.vclock, link.now()) + len(piece) / rate
            if not await link.sleep_until(self.vclock, self.uid):
                await emit((data[start:], link.now()))
                return
            await emit((piece, self.vclock))


class Timeout(Behaviour):
    """Blackhole: drop data; close after ``timeout`` ms (0 = never). Removing the toxic
    closes the connections it held, because the data it dropped broke their streams."""

    handle: asyncio.TimerHandle | None = None

    def activate(self, link: Link) -> None:
        if self.attrs["timeout"] > 0:
            self.handle = link.call_later(self.attrs["timeout"] / 1000.0, link.close_connection)

    def deactivate(self, link: Link) -> None:
        self.discard()
        link.close_connection()

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        if chunk[0] is None:
            link.close_connection()


class ResetPeer(Behaviour):
    """On the first chunk in its direction, wait ``timeout`` ms, then reset both peers
    (SO_LINGER 0 makes close() send RST: "connection reset by peer")."""

    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        deadline = link.now() + self.attrs["timeout"] / 1000.0
        if await link.sleep_until(deadline, self.uid):
            link.close_connection(reset=True)
        else:
            await emit(chunk)


class Slicer(Behaviour):
    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        data, t = chunk
        average = self.attrs["average_size"]
        if data is None or average <= 0:
            await emit(chunk)
            return
        variation = min(self.attrs["size_variation"], average - 1)
        delay = self.attrs["delay"] / 1_000_000.0
        pos = 0
        while pos < len(data):
            size = max(1, average + random.randint(-variation, variation))
            await emit((data[pos : pos + size], t))
            pos += size
            if pos < len(data) and delay > 0:
                if not await link.sleep_until(link.now() + delay, self.uid):
                    await emit((data[pos:], t))
                    return


class SlowClose(Behaviour):
    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        if chunk[0] is None:
            await link.sleep_until(link.now() + self.attrs["delay"] / 1000.0, self.uid)
        await emit(chunk)


class LimitData(Behaviour):
    def __init__(self, spec: ToxicSpec) -> None:
        super().__init__(spec)
        self.sent = 0

    async def apply(self, link: Link, chunk: Chunk, emit: Emit) -> None:
        data, t = chunk
        limit = self.attrs["bytes"]
        if data is None:
            await emit(chunk)
            return
        remaining = max(0, limit - self.sent)
        if data[:remaining]:
            await emit((data[:remaining], t))
            self.sent += min(len(data), remaining)
        if self.sent >= limit:
            link.close_connection()


BEHAVIOURS: Mapping[str, type[Behaviour]] = MappingProxyType(
    {
        "noop": Behaviour,
        "latency": Latency,
        "bandwidth": Bandwidth,
        "timeout": Timeout,
        "reset_peer": ResetPeer,
        "slicer": Slicer,
        "slow_close": SlowClose,
        "limit_data": LimitData,
    }
)


def behaviour(spec: ToxicSpec) -> Behaviour:
    return BEHAVIOURS[spec.type](spec)
