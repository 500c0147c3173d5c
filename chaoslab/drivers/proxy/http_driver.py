"""The ``http`` driver: request-level faults (``http.abort``, ``http.delay``,
``http.rewrite``, ``http.truncate``) through a fault proxy in HTTP mode.

Targets are the proxy driver's: ``proxy:NAME@127.0.0.1:PORT`` or ``lab:replica-N`` (the
lab's proxies run in HTTP mode). Each fault is one ``http_*`` toxic named
``chaoslab-<fault_id>`` carrying the lease (``lease_s``, and ``heartbeat_s`` renewed by
the run each second): the proxy server removes it by itself when the lease ends or the
renewals stop, so a SIGKILLed runner's fault ends within ``lease.LAPSE_S``. Revert deletes
that toxic (404: already clean); the clean check reads the proxy's toxics. Each operation
is an ``HttpFault`` (a ``ToxicFault`` of the proxy driver, on the lifecycle skeleton of
``drivers.lifecycle``): it adds only the check for HTTP mode and its toxic's attributes.

Which requests: ``method``, ``path`` (prefix), ``path_regex``, ``headers`` (name → regex
of the whole value); then ``first`` N of them (fail-first-N, for retry tests) or
``every`` N-th; then a ``share`` of those, drawn per request.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from chaoslab.drivers.base import Kind, Operation, Param, parse_duration, with_defaults
from chaoslab.drivers.lifecycle import Ask
from chaoslab.drivers.proxy.driver import TOXIC_PREFIX, ProxyDriver, Toxic, ToxicData, ToxicFault
from chaoslab.errors import InvalidInput, Problem

_MATCH = (
    Param(name="method", type=(str, list), help="only these methods (GET, or [GET, POST])"),
    Param(name="path", type=str, help="only paths starting with this prefix, e.g. /checkout"),
    Param(name="path_regex", type=str, help="only paths this regular expression finds a match in"),
    Param(name="headers", type=dict, help="only requests whose header NAME matches the whole regex"),
    Param(name="first", type=int, minimum=1, help="only the first N matching requests, then pass"),
    Param(name="every", type=int, minimum=1, help="only every N-th matching request"),
    Param(
        name="share",
        type=(int, float),
        default=1.0,
        minimum=0.0,
        maximum=1.0,
        help="probability (0..1) that a selected request is hit, drawn per request",
    ),
)


def _ms(args: Mapping[str, Any], key: str) -> float:
    return round(parse_duration(args.get(key, 0)) * 1000.0, 6)


def _matching(args: Mapping[str, Any]) -> dict[str, Any]:
    """Which requests: the attributes every ``http_*`` toxic shares."""
    out: dict[str, Any] = {}
    if "method" in args:
        out["method"] = args["method"]
    if "path" in args:
        out["path_prefix"] = args["path"]
    if "path_regex" in args:
        out["path_regex"] = args["path_regex"]
    if "headers" in args:
        out["match_headers"] = dict(args["headers"])
    for key in ("first", "every"):
        if key in args:
            out[key] = int(args[key])
    return out


class HttpFault(ToxicFault):
    """One ``http_*`` toxic on a proxy in HTTP mode; subclasses say what it does to the
    requests it selects (``effect``)."""

    @abstractmethod
    def effect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of what the fault does (defaults filled in)."""

    def attributes(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {**_matching(args), **self.effect(args)}

    def toxic(self, ask: Ask) -> Toxic:
        return Toxic(
            name=TOXIC_PREFIX + ask.fault_id,
            type=f"http_{self.operation}",
            stream="downstream",
            toxicity=float(ask.full["share"]),
            attributes=self.attributes(ask.full),
        )

    def plan_on(self, ask: Ask, api: str, name: str, proxy: Mapping[str, Any] | None) -> ToxicData:
        # Unknown while the API cannot be reached: the server refuses an http_* toxic on
        # a TCP proxy itself (400), and the fault is then "not applied".
        if proxy is not None and proxy.get("mode") != "http":
            raise InvalidInput(
                [
                    Problem(
                        path="target",
                        message=f"proxy {name!r} forwards TCP bytes; "
                        f"http.{self.operation} needs a proxy in HTTP mode",
                        hint='create the proxy with "mode": "http"',
                    )
                ]
            )
        return super().plan_on(ask, api, name, proxy)


class Abort(HttpFault):
    operation = "abort"

    def effect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "status": int(args.get("status", 503)),
            "body": str(args.get("body", "")),
            "headers": dict(args.get("response_headers") or {}),
        }


