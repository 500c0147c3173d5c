"""The ``proxy`` driver: faults as leased toxics on a Toxiproxy-compatible server.

Targets:

- ``proxy:NAME@127.0.0.1:PORT`` — proxy NAME on the server whose API listens on PORT
  (chaoslab's own server or a real Toxiproxy);
- ``lab:replica-N`` — the lab's proxy in front of that component, resolved through the
  lab state file (``proxy.api_port`` and the component's ``proxy`` name).

Every fault is one toxic named ``chaoslab-<fault_id>`` (or, for ``down``, the proxy's
``enabled`` flag), created with chaoslab's lease fields: ``lease_s`` (the ceiling) and,
while a run renews it (``record.heartbeat`` set), ``heartbeat_s`` = ``lease.LAPSE_S``. The
proxy server removes the toxic (re-enables the proxy) by itself when the ceiling passes
or when no renewal came for ``heartbeat_s``; the run renews it through ``renew``, one
``POST …/renew`` per fault per heartbeat (``proxy/leases.py``). So a fault without
``duration`` lasts as long as the method, and a dead runner's fault ends ``LAPSE_S``
after its last renewal. A real Toxiproxy ignores both fields (and has no renew route),
so against it only ``revert`` ends the fault.

Revert deletes exactly that toxic; 404 means already clean (and if the server says a
lease ended it, that is reported as the lease's lapse: ``watchdog.report_lapse``). A
server that refuses connections is also clean: toxics live in its memory only, so they
died with it.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import msgspec

from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    parse_duration,
)
from chaoslab.drivers.lease import LAPSE_S
from chaoslab.drivers.lifecycle import Ask, Fault, FaultDriver, LeasedData, LeasedFault, not_applied
from chaoslab.drivers.targets import LabState
from chaoslab.drivers.watchdog import report_lapse
from chaoslab.errors import DriverError, Problem, TargetNotFound

TOXIC_PREFIX = "chaoslab-"
HTTP_TIMEOUT_S = 5.0
RENEW_TIMEOUT_S = 1.0  # one heartbeat's renewal; a slower answer is a missed beat
_TARGET = re.compile(r"^proxy:(?P<name>[^@\s]+)@(?P<host>[^:\s]+):(?P<port>\d{1,5})$")

_STREAM = Param(
    name="stream",
    type=str,
    help="direction: downstream (server→client) or upstream (client→server)",
    default="downstream",
    choices=("downstream", "upstream"),
)
_TOXICITY = Param(
    name="toxicity",
    type=(int, float),
    help="probability (0..1) that a connection is affected",
    default=1.0,
    minimum=0.0,
    maximum=1.0,
)
_COMMON = (_STREAM, _TOXICITY)


def _ms(args: Mapping[str, Any], key: str) -> int:
    return round(parse_duration(args.get(key, 0)) * 1000)


# --- typed record data ----------------------------------------------------------------------
# ``omit_defaults``: the record's data keys are exactly those written before the skeleton
# (``api``, ``proxy``, ``toxic``, and ``heartbeat_s`` once the server keeps a heartbeat
# lease), so entries left open by an older chaoslab still read.


class Toxic(msgspec.Struct, frozen=True, kw_only=True):
    """The toxic a fault creates, as the Toxiproxy API takes it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, Any]


class ProxyData(LeasedData, frozen=True, kw_only=True, omit_defaults=True):
    """A fault on one proxy: the API base URL and the proxy's name; ``heartbeat_s`` once
    injected on a server that keeps a heartbeat lease (a real Toxiproxy does not)."""

    api: str
    proxy: str
    heartbeat_s: float | None = None


class ToxicData(ProxyData, frozen=True, kw_only=True, omit_defaults=True):
    toxic: Toxic


class DownData(ProxyData, frozen=True, kw_only=True, omit_defaults=True):
    """``down``: the proxy's ``enabled`` flag; nothing more to record."""


# --- the faults -------------------------------------------------------------------------------


