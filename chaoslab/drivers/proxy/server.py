"""The proxy engine: asyncio TCP forwarding with toxics and leases, one event loop.

Connections (two sockets and the toxic pipes between them, fast and slow path) are in
``connection.py``; HTTP mode's in ``httpmode.py``. This module holds the proxies, their
listeners, toxics and leases, and the operations of the HTTP API.

Leases live here, in the server (``leases.py``): a leased toxic (or a leased "down") is
a timer on this loop that removes the toxic (or re-enables the proxy) with no help from
any client, when its ceiling (``lease_s``) passes or, for a lease that follows a run
(``heartbeat_s``), as soon as the run stops renewing it. So a SIGKILLed runner's faults
end ``heartbeat_s`` after its last renewal. Why a lease ended is kept for a while
(tombstones), so a late renewal is answered 410 with the reason.

Why hand-written: no stdlib or PyPI package provides a Toxiproxy-compatible engine
(Toxiproxy itself is a Go binary). The engine runs on any asyncio loop; the proxy
process uses uvloop when it is installed (``--loop``), which halves the per-hop cost.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from chaoslab.drivers.proxy.connection import Connection, Stats
from chaoslab.drivers.proxy.errors import ApiError
from chaoslab.drivers.proxy.httpfaults import Rule
from chaoslab.drivers.proxy.httpmode import connection_factory
from chaoslab.drivers.proxy.leases import Lease, Tombstones
from chaoslab.drivers.proxy.toxics import MAX_LEASE_S, ToxicSpec, parse_toxic, update_toxic

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:0"  # when a client sends no listen address (safer than Toxiproxy's all)
MODES = ("tcp", "http")  # chaoslab's ``mode`` field of a proxy (absent means tcp, as Toxiproxy)
_DOWN = ""  # the tombstone key of a proxy's "down" (a toxic's name is never empty)
REENABLE_RETRY_S = 0.25  # a down's lease ended but its port is taken: try again this often


def split_address(address: str, *, what: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (Go's syntax, as Toxiproxy takes it)
    into ``(host, port)``; the host comes back without brackets, ``""`` for all interfaces."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        bracketed = True
    else:
        bracketed = False
    if (
        not sep
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
        or (":" in host) != bracketed
        or "[" in host
        or "]" in host
    ):
        raise ApiError(400, f"bad request body: {what} must be HOST:PORT or [IPV6]:PORT, got {address!r}")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    """The inverse of ``split_address``, in Go's ``net.JoinHostPort`` form."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _listen_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` as Go's ``net.Listen("tcp", …)`` makes it: the
    wildcard (``""`` or ``::``) is one dual-stack socket, a name binds its first address
    (IPv4 first, as Go prefers it)."""
    if host in ("", "::") and socket.has_ipv6:
        family, addr = socket.AF_INET6, ("::", port)
    else:
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, addr = infos[0][0], (str(infos[0][4][0]), int(infos[0][4][1]))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and addr[0] == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Proxy:
    """One named proxy: a listener, its live connections, its toxics and leases."""

    def __init__(
        self, server: ProxyServer, name: str, listen: str, upstream: str, *, enabled: bool, mode: str = "tcp"
    ) -> None:
        self.server = server
        self.mode = mode  # "tcp", or "http": connections parsed by httpmode.py, http_* toxics
        self.loop: asyncio.AbstractEventLoop = server.loop
        self.name = name
        self.listen_host, self.listen_port = split_address(listen, what="listen")
        # What ``listen`` reports: the bound address once listening (Toxiproxy's habit),
        # the requested one before that.
        self.listen = listen
        self.upstream = upstream
        self.upstream_addr = split_address(upstream, what="upstream")
        self.enabled = enabled
        self.toxics: dict[str, ToxicSpec] = {}
        self.connections: set[Connection] = set()
        self.stats = {"upstream": Stats(), "downstream": Stats()}
        self._listener: asyncio.Server | None = None
        self._leases: dict[str, Lease] = {}  # by toxic name
        self._down_lease: Lease | None = None
        self._downs = 0  # counts downs (a new one stops the re-enabling of an ended one)
        self.ended = Tombstones()  # why leases ended, by toxic name (``_DOWN``: the down)
        self._rules: list[Rule] | None = None  # the http_* toxics compiled, rebuilt on change
        self._compiled: dict[int, Rule] = {}  # by toxic uid, so counters survive other changes
        self.http_requests = 0  # requests parsed in HTTP mode (``/metrics``)

    def same_address(self, listen: str, upstream: str) -> bool:
        """Toxiproxy's ``Differs``, negated: ``listen`` names the address this proxy is
        bound to (port 0 never does) and the upstream is the same text."""
        host, port = split_address(listen, what="listen")
        bound_host, bound_port = split_address(self.listen, what="listen")
        return upstream == self.upstream and port == bound_port and _same_host(host, bound_host)

    def specs(self) -> list[ToxicSpec]:
        """The TCP toxics (what the byte pipes act on; http_* toxics act in httpmode.py)."""
        return [t for t in self.toxics.values() if not t.type.startswith("http_")]

    def http_rules(self) -> list[Rule]:
        """The http_* toxics, compiled, in the order they were added."""
        rules = self._rules
        if rules is None:
            compiled = {
                t.uid: self._compiled.get(t.uid) or Rule.compile(t.name, t.type, t.toxicity, t.attributes)
                for t in self.toxics.values()
                if t.type.startswith("http_")
            }
            self._compiled = compiled
            rules = self._rules = list(compiled.values())
        return rules

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }
        if self.mode != "tcp":
            out["mode"] = self.mode  # chaoslab's extension; Toxiproxy clients ignore it
        if self._down_lease is not None:
            out.update(self._down_lease.to_json())  # chaoslab's lease fields of a down
        return out

    # -- listening --------------------------------------------------------------------
    async def start(self) -> None:
        if self._listener is not None:
            return
        try:
            sock = await _listen_socket(self.loop, self.listen_host, self.listen_port)
            try:
                self._listener = await self.loop.create_server(
                    self._protocol_factory(), sock=sock, backlog=1024
                )
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise ApiError(500, f"proxy {self.name}: cannot listen on {self.listen}: {exc}") from exc
        bound = self._listener.sockets[0].getsockname()
        self.listen_port = int(bound[1])
        self.listen = join_address(str(bound[0]), self.listen_port)
        self.enabled = True

    def _protocol_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        if self.mode == "http":
            return connection_factory(self)
        return lambda: Connection(self).client

    def stop(self) -> None:
        """Stop listening and close every connection (Toxiproxy's "down")."""
        if self._listener is not None:
            self._listener.close()  # closes the listening socket now; port is free again
            self._listener = None
        for conn in list(self.connections):
            conn.close()
        self.enabled = False

    async def set_enabled(
        self, enabled: bool, lease_s: float | None, heartbeat_s: float | None = None
    ) -> None:
        if enabled:
            # A re-enable that cannot listen (the port was taken while the proxy was down)
            # answers 500 and leaves the down *with its lease* (and a lease's re-enabling
            # going on): a failed revert never takes away what still ends the fault.
            await self.start()
            self._cancel_down_lease()
            return
        self._downs += 1  # a new down: the re-enabling of an ended one is over
        self._cancel_down_lease()
        self.stop()
        if lease_s is not None or heartbeat_s is not None:
            self.ended.forget(_DOWN)
            self._down_lease = Lease(
                self.loop, lease_s=lease_s, heartbeat_s=heartbeat_s, on_end=self._down_lease_ended
            )

    def _cancel_down_lease(self) -> None:
        if self._down_lease is not None:
            self._down_lease.cancel()
        self._down_lease = None

    def _down_lease_ended(self, reason: str) -> None:
        self._down_lease = None
        self.ended.bury(_DOWN, reason)
        log.info("proxy %s: down lease ended (%s), re-enabling", self.name, reason)
        self.server.spawn(self._reenable(self._downs))

    async def _reenable(self, downs: int) -> None:
        """Listen again once a down's lease ended; while the port is taken, try again
        every ``REENABLE_RETRY_S`` until it can, or until a client has its say (enables
        it, downs it again, deletes it): the lease's end is kept, not dropped."""
        while downs == self._downs and not self.enabled and self.server.proxies.get(self.name) is self:
            try:
                await self.start()
                return
            except ApiError as exc:
                log.warning("proxy %s: re-enabling failed (%s); retrying", self.name, exc.message)
            await asyncio.sleep(REENABLE_RETRY_S)

    def renew_down(self) -> dict[str, Any]:
        """Renew the lease of this proxy's down; 410 if a lease already ended it."""
        if self._down_lease is None:
            why = self.ended.why(_DOWN)
            if why is not None:
                raise ApiError(410, f"the proxy's down ended: {why}")
            if self.enabled:
                raise ApiError(404, "the proxy is not down")
            raise ApiError(409, "the proxy's down has no lease to renew")
        self._down_lease.renew()
        return self._down_lease.to_json()

    # -- toxics -----------------------------------------------------------------------
    def put_toxic(self, spec: ToxicSpec) -> ToxicSpec:
        old = self._leases.pop(spec.name, None)
        if old is not None:
            old.cancel()
        self.ended.forget(spec.name)
        if spec.lease_s is not None or spec.heartbeat_s is not None:
            lease = Lease(
                self.loop,
                lease_s=spec.lease_s,
                heartbeat_s=spec.heartbeat_s,
                on_end=functools.partial(self._toxic_lease_ended, spec.name, spec.uid),
            )
            self._leases[spec.name] = lease
            spec = replace(spec, lease_expires_at=lease.expires_at)
        self.toxics[spec.name] = spec
        self._sync()
        return spec

    def remove_toxic(self, name: str) -> bool:
        lease = self._leases.pop(name, None)
        if lease is not None:
            lease.cancel()
        if self.toxics.pop(name, None) is None:
            return False
        self._sync()
        return True

    def _toxic_lease_ended(self, name: str, uid: int, reason: str) -> None:
        spec = self.toxics.get(name)
        if spec is not None and spec.uid == uid:
            log.info("proxy %s: lease of toxic %s ended (%s), removing it", self.name, name, reason)
            self.remove_toxic(name)
            self.ended.bury(name, reason)

    def renew_toxic(self, name: str) -> dict[str, Any]:
        """Renew the lease of toxic ``name``; 410 if its lease already ended it."""
        lease = self._leases.get(name)
        if lease is None:
            why = self.ended.why(name)
            if why is not None:
                raise ApiError(410, f"toxic {name} ended: {why}")
            if name in self.toxics:
                raise ApiError(409, "the toxic has no lease to renew")
            raise ApiError(404, "toxic not found")
        lease.renew()
        return {"name": name, **lease.to_json()}

    def reset(self) -> None:
        for lease in self._leases.values():
            lease.cancel()
        self._leases.clear()
        self.toxics.clear()
        self._sync()

    def _sync(self) -> None:
        self._rules = None
        specs = self.specs()
        for conn in list(self.connections):
            conn.sync(specs)

    def destroy(self) -> None:
        self.reset()
        self._cancel_down_lease()
        self.stop()


def _labels(**labels: str) -> str:
    """A Prometheus label set, values escaped as the text format requires."""
    escape = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
    return ",".join(f'{key}="{value.translate(escape)}"' for key, value in sorted(labels.items()))


def _same_host(a: str, b: str) -> bool:
    """Whether two listen hosts name the same address (IP literals compared as addresses;
    ``""`` is the dual-stack wildcard ``::``, as in Go)."""
    a, b = a or "::", b or "::"
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


class ProxyServer:
    """All proxies of one server process, and the operations of the HTTP API.

    Every method runs on ``loop``; the API thread submits them with
    ``asyncio.run_coroutine_threadsafe``. Methods raise ``ApiError`` for the API to map.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.proxies: dict[str, Proxy] = {}
        self._uids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    @staticmethod
    def _object(body: Any) -> Mapping[str, Any]:
        if not isinstance(body, Mapping):
            raise ApiError(400, "bad request body: expected a JSON object")
        return body

    async def list_proxies(self) -> dict[str, Any]:
        return {name: p.to_json() for name, p in self.proxies.items()}

    async def create_proxy(self, body: Any) -> dict[str, Any]:
        proxy = await self._create(self._object(body), replace_existing=False)
        return proxy.to_json()

    async def _create(self, body: Mapping[str, Any], *, replace_existing: bool) -> Proxy:
        name, upstream = body.get("name"), body.get("upstream")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "missing required field: name")
        if not isinstance(upstream, str) or not upstream:
            raise ApiError(400, "missing required field: upstream")
        listen = body.get("listen") or DEFAULT_LISTEN
        enabled = body.get("enabled")
        if enabled is None:
            enabled = True
        if not isinstance(enabled, bool) or not isinstance(listen, str):
            raise ApiError(400, "bad request body: enabled must be a boolean, listen a string")
        mode = body.get("mode") or "tcp"
        if mode not in MODES:
            raise ApiError(400, f"bad request body: mode must be one of {', '.join(MODES)}, got {mode!r}")
        proxy = Proxy(self, name, listen, upstream, enabled=enabled, mode=mode)
        existing = self.proxies.get(name)
        if existing is not None:
            if not replace_existing:
                raise ApiError(409, "proxy already exists")
            if existing.same_address(listen, upstream) and existing.mode == mode:
                return existing
            existing.destroy()
            del self.proxies[name]
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def populate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, list):
            raise ApiError(400, "bad request body: expected a JSON array of proxies")
        for i, item in enumerate(body, 1):
            item = self._object(item)
            if not item.get("name"):
                raise ApiError(400, f"missing required field: name at proxy {i}")
            if not item.get("upstream"):
                raise ApiError(400, f"missing required field: upstream at proxy {i}")
        created = [await self._create(item, replace_existing=True) for item in body]
        return {"proxies": [p.to_json() for p in created]}

    async def get_proxy(self, name: str) -> dict[str, Any]:
        return self._get(name).to_json()

    async def update_proxy(self, name: str, body: Any) -> dict[str, Any]:
        """Toxiproxy's update, but atomic: every field is checked before anything changes,
        so an answer of 400 means the proxy is as it was. A new listen/upstream restarts
        the proxy (dropping its connections); if the new address cannot be bound, the old
        one is restored and the answer is 500."""
        proxy = self._get(name)
        body = self._object(body)
        listen = body.get("listen")
        upstream = body.get("upstream")
        enabled = body.get("enabled")
        listen = proxy.listen if listen is None else listen
        upstream = proxy.upstream if upstream is None else upstream
        enabled = proxy.enabled if enabled is None else enabled
        if not isinstance(listen, str) or not isinstance(upstream, str):
            raise ApiError(400, "bad request body: listen and upstream must be strings")
        if not isinstance(enabled, bool):
            raise ApiError(400, "bad request body: enabled must be a boolean")
        lease, heartbeat = body.get("lease_s"), body.get("heartbeat_s")
        for key, value in (("lease_s", lease), ("heartbeat_s", heartbeat)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_LEASE_S
            ):
                raise ApiError(400, f"bad request body: {key} must be in (0, {MAX_LEASE_S:.0f}]")
        new_listen = split_address(listen or DEFAULT_LISTEN, what="listen")
        new_upstream = split_address(upstream, what="upstream")
        # Validated: from here on nothing answers 400.
        if not proxy.same_address(listen or DEFAULT_LISTEN, upstream):
            await self._move(proxy, listen or DEFAULT_LISTEN, new_listen, upstream, new_upstream)
        if enabled != proxy.enabled or lease is not None or heartbeat is not None:
            await proxy.set_enabled(
                enabled,
                float(lease) if lease is not None else None,
                float(heartbeat) if heartbeat is not None else None,
            )
        return proxy.to_json()

    @staticmethod
    async def _move(
        proxy: Proxy, listen: str, listen_addr: tuple[str, int], upstream: str, upstream_addr: tuple[str, int]
    ) -> None:
        was_enabled = proxy.enabled
        old = (proxy.listen, proxy.listen_host, proxy.listen_port, proxy.upstream, proxy.upstream_addr)
        proxy.stop()
        proxy.listen, (proxy.listen_host, proxy.listen_port) = listen, listen_addr
        proxy.upstream, proxy.upstream_addr = upstream, upstream_addr
        if not was_enabled:
            return
        try:
            await proxy.start()
        except ApiError:
            proxy.listen, proxy.listen_host, proxy.listen_port, proxy.upstream, proxy.upstream_addr = old
            await proxy.start()
            raise

    async def delete_proxy(self, name: str) -> None:
        self._get(name).destroy()
        del self.proxies[name]

    async def list_toxics(self, name: str) -> list[dict[str, Any]]:
        return [t.to_json() for t in self._get(name).toxics.values()]

    async def create_toxic(self, name: str, body: Any) -> dict[str, Any]:
        proxy = self._get(name)
        spec = parse_toxic(body, uid=next(self._uids))
        if spec.type.startswith("http_") and proxy.mode != "http":
            raise ApiError(
                400, f"{spec.type} needs a proxy in HTTP mode; proxy {name!r} is in {proxy.mode} mode"
            )
        if spec.name in proxy.toxics:
            raise ApiError(409, "toxic already exists")
        return proxy.put_toxic(spec).to_json()

    async def get_toxic(self, name: str, toxic: str) -> dict[str, Any]:
        spec = self._get(name).toxics.get(toxic)
        if spec is None:
            raise ApiError(404, "toxic not found")
        return spec.to_json()

    async def update_toxic(self, name: str, toxic: str, body: Any) -> dict[str, Any]:
        proxy = self._get(name)
        spec = proxy.toxics.get(toxic)
        if spec is None:
            raise ApiError(404, "toxic not found")
        return proxy.put_toxic(update_toxic(spec, body, uid=next(self._uids))).to_json()

    async def delete_toxic(self, name: str, toxic: str) -> None:
        if not self._get(name).remove_toxic(toxic):
            raise ApiError(404, "toxic not found")

    async def renew_toxic(self, name: str, toxic: str) -> dict[str, Any]:
        """chaoslab's renewal of a toxic's heartbeat lease (not a Toxiproxy route)."""
        return self._get(name).renew_toxic(toxic)

    async def renew_down(self, name: str) -> dict[str, Any]:
        """chaoslab's renewal of a proxy's down lease (not a Toxiproxy route)."""
        return self._get(name).renew_down()

    async def metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of the proxies: Toxiproxy's two
        byte counters under its names and labels, plus chaoslab's live gauges."""
        lines = []
        for kind, help_text in (
            ("received", "Bytes the proxy read from the side the direction starts at."),
            ("sent", "Bytes the proxy wrote to the side the direction ends at."),
        ):
            metric = f"toxiproxy_proxy_{kind}_bytes_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            for proxy in self.proxies.values():
                for direction, stats in proxy.stats.items():
                    labels = _labels(
                        direction=direction, listener=proxy.listen, proxy=proxy.name, upstream=proxy.upstream
                    )
                    lines.append(f"{metric}{{{labels}}} {getattr(stats, kind)}")
        gauges: tuple[tuple[str, str, Callable[[Proxy], int]], ...] = (
            (
                "chaoslab_proxy_connections",
                "Client connections open through the proxy.",
                lambda p: len(p.connections),
            ),
            ("chaoslab_proxy_toxics", "Toxics set on the proxy.", lambda p: len(p.toxics)),
            (
                "chaoslab_proxy_enabled",
                "1 while the proxy listens, 0 while it is down.",
                lambda p: int(p.enabled),
            ),
        )
        for metric, help_text, read in gauges:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f"{metric}{{{_labels(proxy=p.name)}}} {read(p)}" for p in self.proxies.values()]
        http = [p for p in self.proxies.values() if p.mode == "http"]
        metric = "chaoslab_proxy_http_requests_total"
        lines += [f"# HELP {metric} Requests parsed by a proxy in HTTP mode.", f"# TYPE {metric} counter"]
        lines += [f"{metric}{{{_labels(proxy=p.name)}}} {p.http_requests}" for p in http]
        metric = "chaoslab_proxy_http_toxic_hits_total"
        lines += [
            f"# HELP {metric} Requests an HTTP toxic acted on (since it was set).",
            f"# TYPE {metric} counter",
        ]
        lines += [
            f"{metric}{{{_labels(proxy=p.name, toxic=r.name, type=r.kind)}}} {r.hit_count}"
            for p in http
            for r in p.http_rules()
        ]
        return "\n".join(lines) + "\n"

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (and their leases)."""
        for proxy in self.proxies.values():
            proxy.reset()
            await proxy.set_enabled(True, None)

    async def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.destroy()
        self.proxies.clear()
        for task in list(self._tasks):
            task.cancel()
