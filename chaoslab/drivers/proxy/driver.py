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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec

from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    RevertResult,
    parse_duration,
    with_defaults,
)
from chaoslab.drivers.lease import LAPSE_S
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


# How each operation's arguments become Toxiproxy attributes (in its units).
def _attributes(op: str, args: Mapping[str, Any]) -> dict[str, int]:
    match op:
        case "latency":
            return {"latency": _ms(args, "latency"), "jitter": _ms(args, "jitter")}
        case "bandwidth":
            return {"rate": int(args["rate"])}
        case "timeout":
            return {"timeout": _ms(args, "timeout")}
        case "reset_peer":
            return {"timeout": _ms(args, "timeout")}
        case "slicer":
            return {
                "average_size": int(args["average_size"]),
                "size_variation": int(args.get("size_variation", 0)),
                "delay": int(args.get("delay_us", 0)),
            }
        case "slow_close":
            return {"delay": _ms(args, "delay")}
        case "limit_data":
            return {"bytes": int(args["bytes"])}
    raise DriverError(f"no toxic for operation {op!r}", driver="proxy")


class ProxyDriver(Driver):
    """TCP faults through a Toxiproxy-compatible proxy, each bounded by a server lease."""

    name = "proxy"
    summary = "TCP faults (latency, bandwidth, timeout, reset, ...) through a fault proxy"
    # Every fault: the server's lease follows the run's heartbeat (``renew``).
    heartbeat_ops = frozenset(
        {"latency", "bandwidth", "timeout", "reset_peer", "slicer", "slow_close", "limit_data", "down"}
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
            return f"http://{m['host']}:{int(m['port'])}", m["name"]
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

    def _request(self, api: str, method: str, path: str, target: str, body: Any = None) -> httpx.Response:
        try:
            # The API is plain http: verify=False skips loading the CA bundle, which took
            # 60-180 ms per client on a loaded machine, on the guard's revert path.
            with httpx.Client(base_url=api, timeout=HTTP_TIMEOUT_S, verify=False) as client:
                return client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise DriverError(
                f"proxy API {api} {method} {path} failed: {exc}", driver=self.name, target=target
            ) from exc

    def read_proxy(self, ctx: DriverContext, target: str | None) -> tuple[str, str, dict[str, Any]]:
        """``target`` → (API base URL, proxy name, the proxy as the API shows it)."""
        api, name = self.resolve(target, ctx.lab_dir)
        resp = self._request(api, "GET", f"/proxies/{name}", str(target))
        if resp.status_code == 404:
            raise TargetNotFound(f"no proxy named {name!r}", driver=self.name, target=str(target))
        if resp.status_code != 200:
            raise self._fail(resp, "reading the proxy", str(target))
        return api, name, dict(resp.json())

    def _fail(self, resp: httpx.Response, what: str, target: str) -> DriverError:
        return DriverError(
            f"{what}: HTTP {resp.status_code} {resp.text.strip()}", driver=self.name, target=target
        )

    # -- probe --------------------------------------------------------------------------
    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        api, name = self.resolve(target, ctx.lab_dir)
        resp = self._request(api, "GET", f"/proxies/{name}/toxics", str(target))
        if resp.status_code == 404:
            raise TargetNotFound(f"no proxy named {name!r}", driver=self.name, target=str(target))
        if resp.status_code != 200:
            raise self._fail(resp, "listing toxics", str(target))
        return resp.json()

    # -- faults -------------------------------------------------------------------------
    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        api, name, _proxy = self.read_proxy(ctx, target)
        record = RevertRecord(
            driver=self.name,
            operation=op.name,
            target=str(target),
            run_id=ctx.run_id,
            args=dict(args),
            lease_s=lease_s,
        )
        data: dict[str, Any] = {"api": api, "proxy": name}
        if op.name != "down":
            merged = with_defaults(op, args)
            data["toxic"] = {
                "name": TOXIC_PREFIX + record.fault_id,
                "type": op.name,
                "stream": merged["stream"],
                "toxicity": float(merged["toxicity"]),
                "attributes": _attributes(op.name, merged),
            }
        return record.with_data(**data)

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        api, name, target = record.data["api"], record.data["proxy"], record.target
        lease: dict[str, float] = {"lease_s": record.lease_s} if record.lease_s else {}
        if record.heartbeat:
            lease["heartbeat_s"] = LAPSE_S  # the run renews it (``renew``) while it lives
        if record.operation == "down":
            # The lease travels with the change: the server re-enables by itself.
            resp = self._request(api, "POST", f"/proxies/{name}", target, {"enabled": False, **lease})
        else:
            resp = self._request(
                api, "POST", f"/proxies/{name}/toxics", target, {**record.data["toxic"], **lease}
            )
        if resp.status_code == 404:
            raise TargetNotFound(f"no proxy named {name!r}", driver=self.name, target=target)
        if resp.status_code not in (200, 201):
            raise self._fail(resp, f"injecting {record.operation}", target)
        answer = resp.json()
        expires = answer.get("lease_expires_at")
        if expires:
            record = msgspec.structs.replace(record, lease_expires_at=expires)
        if record.heartbeat and answer.get("heartbeat_s"):
            # The server keeps a heartbeat lease (a real Toxiproxy does not): renew it.
            record = record.with_data(heartbeat_s=answer["heartbeat_s"])
        return record

    def _renew_path(self, record: RevertRecord) -> str:
        name = record.data["proxy"]
        if record.operation == "down":
            return f"/proxies/{name}/renew"
        return f"/proxies/{name}/toxics/{record.data['toxic']['name']}/renew"

    def renew(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        """One renewal of the fault's heartbeat lease on the proxy server (bounded by
        ``RENEW_TIMEOUT_S``). Returns why the fault is already gone: its lease ended it
        (410), it was deleted or reset by another client (404), or the server is gone."""
        if not record.data.get("heartbeat_s"):
            return None  # not injected yet, or a server without heartbeat leases
        try:
            with httpx.Client(base_url=record.data["api"], timeout=RENEW_TIMEOUT_S, verify=False) as client:
                resp = client.post(self._renew_path(record))
        except httpx.ConnectError:
            return "the proxy server is gone (its toxics died with it)"
        except httpx.HTTPError:
            return None  # a missed beat: the next one, or the server's lease, takes over
        return _gone(resp)

    def _lapsed_on_server(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        """Whether the server says a lease ended the fault; if so, report it to the run."""
        if not record.data.get("heartbeat_s"):
            return None
        try:
            with httpx.Client(base_url=record.data["api"], timeout=RENEW_TIMEOUT_S, verify=False) as client:
                resp = client.post(self._renew_path(record))
        except httpx.HTTPError:
            return None
        if resp.status_code != 410:
            return None
        reason = _gone(resp) or "its lease on the proxy ended"
        report_lapse(ctx.state_dir, record.fault_id, reason)
        return reason

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        api, name, target = record.data["api"], record.data["proxy"], record.target
        try:
            if record.operation == "down":
                resp = self._request(api, "POST", f"/proxies/{name}", target, {"enabled": True})
            else:
                toxic = record.data["toxic"]["name"]
                resp = self._request(api, "DELETE", f"/proxies/{name}/toxics/{toxic}", target)
        except DriverError as exc:
            if isinstance(exc.__cause__, httpx.ConnectError):
                return RevertResult(reverted=True, detail="proxy server gone; its toxics died with it")
            raise
        if resp.status_code == 404:
            lapsed = self._lapsed_on_server(ctx, record)
            detail = f"already ended: {lapsed}" if lapsed else "already clean"
            return RevertResult(reverted=True, detail=detail)
        if resp.status_code not in (200, 204):
            raise self._fail(resp, f"reverting {record.operation}", target)
        if record.operation == "down":
            # Re-enabling always answers 200; the server remembers if the lease did it first.
            lapsed = self._lapsed_on_server(ctx, record)
            detail = f"already re-enabled: {lapsed}" if lapsed else "re-enabled"
            return RevertResult(reverted=True, detail=detail)
        return RevertResult(reverted=True, detail="toxic removed")

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        """The proxy itself: its API address and name."""
        return (f"proxy:{record.data.get('api')}/{record.data.get('proxy')}",)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        api, name, target = record.data["api"], record.data["proxy"], record.target
        try:
            resp = self._request(api, "GET", f"/proxies/{name}", target)
        except DriverError as exc:
            if isinstance(exc.__cause__, httpx.ConnectError):
                return CleanReport(clean=True, detail="proxy server not running")
            return CleanReport(clean=False, residue=(str(exc),), detail="cannot verify")
        if resp.status_code == 404:
            return CleanReport(clean=True, detail=f"proxy {name!r} no longer exists")
        if resp.status_code != 200:
            return CleanReport(clean=False, residue=(f"HTTP {resp.status_code}",), detail="cannot verify")
        proxy = resp.json()
        residue: list[str] = []
        if record.operation == "down":
            if not proxy.get("enabled", False):
                residue.append(f"proxy {name!r} is still disabled")
        else:
            toxic = record.data["toxic"]["name"]
            if any(t.get("name") == toxic for t in proxy.get("toxics") or []):
                residue.append(f"toxic {toxic!r} still on proxy {name!r}")
        return CleanReport(clean=not residue, residue=tuple(residue))


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