class ProxyFault[PD: ToxicData | DownData](LeasedFault[PD]):
    """A change on one proxy whose lease lives in the proxy server: sent with the change
    (``lease_s`` and, while the run renews it, ``heartbeat_s``), renewed through
    ``ProxyDriver.renew``, ended by the server itself. No local watchdog."""

    @property
    def proxy_driver(self) -> ProxyDriver:
        assert isinstance(self.driver, ProxyDriver)
        return self.driver

    # -- what each kind says ----------------------------------------------------------------

    @abstractmethod
    def plan_on(self, ask: Ask, api: str, name: str, proxy: Mapping[str, Any] | None) -> PD:
        """The record data for the proxy ``read_proxy`` found (None: the API could not be
        reached, so nothing about the proxy is known yet). No side effect."""

    @abstractmethod
    def send(self, record: RevertRecord, data: PD, lease: Mapping[str, float]) -> httpx.Response:
        """Make the change, carrying ``lease``."""

    @abstractmethod
    def take_back(self, record: RevertRecord, data: PD) -> tuple[httpx.Response, str]:
        """Undo the change: the answer and what a success means."""

    @abstractmethod
    def still_there(self, data: PD, proxy: Mapping[str, Any]) -> list[str]:
        """What of the change the proxy (as the API shows it) still has."""

    @abstractmethod
    def renew_path(self, data: PD) -> str:
        """The route that renews this fault's heartbeat lease."""

    # -- the skeleton's hooks ---------------------------------------------------------------

    def lease_for(self, ask: Ask) -> float | None:
        return ask.lease_s  # the server checks it; None: no lease sent

    def start_lease(self, record: RevertRecord) -> RevertRecord:
        # With no lease_s no lease is sent: the server holds none, so none is counted here.
        return record if record.lease_s is None else super().start_lease(record)

    def needs_watchdog(self, record: RevertRecord, data: PD) -> bool:
        return False  # the proxy server holds the lease

    def retire(self, ctx: DriverContext, record: RevertRecord, data: PD) -> None:
        """Nothing to stop: removing the change ended its lease on the server."""

    def lease_residue(self, record: RevertRecord, data: PD) -> list[str]:
        return []  # the server's lease ends with the change: no residue of its own

    def identities(self, record: RevertRecord, data: PD) -> tuple[str, ...]:
        """The proxy itself: its API address (the host as an address: ``localhost`` and
        ``127.0.0.1`` are one server) and name."""
        return (f"proxy:{canonical_api(data.api)}/{data.proxy}",)

    def plan(self, ctx: DriverContext, ask: Ask) -> PD:
        api, name, proxy = self.proxy_driver.read_proxy(ctx, ask.target)
        return self.plan_on(ask, api, name, proxy)

    def apply_refused(self, record: RevertRecord, data: PD, resp: httpx.Response) -> DriverError:
        """The server answered the change with 4xx: it refused it, nothing changed."""
        if resp.status_code == 404:
            return not_applied(
                f"no proxy named {data.proxy!r} (nothing was changed)",
                driver=self.driver.name,
                target=record.target,
                error=TargetNotFound,
            )
        error = self.proxy_driver.failure(resp, f"injecting {record.operation}", record.target)
        error.not_applied = True
        return error

    def apply(self, ctx: DriverContext, record: RevertRecord, data: PD) -> PD:
        lease: dict[str, float] = {"lease_s": record.lease_s} if record.lease_s else {}
        if record.heartbeat:
            lease["heartbeat_s"] = LAPSE_S  # the run renews it (``renew``) while it lives
        try:
            resp = self.send(record, data, lease)
        except DriverError as exc:
            if never_connected(exc):
                # Not one byte of the change reached the server: not applied, never NOT CLEAN.
                exc.not_applied = True
            raise
        if 400 <= resp.status_code < 500:
            raise self.apply_refused(record, data, resp)
        if resp.status_code not in (200, 201):
            # 5xx: the server may have made part of the change; reverted like any other.
            raise self.proxy_driver.failure(resp, f"injecting {record.operation}", record.target)
        answer = resp.json()
        if record.heartbeat and answer.get("heartbeat_s"):
            # The server keeps a heartbeat lease (a real Toxiproxy does not): renew it.
            data = msgspec.structs.replace(data, heartbeat_s=float(answer["heartbeat_s"]))
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: PD) -> str:
        try:
            resp, done = self.take_back(record, data)
        except DriverError as exc:
            if isinstance(exc.__cause__, httpx.ConnectError):
                return "proxy server gone; its toxics died with it"
            raise
        if resp.status_code == 404:
            lapsed = self.lapsed_on_server(ctx, record, data)
            return f"already ended: {lapsed}" if lapsed else "already clean"
        if resp.status_code not in (200, 204):
            raise self.proxy_driver.failure(resp, f"reverting {record.operation}", record.target)
        return done

    def look(self, record: RevertRecord, data: PD) -> tuple[list[str], str]:
        """(residue, detail) as the proxy API shows it now. Read-only."""
        try:
            resp = self.proxy_driver.request(data.api, "GET", f"/proxies/{data.proxy}", record.target)
        except DriverError as exc:
            if isinstance(exc.__cause__, httpx.ConnectError):
                return [], "proxy server not running"
            return [str(exc)], "cannot verify"
        if resp.status_code == 404:
            return [], f"proxy {data.proxy!r} no longer exists"
        if resp.status_code != 200:
            return [f"HTTP {resp.status_code}"], "cannot verify"
        return self.still_there(data, resp.json()), ""

    def residue(self, ctx: DriverContext, record: RevertRecord, data: PD) -> list[str]:
        return self.look(record, data)[0]

    def inspect(self, ctx: DriverContext, record: RevertRecord, data: PD) -> tuple[list[str], list[str]]:
        left, detail = self.look(record, data)  # one GET: a hung server times out once
        return left, [detail] if detail else []

    def lapsed_on_server(self, ctx: DriverContext, record: RevertRecord, data: PD) -> str | None:
        """Whether the server says a lease ended the fault; if so, report it to the run."""
        if not data.heartbeat_s:
            return None
        try:
            with httpx.Client(base_url=data.api, timeout=RENEW_TIMEOUT_S, verify=False) as client:
                resp = client.post(self.renew_path(data))
        except httpx.HTTPError:
            return None
        if resp.status_code != 410:
            return None
        reason = _gone(resp) or "its lease on the proxy ended"
        report_lapse(ctx.state_dir, record.fault_id, reason)
        return reason


