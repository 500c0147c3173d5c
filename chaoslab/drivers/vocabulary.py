"""One fault vocabulary on every target: operations named by what they do, platforms
picked by the target's scheme.

An experiment step ``do: kill`` with ``target: docker:label=app=web`` is resolved here to
the docker driver's ``kill`` with the docker target ``label=app=web``; the same ``do:
kill`` with ``target: ssh:tag=eu`` becomes the ssh driver's ``kill``, with
``target: pod:shop/app=web`` the kubernetes driver's ``delete_pods``. The drivers are
not changed by this layer: it is a table (operation x platform -> driver operation, with
parameter renames and unit conversions) applied when an experiment is compiled.

Invariants:

- Every operation has one set of parameters (names, types, units, defaults); a platform
  that offers the operation takes those parameters as they are, or says which one it
  cannot honour. ``tests/contract/test_vocabulary.py`` checks this over the whole table.
- Canonical defaults are applied before translation, so ``kill`` waits 60 s for the
  target to heal on every platform, whatever each driver's own default is.
- Blast radius is the same everywhere: ``count`` / ``percent`` / ``all`` / ``max`` /
  ``allow_fewer`` / ``seed``, one target by default (see ``chaoslab.drivers.selection``).
- Today's ``driver.operation`` names keep working unchanged; ``suggest`` names the new
  spelling so ``validate`` can warn.
- Pure: no I/O, no driver is loaded to resolve a step.
"""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaoslab.drivers.base import Kind, Operation, Param, check_args
from chaoslab.drivers.selection import SELECTION_NAMES, SELECTION_PARAMS
from chaoslab.errors import Problem

# --- platforms and target schemes ---------------------------------------------------------

# platform -> the target schemes that name it, in the order the docs show them
PLATFORMS: dict[str, tuple[str, ...]] = {
    "local": ("pid", "pidfile", "name", "pattern", "lab", "host", "netns"),
    "docker": ("docker",),
    "ssh": ("ssh",),
    "kubernetes": ("k8s", "pod"),
    "proxy": ("proxy",),
}
SCHEME_PLATFORM: dict[str, str] = {s: p for p, schemes in PLATFORMS.items() for s in schemes}

TARGET_SYNTAX: dict[str, str] = {
    "local": "pid:N, pidfile:/path, name:NAME, pattern:REGEX, lab:COMPONENT, host, netns:NAME",
    "docker": "docker:NAME, docker:name=GLOB, docker:label=KEY=VALUE[,KEY=VALUE], docker:image=REF, "
    "docker:id=ID",
    "ssh": "ssh:HOST[,HOST], ssh:GLOB (host names), ssh:tag=TAG[+TAG], ssh:* (over the inventory)",
    "kubernetes": "pod:NAMESPACE/LABEL_SELECTOR, k8s:NAMESPACE/deployment/NAME, "
    "k8s:NAMESPACE/statefulset/NAME, k8s:node/NAME",
    "proxy": "proxy:NAME@127.0.0.1:PORT, lab:COMPONENT",
}


def scheme_of(target: str | None) -> str:
    """The scheme of ``target``: ``docker`` for ``docker:...``, ``host`` for none."""
    text = (target or "").strip()
    if not text or text == "host":
        return "host"
    head, sep, _ = text.partition(":")
    return head if sep else text


# --- units and parameter conversions --------------------------------------------------------