class Delay(HttpFault):
    operation = "delay"

    def effect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "delay": _ms(args, "delay"),
            "jitter": _ms(args, "jitter"),
            "distribution": args.get("distribution", "uniform"),
            "where": args.get("where", "request"),
        }


class Rewrite(HttpFault):
    operation = "rewrite"

    def effect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "set_headers": dict(args.get("set_headers") or {}),
            "remove_headers": list(args.get("remove_headers") or []),
        }


class Truncate(HttpFault):
    operation = "truncate"

    def effect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"bytes": int(args["bytes"])}


class HttpDriver(ProxyDriver):
    """Request-level HTTP faults through an HTTP-mode fault proxy, each bounded by a lease."""

    name = "http"
    summary = (
        "HTTP request faults (abort, delay, rewrite, truncate) by route, through a fault proxy in HTTP mode"
    )
    faults = (Abort, Delay, Rewrite, Truncate)

    def operations(self) -> Sequence[Operation]:
        fault = Kind.FAULT
        return (
            Operation(
                name="abort",
                kind=fault,
                summary="answer matching requests with a status instead of forwarding them",
                params=(
                    Param(name="status", type=int, default=503, minimum=200, maximum=599, help="status code"),
                    Param(name="body", type=str, default="", help="response body"),
                    Param(name="response_headers", type=dict, help="extra response headers"),
                    *_MATCH,
                ),
            ),
            Operation(
                name="delay",
                kind=fault,
                summary="hold matching requests (or their responses) for delay ± jitter",
                params=(
                    Param(
                        name="delay", type=(int, float, str), duration=True, required=True, help="e.g. 200ms"
                    ),
                    Param(name="jitter", type=(int, float, str), duration=True, default=0, help="e.g. 20ms"),
                    Param(
                        name="distribution",
                        type=str,
                        default="uniform",
                        choices=("uniform", "normal", "exponential"),
                        help="of the jitter: uniform ±, normal σ, exponential mean",
                    ),
                    Param(
                        name="where",
                        type=str,
                        default="request",
                        choices=("request", "response"),
                        help="hold the request before forwarding, or the response before sending",
                    ),
                    *_MATCH,
                ),
            ),
            Operation(
                name="rewrite",
                kind=fault,
                summary="set or remove response headers of matching requests",
                params=(
                    Param(name="set_headers", type=dict, help="header name → value"),
                    Param(name="remove_headers", type=list, help="header names"),
                    *_MATCH,
                ),
            ),
            Operation(
                name="truncate",
                kind=fault,
                summary="send only the first N bytes of matching responses' bodies, then close",
                params=(
                    Param(name="bytes", type=int, required=True, minimum=0, help="body bytes kept"),
                    *_MATCH,
                ),
            ),
            Operation(name="toxics", kind=Kind.PROBE, summary="list the toxics active on the proxy"),
        )

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems = super().validate(op, args, target)
        if "first" in args and "every" in args:
            problems.append(Problem(path="first", message="first and every exclude each other"))
        if op.name == "rewrite" and not args.get("set_headers") and not args.get("remove_headers"):
            problems.append(
                Problem(path="set_headers", message="rewrite needs set_headers or remove_headers")
            )
        if op.name == "delay":
            for key in ("delay", "jitter"):
                try:
                    if key in args and parse_duration(args[key]) > 600:
                        problems.append(Problem(path=key, message="an HTTP delay above 600 s is absurd"))
                except ValueError:
                    pass  # check_args reports it
        if op.kind is Kind.FAULT:
            # The proxy server checks every attribute again; checking here too makes a
            # mistake an "invalid input" before anything is touched.
            from chaoslab.drivers.proxy.errors import ApiError
            from chaoslab.drivers.proxy.httpfaults import check_http_attributes

            try:
                fault = self.fault(op.name)
                assert isinstance(fault, HttpFault)
                check_http_attributes(f"http_{op.name}", fault.attributes(with_defaults(op, args)))
            except ApiError as exc:
                problems.append(Problem(path=op.name, message=exc.message.removeprefix("bad request body: ")))
            except (KeyError, TypeError, ValueError):
                pass  # check_args reports missing or mistyped arguments
        return problems