class ToxicFault(ProxyFault[ToxicData]):
    """One toxic named ``chaoslab-<fault_id>``; subclasses say its type and attributes."""

    data_type = ToxicData

    @abstractmethod
    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The operation's arguments (defaults filled in) as the toxic's attributes."""

    def toxic(self, ask: Ask) -> Toxic:
        return Toxic(
            name=TOXIC_PREFIX + ask.fault_id,
            type=self.operation,
            stream=str(ask.full["stream"]),
            toxicity=float(ask.full["toxicity"]),
            attributes=self.attributes(ask.full),
        )

    def plan_on(self, ask: Ask, api: str, name: str, proxy: Mapping[str, Any] | None) -> ToxicData:
        return ToxicData(api=api, proxy=name, toxic=self.toxic(ask))

    def send(self, record: RevertRecord, data: ToxicData, lease: Mapping[str, float]) -> httpx.Response:
        body = {**msgspec.to_builtins(data.toxic), **lease}
        return self.proxy_driver.request(
            data.api, "POST", f"/proxies/{data.proxy}/toxics", record.target, body
        )

    def take_back(self, record: RevertRecord, data: ToxicData) -> tuple[httpx.Response, str]:
        path = f"/proxies/{data.proxy}/toxics/{data.toxic.name}"
        return self.proxy_driver.request(data.api, "DELETE", path, record.target), "toxic removed"

    def still_there(self, data: ToxicData, proxy: Mapping[str, Any]) -> list[str]:
        if any(t.get("name") == data.toxic.name for t in proxy.get("toxics") or []):
            return [f"toxic {data.toxic.name!r} still on proxy {data.proxy!r}"]
        return []

    def renew_path(self, data: ToxicData) -> str:
        return f"/proxies/{data.proxy}/toxics/{data.toxic.name}/renew"


class Latency(ToxicFault):
    operation = "latency"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"latency": _ms(args, "latency"), "jitter": _ms(args, "jitter")}


class Bandwidth(ToxicFault):
    operation = "bandwidth"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"rate": int(args["rate"])}


class Timeout(ToxicFault):
    operation = "timeout"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"timeout": _ms(args, "timeout")}


class ResetPeer(ToxicFault):
    operation = "reset_peer"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"timeout": _ms(args, "timeout")}


class Slicer(ToxicFault):
    operation = "slicer"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "average_size": int(args["average_size"]),
            "size_variation": int(args.get("size_variation", 0)),
            "delay": int(args.get("delay_us", 0)),
        }


class SlowClose(ToxicFault):
    operation = "slow_close"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"delay": _ms(args, "delay")}


class LimitData(ToxicFault):
    operation = "limit_data"

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"bytes": int(args["bytes"])}


class Down(ProxyFault[DownData]):
    """The proxy's ``enabled`` flag; the lease travels with it (the server re-enables)."""

    operation = "down"
    data_type = DownData

    def plan_on(self, ask: Ask, api: str, name: str, proxy: Mapping[str, Any] | None) -> DownData:
        return DownData(api=api, proxy=name)

    def send(self, record: RevertRecord, data: DownData, lease: Mapping[str, float]) -> httpx.Response:
        body = {"enabled": False, **lease}
        return self.proxy_driver.request(data.api, "POST", f"/proxies/{data.proxy}", record.target, body)

    def take_back(self, record: RevertRecord, data: DownData) -> tuple[httpx.Response, str]:
        path = f"/proxies/{data.proxy}"
        return self.proxy_driver.request(
            data.api, "POST", path, record.target, {"enabled": True}
        ), "re-enabled"

    def undo(self, ctx: DriverContext, record: RevertRecord, data: DownData) -> str:
        detail = super().undo(ctx, record, data)
        if detail != "re-enabled":
            return detail
        # Re-enabling always answers 200; the server remembers if the lease did it first.
        lapsed = self.lapsed_on_server(ctx, record, data)
        return f"already re-enabled: {lapsed}" if lapsed else "re-enabled"

    def still_there(self, data: DownData, proxy: Mapping[str, Any]) -> list[str]:
        return [] if proxy.get("enabled", False) else [f"proxy {data.proxy!r} is still disabled"]

    def renew_path(self, data: DownData) -> str:
        return f"/proxies/{data.proxy}/renew"