SIGNAL_NAMES = ("KILL", "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "ABRT", "STOP", "CONT")


def _signal_name(value: Any) -> str:
    """``SIGKILL``, ``KILL``, ``kill`` or ``9`` -> ``KILL``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _signal.Signals(value).name.removeprefix("SIG")
    return str(value).strip().upper().removeprefix("SIG")


def _sig_prefixed(value: Any) -> str:
    return f"SIG{_signal_name(value)}"


def _mib_to_size(value: Any) -> str:
    """MiB -> docker's size text; ``${var}`` stays a template (``${var}m``), so the value
    substituted at run time keeps its unit."""
    return f"{value}m" if isinstance(value, str) else f"{int(value)}m"


# converters that keep a ``${variable}`` meaningful (the others see it only after
# substitution, through the driver's own checks)
_TEMPLATE_SAFE: frozenset[Callable[[Any], Any]] = frozenset({_mib_to_size})


def _percent_to_pick(args: Mapping[str, Any]) -> dict[str, Any]:
    """count/percent/all (the canonical selection) -> the ssh driver's ``pick``. Never
    raises: a value it cannot read is passed on for the driver's checks to name, and a
    ``${variable}`` percentage stays a template (``${p}%``)."""
    if args.get("all") is True:
        return {"pick": "all"}
    if "percent" in args:
        value = args["percent"]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"pick": f"{float(value):g}%"}
        return {"pick": f"{value}%" if isinstance(value, str) and "${" in value else value}
    return {"pick": args.get("count", 1)}


@dataclass(frozen=True, kw_only=True)
class Unit:
    """What a parameter's number means. Shown by ``chaoslab drivers`` and checked by the
    contract test: an operation's parameter has one unit on every platform."""

    name: str
    help: str


DURATION = Unit(name="duration", help="500ms, 10s, 2m, or a number of seconds")
PERCENT = Unit(name="percent", help="0-100")
MIB = Unit(name="MiB", help="mebibytes (integer)")
COUNT = Unit(name="count", help="a whole number")
SIGNAL = Unit(name="signal", help="SIGKILL, KILL, TERM, 9, ...")
TEXT = Unit(name="text", help="free text")
FRACTION = Unit(name="fraction", help="0.0-1.0")
BYTES = Unit(name="bytes", help="a number of bytes")
KBPS = Unit(name="KB/s", help="kilobytes per second")


@dataclass(frozen=True, kw_only=True)
class Canon:
    """One canonical parameter of an operation."""

    param: Param
    unit: Unit


@dataclass(frozen=True, kw_only=True)
class Binding:
    """How one platform does an operation.

    ``rename`` maps a canonical parameter to the driver's name for it; ``convert`` turns
    its value into the driver's unit; ``unsupported`` lists canonical parameters this
    platform cannot honour (giving one is an error naming the platforms that can).
    ``fixed`` are driver arguments the binding always sets. ``schemes`` narrows which of
    the platform's schemes fit (``kill`` on ``local`` takes process targets, not ``host``).
    ``selects``: the driver picks among matches (count/percent/all apply);
    ``ssh_pick``: translate the selection to the ssh driver's ``pick``.
    ``target``: rewrites the target text into the driver's syntax.
    """

    platform: str
    driver: str
    operation: str
    schemes: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    convert: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    unsupported: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    selects: bool = False
    ssh_pick: bool = False
    target: Callable[[str | None], str | None] = lambda t: t
    # driver parameters the user may give under another name (the canonical one is taken)
    extra_rename: Mapping[str, str] = field(default_factory=dict)

    def accepts(self, scheme: str) -> bool:
        return scheme in (self.schemes or PLATFORMS[self.platform])


@dataclass(frozen=True, kw_only=True)
class VOperation:
    """An operation of the vocabulary and the platforms that offer it."""

    name: str
    summary: str
    params: tuple[Canon, ...]
    bindings: tuple[Binding, ...]
    kind: Kind = Kind.FAULT

    def binding(self, platform: str) -> Binding | None:
        return next((b for b in self.bindings if b.platform == platform), None)

    def platforms(self) -> tuple[str, ...]:
        return tuple(b.platform for b in self.bindings)

    def canon(self, name: str) -> Canon | None:
        return next((c for c in self.params if c.param.name == name), None)


# --- target rewrites ----------------------------------------------------------------------


def _docker_target(target: str | None) -> str | None:
    """``docker:web`` -> ``name:web``; ``docker:label=app=web`` as the driver reads it."""
    rest = (target or "").removeprefix("docker:").strip()
    head = re.match(r"^(name|id|label|image)[:=]", rest)
    return rest if head else f"name:{rest}"


def _pod_target(target: str | None) -> str | None:
    text = target or ""
    return "k8s:" + text.removeprefix("pod:") if text.startswith("pod:") else text


def _no_host(target: str | None) -> str | None:
    return None if scheme_of(target) == "host" else target


def _net_host(target: str | None) -> str | None:
    return target or "host"


_PROCESS_SCHEMES = ("pid", "pidfile", "name", "pattern", "lab")
_NET_SCHEMES = ("host", "netns", "lab")
_STRESS_SCHEMES = ("host", *_PROCESS_SCHEMES)


# --- the table ----------------------------------------------------------------------------


def _p(name: str, t: type | tuple[type, ...], unit: Unit, help: str, **kw: Any) -> Canon:
    return Canon(param=Param(name=name, type=t, help=help, duration=unit is DURATION, **kw), unit=unit)


_DUR = (str, int, float)
_SIGNAL_P = _p("signal", (str, int), SIGNAL, "signal to send", default="SIGKILL")
_HEAL_P = _p("timeout", _DUR, DURATION, "how long revert waits for the target to heal", default="60s")
_WORKERS_P = _p("workers", int, COUNT, "CPU workers", default=1, minimum=1, maximum=1024)
_LOAD_P = _p(
    "load", (int, float), PERCENT, "percent of a core per worker", default=100, minimum=1, maximum=100
)
_MIB_P = _p("mib", int, MIB, "MiB to allocate or write", minimum=1)
_PORT_P = _p("port", int, COUNT, "port (default: a lab target's port)", minimum=1, maximum=65535)
_PEER_P = _p("peer", str, TEXT, "only traffic with this IP or CIDR")
_DELAY_P = _p("delay", _DUR, DURATION, "added latency, e.g. 100ms", required=True)
_JITTER_P = _p("jitter", _DUR, DURATION, "latency variation, e.g. 10ms")
_LOSS_P = _p(
    "percent", (int, float), PERCENT, "share of packets lost", required=True, minimum=0.001, maximum=100
)
_INTERFACE_P = _p("interface", str, TEXT, "network interface")
_GRACE_P = _p("grace", _DUR, DURATION, "time the target gets to stop before it is killed", default="10s")

_SSH_HEAL = {"timeout": "heal_timeout"}
_SSH_EXTRA = {"command_timeout": "timeout"}

_TOXIC_STREAM = _p("stream", str, TEXT, "downstream (server->client) or upstream", default="downstream")
_TOXICITY = _p("toxicity", (int, float), FRACTION, "probability a connection is affected", default=1.0)


def _toxic(name: str, driver_op: str, summary: str, *params: Canon) -> VOperation:
    return VOperation(
        name=name,
        summary=summary,
        params=(*params, _TOXIC_STREAM, _TOXICITY),
        bindings=(
            Binding(platform="proxy", driver="proxy", operation=driver_op),
            Binding(platform="local", driver="proxy", operation=driver_op, schemes=("lab",)),
        ),
    )


OPERATIONS: tuple[VOperation, ...] = (
    VOperation(
        name="kill",
        summary="Kill the target's process (container, pod); revert waits for it to heal",
        params=(_SIGNAL_P, _HEAL_P),
        bindings=(
            Binding(
                platform="local",
                driver="process",
                operation="kill",
                schemes=_PROCESS_SCHEMES,
                selects=True,
                convert={"signal": _sig_prefixed},
            ),
            Binding(
                platform="docker",
                driver="docker",
                operation="kill",
                selects=True,
                convert={"signal": _sig_prefixed},
                target=_docker_target,
            ),
            Binding(
                platform="ssh",
                driver="ssh",
                operation="kill",
                ssh_pick=True,
                rename=_SSH_HEAL,
                convert={"signal": _signal_name},
                extra_rename=_SSH_EXTRA,
            ),
            Binding(
                platform="kubernetes",
                driver="kubernetes",
                operation="delete_pods",
                schemes=("pod", "k8s"),
                selects=True,
                rename={"timeout": "recover_timeout"},
                unsupported=frozenset({"signal"}),
                target=_pod_target,
            ),
        ),
    ),
    VOperation(
        name="suspend",
        summary="Freeze the target (SIGSTOP, docker pause) until the lease ends",
        params=(),
        bindings=(
            Binding(
                platform="local",
                driver="process",
                operation="suspend",
                schemes=_PROCESS_SCHEMES,
                selects=True,
            ),
            Binding(
                platform="docker", driver="docker", operation="pause", selects=True, target=_docker_target
            ),
            Binding(
                platform="ssh", driver="ssh", operation="suspend", ssh_pick=True, extra_rename=_SSH_EXTRA
            ),
        ),
    ),
    VOperation(
        name="stress.cpu",
        summary="Busy CPU workers on the target for the fault's duration",
        params=(_WORKERS_P, _LOAD_P),
        bindings=(
            Binding(
                platform="local", driver="stress", operation="cpu", schemes=_STRESS_SCHEMES, target=_no_host
            ),
            Binding(
                platform="docker",
                driver="docker",
                operation="stress",
                selects=True,
                fixed={"kind": "cpu"},
                unsupported=frozenset({"load"}),
                target=_docker_target,
            ),
            Binding(
                platform="ssh", driver="ssh", operation="stress_cpu", ssh_pick=True, extra_rename=_SSH_EXTRA
            ),
        ),
    ),
    VOperation(
        name="stress.memory",
        summary="Hold memory on the target for the fault's duration",
        params=(
            _MIB_P,
            _p("percent_free", (int, float), PERCENT, "share of available memory", minimum=0.01, maximum=90),
        ),
        bindings=(
            Binding(
                platform="local",
                driver="stress",
                operation="memory",
                schemes=_STRESS_SCHEMES,
                target=_no_host,
            ),
            Binding(
                platform="docker",
                driver="docker",
                operation="stress",
                selects=True,
                fixed={"kind": "memory"},
                rename={"mib": "memory"},
                convert={"mib": _mib_to_size},
                unsupported=frozenset({"percent_free"}),
                target=_docker_target,
            ),
        ),
    ),
    VOperation(
        name="stress.disk",
        summary="Fill a filesystem for the fault's duration",
        params=(
            _MIB_P,
            _p("percent_used", (int, float), PERCENT, "fill until this % used", minimum=0.01, maximum=99),
            _p("path", str, TEXT, "directory on the filesystem to fill (default: temp dir)"),
        ),
        bindings=(
            Binding(
                platform="local", driver="stress", operation="disk", schemes=_STRESS_SCHEMES, target=_no_host
            ),
        ),
    ),
    VOperation(
        name="net.drop",
        summary="Drop packets to/from a port (iptables)",
        params=(
            _PORT_P,
            _p("protocol", str, TEXT, "tcp or udp", default="tcp", choices=("tcp", "udp")),
            _p(
                "direction",
                str,
                TEXT,
                "ingress, egress or both",
                default="ingress",
                choices=("ingress", "egress", "both"),
            ),
            _PEER_P,
        ),
        bindings=(
            Binding(platform="local", driver="net", operation="drop", schemes=_NET_SCHEMES, target=_net_host),
            Binding(
                platform="ssh",
                driver="ssh",
                operation="iptables_drop",
                ssh_pick=True,
                convert={"direction": lambda d: {"ingress": "in", "egress": "out"}.get(d, d)},
                extra_rename=_SSH_EXTRA,
            ),
        ),
    ),
    VOperation(
        name="net.partition",
        summary="Cut the target off from a peer (iptables) or a network (docker disconnect)",
        params=(_PEER_P, _p("network", str, TEXT, "docker network name or id")),
        bindings=(
            Binding(
                platform="local",
                driver="net",
                operation="partition",
                schemes=_NET_SCHEMES,
                unsupported=frozenset({"network"}),
                target=_net_host,
            ),
            Binding(
                platform="docker",
                driver="docker",
                operation="disconnect",
                selects=True,
                unsupported=frozenset({"peer"}),
                target=_docker_target,
            ),
        ),
    ),
    VOperation(
        name="net.latency",
        summary="Delay packets (tc netem) or a proxied service's bytes (latency toxic)",
        params=(_DELAY_P, _JITTER_P),
        bindings=(
            Binding(
                platform="local", driver="net", operation="latency", schemes=_NET_SCHEMES, target=_net_host
            ),
            Binding(platform="ssh", driver="ssh", operation="netem", ssh_pick=True, extra_rename=_SSH_EXTRA),
            Binding(platform="proxy", driver="proxy", operation="latency", rename={"delay": "latency"}),
        ),
    ),
    VOperation(
        name="net.loss",
        summary="Lose a share of packets (tc netem)",
        params=(_LOSS_P,),
        bindings=(
            Binding(platform="local", driver="net", operation="loss", schemes=_NET_SCHEMES, target=_net_host),
            Binding(
                platform="ssh",
                driver="ssh",
                operation="netem",
                ssh_pick=True,
                rename={"percent": "loss"},
                extra_rename=_SSH_EXTRA,
            ),
        ),
    ),
    VOperation(
        name="restart",
        summary="Restart the target; revert waits for it to run (and be healthy) again",
        params=(_GRACE_P, _HEAL_P),
        bindings=(
            Binding(
                platform="docker", driver="docker", operation="restart", selects=True, target=_docker_target
            ),
        ),
    ),
    VOperation(
        name="stop",
        summary="Stop the target; started again on revert or when the lease ends",
        params=(_GRACE_P,),
        bindings=(
            Binding(
                platform="docker", driver="docker", operation="stop", selects=True, target=_docker_target
            ),
        ),
    ),
    VOperation(
        name="scale",
        summary="Scale a workload to REPLICAS for the fault; the previous count restored",
        params=(_p("replicas", int, COUNT, "replicas during the fault", required=True, minimum=0),),
        bindings=(Binding(platform="kubernetes", driver="kubernetes", operation="scale", schemes=("k8s",)),),
    ),
    VOperation(
        name="cordon",
        summary="Mark a node unschedulable for the fault",
        params=(),
        bindings=(Binding(platform="kubernetes", driver="kubernetes", operation="cordon", schemes=("k8s",)),),
    ),
    VOperation(
        name="throttle.cpu",
        summary="Limit the target to CPUS cpus (CFS quota); previous limits restored",
        params=(_p("cpus", (int, float), COUNT, "CPUs the target may use, e.g. 0.2", required=True),),
        bindings=(
            Binding(
                platform="docker", driver="docker", operation="throttle", selects=True, target=_docker_target
            ),
        ),
    ),
    _toxic(
        "net.bandwidth",
        "bandwidth",
        "Limit a proxied service's bandwidth",
        _p("rate", int, KBPS, "KB/s (1 KB = 1000 bytes)", required=True, minimum=1),
    ),
    _toxic(
        "net.timeout",
        "timeout",
        "Stop a proxied service's data; close after TIMEOUT ms (0: never)",
        _p("timeout", _DUR, DURATION, "close after this long (0: hold forever)", default=0),
    ),
    _toxic(
        "net.reset",
        "reset_peer",
        "Reset proxied connections (TCP RST) after TIMEOUT ms",
        _p("timeout", _DUR, DURATION, "reset this long after the first data", default=0),
    ),
    _toxic(
        "net.slicer",
        "slicer",
        "Slice a proxied service's data into small packets",
        _p("average_size", int, BYTES, "bytes per slice", required=True, minimum=1),
        _p("size_variation", int, BYTES, "bytes of variation", default=0, minimum=0),
        _p("delay_us", int, COUNT, "microseconds between slices", default=0, minimum=0),
    ),
    _toxic(
        "net.slow_close",
        "slow_close",
        "Delay closing proxied connections",
        _p("delay", _DUR, DURATION, "close delay, e.g. 500ms", required=True),
    ),
    _toxic(
        "net.limit_data",
        "limit_data",
        "Close proxied connections after BYTES bytes",
        _p("bytes", int, BYTES, "bytes before closing", required=True, minimum=1),
    ),
    VOperation(
        name="net.down",
        summary="Take a proxied service down (the proxy refuses connections)",
        params=(),
        bindings=(
            Binding(platform="proxy", driver="proxy", operation="down"),
            Binding(platform="local", driver="proxy", operation="down", schemes=("lab",)),
        ),
    ),
)

# Request-level faults need a proxy in HTTP mode in front of the target (the lab's are).
_HTTP_MATCH = (
    _p("method", (str, list), TEXT, "only these methods (GET, or [GET, POST])"),
    _p("path", str, TEXT, "only paths starting with this prefix, e.g. /checkout"),
    _p("path_regex", str, TEXT, "only paths this regular expression finds a match in"),
    _p("headers", dict, TEXT, "only requests whose header NAME matches the whole regex"),
    _p("first", int, COUNT, "only the first N matching requests, then pass", minimum=1),
    _p("every", int, COUNT, "only every N-th matching request", minimum=1),
    _p(
        "share",
        (int, float),
        FRACTION,
        "probability a selected request is hit, drawn per request",
        default=1.0,
        minimum=0.0,
        maximum=1.0,
    ),
)


def _http(name: str, summary: str, *params: Canon) -> VOperation:
    return VOperation(
        name=f"http.{name}",
        summary=summary,
        params=(*params, *_HTTP_MATCH),
        bindings=(
            Binding(platform="proxy", driver="http", operation=name),
            Binding(platform="local", driver="http", operation=name, schemes=("lab",)),
        ),
    )


OPERATIONS += (
    _http(
        "abort",
        "Answer matching HTTP requests with a status instead of forwarding them",
        _p("status", int, COUNT, "status code", default=503, minimum=200, maximum=599),
        _p("body", str, TEXT, "response body", default=""),
        _p("response_headers", dict, TEXT, "extra response headers"),
    ),
    _http(
        "delay",
        "Hold matching HTTP requests (or their responses) for delay ± jitter",
        _p("delay", _DUR, DURATION, "e.g. 200ms", required=True),
        _p("jitter", _DUR, DURATION, "e.g. 20ms", default=0),
        _p(
            "distribution",
            str,
            TEXT,
            "of the jitter: uniform ±, normal σ, exponential mean",
            default="uniform",
            choices=("uniform", "normal", "exponential"),
        ),
        _p(
            "where",
            str,
            TEXT,
            "hold the request before forwarding, or the response before sending",
            default="request",
            choices=("request", "response"),
        ),
    ),
    _http(
        "rewrite",
        "Set or remove response headers of matching HTTP requests",
        _p("set_headers", dict, TEXT, "header name → value"),
        _p("remove_headers", list, TEXT, "header names"),
    ),
    _http(
        "truncate",
        "Send only the first N body bytes of matching HTTP responses, then close",
        _p("bytes", int, BYTES, "body bytes kept", required=True, minimum=0),
    ),
)
BY_NAME: dict[str, VOperation] = {op.name: op for op in OPERATIONS}

# Kill-like operations: the ones the Chaos Monkey may use.
KILL_LIKE = ("kill", "restart")


# --- resolution ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """A vocabulary step turned into a driver step."""

    operation: str  # the vocabulary name (``kill``)
    platform: str
    driver: str
    driver_operation: str
    target: str | None
    args: dict[str, Any]


def effective_operation(vop: VOperation, binding: Binding, driver_op: Operation | None) -> Operation:
    """The operation as a user of ``binding`` sees it: canonical names, the selection
    parameters when the platform picks among matches, and the driver's own extra
    parameters (``inventory``, ``kubeconfig``...) under their names."""
    params: list[Param] = [c.param for c in vop.params if c.param.name not in binding.unsupported]
    taken = {p.name for p in params}
    if binding.selects or binding.ssh_pick:
        params += [p for p in SELECTION_PARAMS if p.name not in taken]
        taken |= SELECTION_NAMES
    if driver_op is not None:
        covered = {binding.rename.get(c.param.name, c.param.name) for c in vop.params} | set(binding.fixed)
        covered |= SELECTION_NAMES | {"pick"}
        back = {v: k for k, v in binding.extra_rename.items()}
        for p in driver_op.params:
            if p.name in covered and p.name not in back:
                continue
            user = back.get(p.name, p.name)
            if user not in taken:
                params.append(Param(**{**_param_fields(p), "name": user}))
                taken.add(user)
    return Operation(name=vop.name, kind=vop.kind, summary=vop.summary, params=tuple(params))


def _param_fields(p: Param) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__struct_fields__}


