"""HTTP toxics: request-level faults of a proxy in HTTP mode (chaoslab's extension).

They travel through the Toxiproxy API as ordinary toxics (``POST /proxies/NAME/toxics``)
whose ``type`` starts with ``http_``; their ``attributes`` may hold strings, lists and
objects besides numbers. A Toxiproxy client lists them like any toxic and never creates
one unless asked, so it ignores them safely. Types and attributes (times in ms, as
Toxiproxy's):

- ``http_abort``: answer ``status`` (default 503) with ``body`` and ``headers`` instead
  of forwarding the request;
- ``http_delay``: hold the request (``where: request``) or its response (``where:
  response``) for ``delay`` ms, ± ``jitter`` drawn from ``distribution`` (``uniform``,
  ``normal`` with ``jitter`` as σ, or ``exponential`` with mean ``jitter``), never below 0;
- ``http_rewrite``: set (``set_headers``) or remove (``remove_headers``) response headers;
- ``http_truncate``: send only the first ``bytes`` bytes of the response body, then close.

Which requests are hit, for every type: ``method`` (one or a list), ``path_prefix``,
``path_regex`` (searched in the path, query excluded), ``match_headers`` (name → regex
that must match the whole value); of those, only the first ``first`` (fail-first-N, for
retry tests) or every ``every``-th (counted per toxic across connections, restarting when
the toxic is updated); then each request is hit with probability ``toxicity`` — drawn per
request here, not per connection as for TCP toxics, so "10 % of calls fail" is exact in
expectation.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslab.drivers.proxy.errors import ApiError

HTTP_TYPES = ("http_abort", "http_delay", "http_rewrite", "http_truncate")
DISTRIBUTIONS = ("uniform", "normal", "exponential")
MAX_DELAY_MS = 600_000.0
MAX_BODY = 1 << 16
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")

# Attributes each type takes, besides the matching ones every type takes.
_MATCH = ("method", "path_prefix", "path_regex", "match_headers", "first", "every")
_OWN: Mapping[str, tuple[str, ...]] = {
    "http_abort": ("status", "body", "headers"),
    "http_delay": ("delay", "jitter", "distribution", "where"),
    "http_rewrite": ("set_headers", "remove_headers"),
    "http_truncate": ("bytes",),
}


def _bad(where: str, what: str) -> ApiError:
    return ApiError(400, f"bad request body: attributes.{where} {what}")


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise _bad(key, "must be an integer")
    if not lo <= value <= hi:
        raise _bad(key, f"must be between {lo} and {hi}")
    return int(value)


def _ms(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(key, "must be a number of milliseconds")
    if not 0 <= value <= MAX_DELAY_MS:
        raise _bad(key, f"must be between 0 and {MAX_DELAY_MS:.0f} ms")
    return float(value)


def _str(raw: Mapping[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise _bad(key, "must be a string")
    return value


def _header_map(raw: Mapping[str, Any], key: str, *, regex: bool) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise _bad(key, "must be an object of header name to value")
    out: dict[str, str] = {}
    for name, v in value.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise _bad(key, f"has an invalid header name {name!r}")
        if not isinstance(v, str) or not _FIELD_VALUE.match(v):
            raise _bad(f"{key}.{name}", "must be a header value (no CR/LF)")
        if regex:
            try:
                re.compile(v)
            except re.error as exc:
                raise _bad(f"{key}.{name}", f"is not a regular expression: {exc}") from exc
        out[name] = v
    return out


def check_http_attributes(kind: str, raw: Any) -> dict[str, Any]:
    """Validate and normalise an HTTP toxic's attributes (unknown keys are refused, unlike
    TCP toxics: a misspelt matcher would silently hit every request)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ApiError(400, "bad request body: attributes must be an object")
    leases = {"lease_s", "heartbeat_s"}  # chaoslab's lease fields, read by toxics.py
    known = set(_MATCH) | set(_OWN[kind]) | leases
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        listed = ", ".join(sorted(known - leases))
        raise ApiError(
            400, f"bad request body: unknown attributes for {kind}: {', '.join(unknown)} (known: {listed})"
        )
    out: dict[str, Any] = {}
    methods = raw.get("method")
    if methods is not None:
        methods = [methods] if isinstance(methods, str) else methods
        if not isinstance(methods, list) or not all(isinstance(m, str) and _TOKEN.match(m) for m in methods):
            raise _bad("method", "must be a method name or a list of them")
        out["method"] = [m.upper() for m in methods]
    if "path_prefix" in raw:
        prefix = _str(raw, "path_prefix")
        if not prefix.startswith("/"):
            raise _bad("path_prefix", "must start with /")
        out["path_prefix"] = prefix
    if "path_regex" in raw:
        pattern = _str(raw, "path_regex")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _bad("path_regex", f"is not a regular expression: {exc}") from exc
        out["path_regex"] = pattern
    if "match_headers" in raw:
        out["match_headers"] = _header_map(raw, "match_headers", regex=True)
    for key in ("first", "every"):
        if key in raw:
            out[key] = _int(raw, key, 0, 1, 1 << 31)
    if "first" in out and "every" in out:
        raise ApiError(400, "bad request body: attributes.first and attributes.every exclude each other")
    match kind:
        case "http_abort":
            out["status"] = _int(raw, "status", 503, 200, 599)
            body = _str(raw, "body")
            if len(body.encode()) > MAX_BODY:
                raise _bad("body", f"is longer than {MAX_BODY} bytes")
            out["body"] = body
            out["headers"] = _header_map(raw, "headers", regex=False)
        case "http_delay":
            out["delay"] = _ms(raw, "delay")
            out["jitter"] = _ms(raw, "jitter")
            out["distribution"] = _str(raw, "distribution", "uniform")
            if out["distribution"] not in DISTRIBUTIONS:
                raise _bad("distribution", f"must be one of {', '.join(DISTRIBUTIONS)}")
            out["where"] = _str(raw, "where", "request")
            if out["where"] not in ("request", "response"):
                raise _bad("where", "must be request or response")
        case "http_rewrite":
            out["set_headers"] = _header_map(raw, "set_headers", regex=False)
            removed = raw.get("remove_headers") or []
            if not isinstance(removed, list) or not all(
                isinstance(n, str) and _TOKEN.match(n) for n in removed
            ):
                raise _bad("remove_headers", "must be a list of header names")
            out["remove_headers"] = list(removed)
            if not out["set_headers"] and not out["remove_headers"]:
                raise ApiError(400, "bad request body: http_rewrite needs set_headers or remove_headers")
        case "http_truncate":
            out["bytes"] = _int(raw, "bytes", 0, 0, 1 << 40)
    return out


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(slots=True)
class Rule:
    """One HTTP toxic compiled for the data path; ``count`` is its matched-request counter."""

    name: str
    kind: str
    toxicity: float
    methods: frozenset[bytes] | None
    prefix: str | None
    regex: re.Pattern[str] | None
    headers: tuple[tuple[bytes, re.Pattern[str]], ...]
    first: int | None
    every: int | None
    attrs: Mapping[str, Any]
    count: int = 0  # requests matched
    hit_count: int = 0  # requests acted on
    abort: bytes = b""
    set_headers: tuple[tuple[bytes, bytes], ...] = ()
    drop: frozenset[bytes] = field(default_factory=frozenset)

    @classmethod
    def compile(cls, name: str, kind: str, toxicity: float, attrs: Mapping[str, Any]) -> Rule:
        rule = cls(
            name=name,
            kind=kind,
            toxicity=toxicity,
            methods=frozenset(m.encode() for m in attrs["method"]) if "method" in attrs else None,
            prefix=attrs.get("path_prefix"),
            regex=re.compile(attrs["path_regex"]) if "path_regex" in attrs else None,
            headers=tuple(
                (n.lower().encode(), re.compile(v)) for n, v in (attrs.get("match_headers") or {}).items()
            ),
            first=attrs.get("first"),
            every=attrs.get("every"),
            attrs=attrs,
        )
        if kind == "http_abort":
            status = int(attrs["status"])
            body = str(attrs["body"]).encode()
            extra = {k.lower(): (k, v) for k, v in attrs["headers"].items()}
            extra.pop("content-length", None)
            extra.pop("transfer-encoding", None)
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Chaos')}"]
            head += [f"{k}: {v}" for k, v in extra.values()]
            if "content-type" not in extra:
                head.append("Content-Type: text/plain; charset=utf-8")
            head.append(f"Content-Length: {len(body)}")
            head.append("X-Chaoslab-Fault: " + name)
            # ``Connection: close`` is added by the engine when the client asked for it.
            rule.abort = ("\r\n".join(head) + "\r\n").encode("latin-1") + b"\r\n" + body
        elif kind == "http_rewrite":
            rule.set_headers = tuple(
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in attrs["set_headers"].items()
            )
            rule.drop = frozenset(n.lower().encode() for n in attrs["remove_headers"]) | frozenset(
                k.lower() for k, _ in rule.set_headers
            )
        return rule

    def matches(self, method: bytes, path: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.regex is not None and self.regex.search(path) is None:
            return False
        for name, pattern in self.headers:
            if not any(n.lower() == name and pattern.fullmatch(v.decode("latin-1")) for n, v in headers):
                return False
        return True

    def hits(self, method: bytes, path: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether this request is hit: matched, selected by first/every, then drawn."""
        if not self.matches(method, path, headers):
            return False
        self.count += 1
        if self.first is not None and self.count > self.first:
            return False
        if self.every is not None and self.count % self.every:
            return False
        if self.toxicity >= 1.0 or random.random() < self.toxicity:
            self.hit_count += 1
            return True
        return False

    def delay_s(self) -> float:
        base, jitter = float(self.attrs["delay"]), float(self.attrs["jitter"])
        if jitter:
            match self.attrs["distribution"]:
                case "normal":
                    base += random.gauss(0.0, jitter)
                case "exponential":
                    base += random.expovariate(1.0 / jitter)
                case _:
                    base += random.uniform(-jitter, jitter)
        return max(base, 0.0) / 1000.0


@dataclass(slots=True)
class Plan:
    """What the HTTP toxics do to one request (computed once, at its headers)."""

    abort: Rule | None = None
    request_delay: float = 0.0
    response_delay: float = 0.0
    rewrites: list[Rule] = field(default_factory=list)
    truncate: int | None = None
    hit: list[str] = field(default_factory=list)

    @property
    def touches_response(self) -> bool:
        return bool(self.response_delay or self.rewrites or self.truncate is not None)


def plan(
    rules: Sequence[Rule], method: bytes, path: str, headers: Sequence[tuple[bytes, bytes]]
) -> Plan | None:
    """The plan for one request, or None when no toxic hits it (the common case)."""
    out: Plan | None = None
    for rule in rules:
        if not rule.hits(method, path, headers):
            continue
        if out is None:
            out = Plan()
        out.hit.append(rule.name)
        match rule.kind:
            case "http_abort":
                if out.abort is None:
                    out.abort = rule
            case "http_delay":
                if rule.attrs["where"] == "request":
                    out.request_delay += rule.delay_s()
                else:
                    out.response_delay += rule.delay_s()
            case "http_rewrite":
                out.rewrites.append(rule)
            case "http_truncate":
                size = int(rule.attrs["bytes"])
                out.truncate = size if out.truncate is None else min(out.truncate, size)
    return out