class ProxyDriver(FaultDriver):
    """TCP faults through a Toxiproxy-compatible proxy, each bounded by a server lease."""

    name = "proxy"
    summary = "TCP faults (latency, bandwidth, timeout, reset, ...) through a fault proxy"
    # Every fault: the server's lease follows the run's heartbeat (``renew``).
    faults: ClassVar[tuple[type[Fault[Any]], ...]] = (
        Latency,
        Bandwidth,
        Timeout,
        ResetPeer,
        Slicer,
        SlowClose,
        LimitData,
        Down,
    )

    def operations(self) -> Sequence[Operation]:
        fault = Kind.FAULT
        return (
            Operation(
                name="latency",
                kind=fault,
                summary="delay every chunk by latency ± jitter",
                params=(
                    Param(
                        name="latency",
                        type=(int, float, str),
                        duration=True,
                        required=True,
                        help="added delay, e.g. 300ms",
                    ),
                    Param(
                        name="jitter",
                        type=(int, float, str),
                        duration=True,
                        default=0,
                        help="uniform ± variation, e.g. 20ms",
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="bandwidth",
                kind=fault,
                summary="limit throughput",
                params=(
                    Param(name="rate", type=int, required=True, minimum=1, help="KB/s (1 KB = 1000 bytes)"),
                    *_COMMON,
                ),
            ),
            Operation(
                name="timeout",
                kind=fault,
                summary="blackhole data; close connections after timeout (0 = hold forever)",
                params=(
                    Param(
                        name="timeout",
                        type=(int, float, str),
                        duration=True,
                        default=0,
                        help="close after this long; 0 keeps connections hanging",
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="reset_peer",
                kind=fault,
                summary="reset connections (TCP RST) after timeout once data flows",
                params=(
                    Param(
                        name="timeout",
                        type=(int, float, str),
                        duration=True,
                        default=0,
                        help="wait this long after the first data before the reset",
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="slicer",
                kind=fault,
                summary="slice data into small segments with a delay between them",
                params=(
                    Param(
                        name="average_size",
                        type=int,
                        required=True,
                        minimum=1,
                        help="average segment size in bytes",
                    ),
                    Param(
                        name="size_variation",
                        type=int,
                        default=0,
                        minimum=0,
                        help="± bytes around the average",
                    ),
                    Param(
                        name="delay_us", type=int, default=0, minimum=0, help="microseconds between segments"
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="slow_close",
                kind=fault,
                summary="delay the close of connections",
                params=(
                    Param(
                        name="delay",
                        type=(int, float, str),
                        duration=True,
                        required=True,
                        help="how long to hold the close, e.g. 2s",
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="limit_data",
                kind=fault,
                summary="close connections after N bytes",
                params=(
                    Param(
                        name="bytes",
                        type=int,
                        required=True,
                        minimum=0,
                        help="bytes let through per connection and direction",
                    ),
                    *_COMMON,
                ),
            ),
            Operation(
                name="down",
                kind=fault,
                summary="disable the proxy: refuse new connections, drop live ones",
            ),
            Operation(
                name="toxics",
                kind=Kind.PROBE,
                summary="list the toxics active on the proxy",
            ),
        )

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems: list[Problem] = []
        if target is None or not (_TARGET.match(target) or target.startswith("lab:")):
            problems.append(
                Problem(
                    path="target",
                    message=f"proxy target {target!r} is not proxy:NAME@HOST:PORT or lab:NAME",
                )
            )
        elif (m := _TARGET.match(target)) and m["host"] not in ("127.0.0.1", "localhost"):
            problems.append(Problem(path="target", message="proxy API must be on 127.0.0.1"))
        for key in ("latency", "jitter"):
            if op.name == "latency" and key in args:
                try:
                    if parse_duration(args[key]) > 60:
                        problems.append(Problem(path=key, message="latency above 60 s is absurd"))
                except ValueError:
                    pass  # check_args reports it
        return problems

    # -- targets ------------------------------------------------------------------------
    def resolve(self, target: str | None, lab_dir: Path) -> tuple[str, str]:
        """``target`` → (API base URL, proxy name). Reads the lab state; touches nothing."""
        if target and (m := _TARGET.match(target)):
            return canonical_api(f"http://{m['host']}:{int(m['port'])}"), m["name"]
        if target and target.startswith("lab:"):
            state = LabState.load(lab_dir)
            component = state.component(target.removeprefix("lab:"))
            proxy_name = component.extra.get("proxy")
            api_port = (state.raw.get("proxy") or {}).get("api_port")
            if not proxy_name or not api_port:
                raise TargetNotFound(
                    "the lab has no fault proxy in front of this component",
                    driver=self.name,
                    target=target,
                )
            return f"http://127.0.0.1:{int(api_port)}", str(proxy_name)
        raise TargetNotFound(
            "expected proxy:NAME@127.0.0.1:PORT or lab:NAME", driver=self.name, target=str(target)
        )

    def request(self, api: str, method: str, path: str, target: str, body: Any = None) -> httpx.Response:
        try:
            # The API is plain http: verify=False skips loading the CA bundle, which took
            # 60-180 ms per client on a loaded machine, on the guard's revert path.
            with httpx.Client(base_url=api, timeout=HTTP_TIMEOUT_S, verify=False) as client:
                return client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise DriverError(
                f"proxy API {api} {method} {path} failed: {exc}", driver=self.name, target=target
            ) from exc

    def read_proxy(self, ctx: DriverContext, target: str | None) -> tuple[str, str, dict[str, Any] | None]:
        """``target`` → (API base URL, proxy name, the proxy as the API shows it). The
        proxy is None when nothing listens on the API: the fault is then planned all the
        same, and its inject reports it "not applied" if the server is still not there
        (the same verdict as any other target that cannot be reached). A dry plan
        (``chaoslab plan``, ``run --dry-run``) injects nothing, so it says so at once. A
        proxy the server says it does not have is TargetNotFound, as a selector matching
        nothing is."""
        api, name = self.resolve(target, ctx.lab_dir)
        try:
            resp = self.request(api, "GET", f"/proxies/{name}", str(target))
        except DriverError as exc:
            if never_connected(exc) and not ctx.dry:
                return api, name, None
            raise
        if resp.status_code == 404:
            raise TargetNotFound(f"no proxy named {name!r}", driver=self.name, target=str(target))
        if resp.status_code != 200:
            raise self.failure(resp, "reading the proxy", str(target))
        return api, name, dict(resp.json())

    def failure(self, resp: httpx.Response, what: str, target: str) -> DriverError:
        return DriverError(
            f"{what}: HTTP {resp.status_code} {resp.text.strip()}", driver=self.name, target=target
        )

    # -- probe --------------------------------------------------------------------------
    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        api, name = self.resolve(target, ctx.lab_dir)
        resp = self.request(api, "GET", f"/proxies/{name}/toxics", str(target))
        if resp.status_code == 404:
            raise TargetNotFound(f"no proxy named {name!r}", driver=self.name, target=str(target))
        if resp.status_code != 200:
            raise self.failure(resp, "listing toxics", str(target))
        return resp.json()

    # -- faults -------------------------------------------------------------------------
    def renew(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        """One renewal of the fault's heartbeat lease on the proxy server (bounded by
        ``RENEW_TIMEOUT_S``). Returns why the fault is already gone: its lease ended it
        (410), it was deleted or reset by another client (404), or the server is gone."""
        fault = self.fault(record.operation)
        assert isinstance(fault, ProxyFault)
        data = fault.decode(record)
        if not data.heartbeat_s:
            return None  # not injected yet, or a server without heartbeat leases
        try:
            with httpx.Client(base_url=data.api, timeout=RENEW_TIMEOUT_S, verify=False) as client:
                resp = client.post(fault.renew_path(data))
        except httpx.ConnectError:
            return "the proxy server is gone (its toxics died with it)"
        except httpx.HTTPError:
            return None  # a missed beat: the next one, or the server's lease, takes over
        return _gone(resp)


def canonical_api(api: str) -> str:
    """An API base URL with its host as the address it names: the one spelling two runs
    share, whichever name each wrote (``validate`` allows only 127.0.0.1 and localhost)."""
    parts = urlsplit(api)
    if parts.hostname == "localhost" and parts.port is not None:
        return f"{parts.scheme}://127.0.0.1:{parts.port}"
    return api


def never_connected(exc: DriverError) -> bool:
    """Whether a failed API request never got a connection (refused, or no answer to the
    connect): certain that nothing of the request reached the server."""
    return isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


def _gone(resp: httpx.Response) -> str | None:
    """A renewal's answer → why the fault is gone, or None while it holds (or when the
    server has no heartbeat leases: a real Toxiproxy answers its plain-text 404)."""
    if resp.status_code == 200:
        return None
    try:
        error = str(resp.json().get("error") or "")
    except (ValueError, AttributeError):
        return None  # not chaoslab's server: no renew route
    if resp.status_code == 410:
        return f"the proxy ended it: {error}"
    if resp.status_code == 404:
        return f"it is gone from the proxy ({error}): deleted, reset or re-enabled by another client"
    return None  # 409 (no lease to renew), 5xx: nothing the run must act on