def platform_of(target: str | None) -> str | None:
    return SCHEME_PLATFORM.get(scheme_of(target))


def offered(vop: VOperation) -> str:
    """``local (pid:, pattern:, ...), docker (docker:)``: where ``vop`` can run."""
    parts = []
    for b in vop.bindings:
        schemes = ", ".join(f"{s}:" if s != "host" else "host" for s in (b.schemes or PLATFORMS[b.platform]))
        parts.append(f"{b.platform} ({schemes})")
    return "; ".join(parts)


def resolve(
    name: str,
    target: str | None,
    args: Mapping[str, Any],
    *,
    driver_op: Callable[[str, str], Operation | None] = lambda _d, _o: None,
    check: bool = True,
) -> tuple[Resolved | None, list[Problem]]:
    """Resolve vocabulary step ``name`` on ``target``. Problems' paths are relative to the
    step (``target``, ``with.signal``). ``driver_op`` looks up a driver's operation so the
    driver's extra parameters are accepted; ``check``: type-check the arguments."""
    vop = BY_NAME.get(name)
    if vop is None:
        return None, [Problem(path="do", message=f"unknown operation {name!r}", hint=", ".join(BY_NAME))]
    scheme = scheme_of(target)
    platform = SCHEME_PLATFORM.get(scheme)
    binding = next((b for b in vop.bindings if b.accepts(scheme)), None)
    if binding is None:
        where = f"platform {platform!r} (scheme {scheme!r})" if platform else f"target scheme {scheme!r}"
        return None, [
            Problem(
                path="target",
                message=f"{name} cannot run on {where}",
                hint=f"platforms that can: {offered(vop)}",
            )
        ]
    problems: list[Problem] = []
    for p in sorted(binding.unsupported & set(args)):
        can = [b.platform for b in vop.bindings if p not in b.unsupported]
        problems.append(
            Problem(
                path=f"with.{p}",
                message=f"{name} on {binding.platform} cannot honour {p!r}",
                hint=f"platforms that can: {', '.join(can)}",
            )
        )
    dop = driver_op(binding.driver, binding.operation)
    eff = effective_operation(vop, binding, dop)
    given = {k: v for k, v in args.items() if k not in binding.unsupported}
    if check:
        problems += [
            Problem(path=f"with.{p.path}", message=p.message, hint=p.hint) for p in check_args(eff, given)
        ]
    if problems:
        return None, problems
    return (
        Resolved(
            operation=name,
            platform=binding.platform,
            driver=binding.driver,
            driver_operation=binding.operation,
            target=binding.target(target),
            args=translate(vop, binding, given),
        ),
        [],
    )


def translate(vop: VOperation, binding: Binding, args: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical arguments -> the driver's, canonical defaults applied. Values holding a
    ``${variable}`` are renamed but not converted (they are substituted at run time)."""
    full: dict[str, Any] = {
        c.param.name: c.param.default
        for c in vop.params
        if c.param.default is not None and c.param.name not in binding.unsupported
    }
    full.update(args)
    out: dict[str, Any] = dict(binding.fixed)
    if binding.ssh_pick:
        sel = {k: full.pop(k) for k in list(full) if k in ("count", "percent", "all")}
        out.update(_percent_to_pick(sel))
        for k in ("seed", "max", "allow_fewer"):
            if k in full:
                out[k] = full.pop(k)
    for key, value in full.items():
        if vop.canon(key) is not None:
            conv = binding.convert.get(key)
            templated = isinstance(value, str) and "${" in value
            if conv is not None and (not templated or conv in _TEMPLATE_SAFE):
                try:
                    value = conv(value)
                except (ValueError, TypeError, OverflowError):
                    pass  # left as given: the driver's own checks name what is wrong with it
            out[binding.rename.get(key, key)] = value
        else:
            out[binding.extra_rename.get(key, key)] = value
    return out


def suggest(driver: str, operation: str, target: str | None) -> str | None:
    """The vocabulary spelling of legacy ``driver.operation`` on ``target``, or None."""
    for vop in OPERATIONS:
        for b in vop.bindings:
            if b.driver == driver and b.operation == operation:
                if vop.name == f"{driver}.{operation}":
                    return None  # the legacy name is already the vocabulary's
                hint = ""
                if driver == "docker" and target and not target.startswith("docker:"):
                    hint = f" with target 'docker:{target}'"
                elif driver == "kubernetes" and b.operation == "delete_pods" and target:
                    hint = f" with target 'pod:{target.removeprefix('k8s:')}'"
                extra = f" {', '.join(f'{k}={v}' for k, v in b.fixed.items())}" if b.fixed else ""
                return f"'{driver}.{operation}'{extra} is now 'do: {vop.name}'{hint}"
    return None


def matrix() -> list[dict[str, Any]]:
    """Operation x platform: which driver operation does each, with the parameters."""
    rows = []
    for vop in OPERATIONS:
        rows.append(
            {
                "operation": vop.name,
                "summary": vop.summary,
                "params": [
                    {
                        "name": c.param.name,
                        "unit": c.unit.name,
                        "default": c.param.default,
                        "required": c.param.required,
                        "help": c.param.help,
                    }
                    for c in vop.params
                ],
                "platforms": {
                    b.platform: {
                        "driver": f"{b.driver}.{b.operation}",
                        "fixed": dict(b.fixed),
                        "schemes": list(b.schemes or PLATFORMS[b.platform]),
                        "unsupported": sorted(b.unsupported),
                    }
                    for b in vop.bindings
                },
            }
        )
    return rows
