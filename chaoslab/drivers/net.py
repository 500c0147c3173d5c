"""The host network driver: iptables drop/partition, tc netem latency/loss.

Targets: ``host`` (or none) for this host's network namespace, ``netns:NAME`` for a
named namespace (``ip netns``), ``lab:COMPONENT`` for the host with the component's
port as the default ``port``.

- ``drop``: DROP traffic of a port (``direction``: ``ingress`` = the local service on
  that port is unreachable, ``egress`` = this host cannot reach that remote port,
  ``both``), optionally only from/to ``peer``. IPv4 and IPv6 (unless ``peer`` fixes one).
- ``partition``: DROP everything to and from ``peer``.
- ``latency`` / ``loss``: a netem root qdisc on ``interface``. Support is detected by
  trying netem in a throwaway namespace; a kernel without netem gives ``Unsupported``.

Every iptables rule carries ``-m comment --comment chaoslab:<fault_id>``: revert and
check_clean list the chains and act on exactly the lines with this fault's comment, so
they work from any process and never touch anyone else's rules. A netem qdisc gets a
handle derived from the fault id and is only removed if it is still ours. Leases are
enforced by the detached watchdog.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    local_host,
    parse_duration,
)
from chaoslab.drivers.lifecycle import Ask, FaultDriver, LeasedData, LeasedFault, not_applied
from chaoslab.errors import (
    DriverError,
    InvalidInput,
    Problem,
    TargetNotFound,
    UnsafeTarget,
    Unsupported,
)

COMMENT_PREFIX = "chaoslab:"
NETNS_DIR = Path("/run/netns")
NAME = "net"
_CMD_TIMEOUT_S = 10.0
_CHAINS = ("INPUT", "OUTPUT", "FORWARD")
_BINARIES = {4: "iptables", 6: "ip6tables"}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="drop",
        kind=Kind.FAULT,
        summary="Drop the traffic of a port (optionally only with one peer)",
        params=(
            Param(
                name="port", type=int, help="port (default: a lab target's port)", minimum=1, maximum=65535
            ),
            Param(name="protocol", type=str, help="tcp or udp", default="tcp", choices=("tcp", "udp")),
            Param(
                name="direction",
                type=str,
                help="ingress, egress or both",
                default="ingress",
                choices=("ingress", "egress", "both"),
            ),
            Param(name="peer", type=str, help="only traffic with this IP or CIDR"),
        ),
    ),
    Operation(
        name="partition",
        kind=Kind.FAULT,
        summary="Drop all traffic to and from a peer",
        params=(Param(name="peer", type=str, help="IP or CIDR to cut off", required=True),),
    ),
    Operation(
        name="latency",
        kind=Kind.FAULT,
        summary="Delay packets on an interface (tc netem)",
        params=(
            Param(name="interface", type=str, help="network interface", required=True),
            Param(name="delay", type=(str, int, float), help="e.g. 100ms", required=True, duration=True),
            Param(name="jitter", type=(str, int, float), help="e.g. 10ms", duration=True),
        ),
    ),
    Operation(
        name="loss",
        kind=Kind.FAULT,
        summary="Drop a share of packets on an interface (tc netem)",
        params=(
            Param(name="interface", type=str, help="network interface", required=True),
            Param(
                name="percent", type=(int, float), help="loss in %", required=True, minimum=0.001, maximum=100
            ),
        ),
    ),
)


def comment_for(fault_id: str) -> str:
    return f"{COMMENT_PREFIX}{fault_id}"


def netem_handle(fault_id: str) -> str:
    """A qdisc major handle (hex, 1..ffff) derived from the fault id."""
    return f"{int(fault_id[:8], 16) % 0xFFFE + 1:x}"


def _ns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def _run(netns: str | None, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*_ns_prefix(netns), *argv],
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"{shlex.join(argv)}: {exc}", driver="net") from exc


def netem_support() -> tuple[bool, str]:
    """Try a netem qdisc in a throwaway namespace. Returns (supported, reason)."""
    if shutil.which("tc") is None or shutil.which("ip") is None:
        return False, "tc/ip (Debian: iproute2) are not installed"
    ns = f"chaoslab-probe-{os.getpid()}-{secrets.token_hex(3)}"
    made = _run(None, ["ip", "netns", "add", ns])
    if made.returncode != 0:
        return False, f"cannot create a namespace to probe netem: {made.stderr.strip()}"
    try:
        tried = _run(ns, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    finally:
        _run(None, ["ip", "netns", "del", ns])
    if tried.returncode == 0:
        return True, "netem works"
    return False, (
        f"this kernel has no netem qdisc (sch_netem): tc said {tried.stderr.strip()!r}; "
        "use the proxy driver's latency toxic for per-service latency"
    )


def _netns(target: str | None) -> str | None:
    if target and target.startswith("netns:"):
        return target.partition(":")[2]
    return None


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One DROP rule, without its comment and jump (added on insert)."""

    family: int  # 4 or 6
    chain: str
    spec: tuple[str, ...]


class RulesData(LeasedData, frozen=True, kw_only=True):
    netns: str | None  # a named namespace (``/run/netns/NAME``); None: this host's own
    # The namespace itself (its nsfs inode, from ``stat``): two names of one namespace
    # are one lock key, and a name that no longer reaches it is told from a dead one.
    netns_inode: int | None = None
    rules: tuple[Rule, ...]


class NetemData(LeasedData, frozen=True, kw_only=True):
    netns: str | None
    netns_inode: int | None = None
    interface: str
    netem: tuple[str, ...]


def _existing_netns(ask: Ask) -> tuple[str | None, int | None]:
    """The namespace's name (None: this host's own) and its identity (nsfs inode)."""
    netns = _netns(ask.target)
    try:
        inode = os.stat(NETNS_DIR / netns if netns else "/proc/self/ns/net").st_ino
    except FileNotFoundError:
        missing = f"no network namespace {netns!r}"
        raise TargetNotFound(missing, driver=NAME, target=ask.target or "") from None
    return netns, inode


def _ns_holder(inode: int) -> str | None:
    """What still holds the namespace with this inode alive (a process in it, or a
    mount of it), or None when nothing does: it is gone."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    return f"pid {entry.name}"
            except OSError:
                continue
    wanted = f"net:[{inode}]"
    for line in Path("/proc/self/mountinfo").read_text("utf-8").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[3] == wanted:
            return f"a mount at {fields[4]}"
    return None


def _ns_gone(netns: str | None, inode: int | None = None) -> bool:
    """True when the record's namespace is gone, and its rules and qdiscs with it.

    A name can stop reaching a namespace that still lives (``ip netns delete`` while a
    process is in it, or the name now given to another namespace): its faults are still
    in force there. That is a DriverError, never "gone"."""
    if netns is None:
        return False
    try:
        now: int | None = os.stat(NETNS_DIR / netns).st_ino
    except FileNotFoundError:
        now = None
    if now is not None and (inode is None or now == inode):
        return False
    holder = _ns_holder(inode) if inode is not None else None
    if holder is None:
        return True
    change = "no longer exists" if now is None else "now names another namespace"
    raise DriverError(
        f"the name of network namespace {netns!r} {change}, but {holder} still holds the namespace: "
        "this fault is still in force there and cannot be reached by its name",
        driver=NAME,
        target=f"netns:{netns}",
    )


class _NetFault[ND: RulesData | NetemData](LeasedFault[ND]):
    default_target = "host"

    def identities(self, record: RevertRecord, data: ND) -> tuple[str, ...]:
        """The network namespace the rules or the qdisc go into (the host's own one by
        default), by name and by identity: two runs never shape one namespace's traffic
        at once, whatever they call it."""
        host = local_host()
        keys = [f"host:{host}:netns:{data.netns or '-'}"]
        if data.netns_inode is not None:
            keys.append(f"host:{host}:netns-inode:{data.netns_inode}")
        return tuple(keys)

    def gone(self, data: ND) -> bool:
        return _ns_gone(data.netns, data.netns_inode)

    def unreachable(self, data: ND) -> list[str]:
        """Residue when the namespace lives on but its name no longer reaches it."""
        try:
            self.gone(data)
        except DriverError as exc:
            return [str(exc)]
        return []


class _Rules(_NetFault[RulesData]):
    """iptables DROP rules tagged with the fault's comment."""

    data_type = RulesData

    def plan(self, ctx: DriverContext, ask: Ask) -> RulesData:
        netns, inode = _existing_netns(ask)
        if shutil.which("iptables") is None:
            raise Unsupported("iptables is not installed (Debian: apt-get install iptables)", driver=NAME)
        full = dict(ask.full)
        if self.operation == "drop" and "port" not in full:
            full["port"] = _lab_port(ask.target or "", ctx.lab_dir)
        return RulesData(
            netns=netns, netns_inode=inode, rules=_rules(self.operation, full, host=netns is None)
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: RulesData) -> RulesData:
        for n, rule in enumerate(data.rules):
            argv = [_BINARIES[rule.family], "-w", "-I", rule.chain, "1", *rule.spec]
            argv += ["-m", "comment", "--comment", comment_for(record.fault_id), "-j", "DROP"]
            # A failed insert adds nothing: if it is the first, nothing reached the target.
            _check(_run(data.netns, argv), argv, first=n == 0)
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: RulesData) -> str:
        if self.gone(data):
            return f"network namespace {data.netns} is gone, and its rules with it"
        removed = 0
        for _ in range(100):  # bounded: each pass deletes at least one rule or stops
            found = _our_rules(data.netns, record.fault_id)
            if not found:
                break
            for family, line in found:
                argv = [_BINARIES[family], "-w", *_delete_args(line)]
                if _run(data.netns, argv).returncode == 0:
                    removed += 1
        return f"removed {removed} rule(s)"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: RulesData) -> list[str]:
        if left := self.unreachable(data):
            return left
        if self.gone(data):
            return []
        return [f"{_BINARIES[f]}: {line}" for f, line in _our_rules(data.netns, record.fault_id)]


class Drop(_Rules):
    operation = "drop"


class Partition(_Rules):
    operation = "partition"


class _Netem(_NetFault[NetemData]):
    """A netem root qdisc whose handle is derived from the fault id."""

    data_type = NetemData

    def plan(self, ctx: DriverContext, ask: Ask) -> NetemData:
        netns, inode = _existing_netns(ask)
        ok, reason = netem_support()
        if not ok:
            raise Unsupported(reason, driver=NAME, target=ask.target or "host")
        iface = str(ask.full["interface"])
        if _run(netns, ["ip", "link", "show", "dev", iface]).returncode != 0:
            raise TargetNotFound(f"no interface {iface!r}", driver=NAME, target=ask.target or "host")
        netem = tuple(_netem_args(self.operation, ask.full))
        return NetemData(netns=netns, netns_inode=inode, interface=iface, netem=netem)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: NetemData) -> NetemData:
        handle = netem_handle(record.fault_id)
        argv = ["tc", "qdisc", "add", "dev", data.interface, "root", "handle", f"{handle}:", "netem"]
        argv += data.netem
        _check(_run(data.netns, argv), argv, first=True)
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: NetemData) -> str:
        if self.gone(data):
            return f"network namespace {data.netns} is gone, and its qdisc with it"
        if not _our_qdisc(data.netns, data.interface, record.fault_id):
            return f"no netem qdisc of this fault on {data.interface}"
        argv = ["tc", "qdisc", "del", "dev", data.interface, "root"]
        _check(_run(data.netns, argv), argv)
        return f"removed the netem qdisc on {data.interface}"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: NetemData) -> list[str]:
        if left := self.unreachable(data):
            return left
        if self.gone(data) or not _our_qdisc(data.netns, data.interface, record.fault_id):
            return []
        return [f"netem qdisc {netem_handle(record.fault_id)}: on {data.interface}"]


class Latency(_Netem):
    operation = "latency"


class Loss(_Netem):
    operation = "loss"


class NetDriver(FaultDriver):
    """iptables and tc netem faults on this host or a named network namespace."""

    name = NAME
    faults = (Drop, Partition, Latency, Loss)
    summary = "Drop or partition traffic (iptables), delay or lose packets (tc netem)"

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems: list[Problem] = []
        kind, _, name = (target or "host").partition(":")
        if kind not in ("host", "netns", "lab") or (kind != "host" and not name):
            problems.append(
                Problem(
                    path="target",
                    message=f"invalid network target {target!r}",
                    hint="use host, netns:NAME or lab:COMPONENT",
                )
            )
        if isinstance(args.get("peer"), str):
            try:
                ipaddress.ip_network(args["peer"], strict=False)
            except ValueError as exc:
                problems.append(Problem(path="peer", message=str(exc)))
        if op.name == "drop" and "port" not in args and kind != "lab":
            problems.append(Problem(path="port", message="drop needs a port (or a lab: target)"))
        if op.name in ("latency", "loss") and kind == "lab":
            problems.append(Problem(path="target", message=f"{op.name} targets host or netns:NAME"))
        return problems


def _check(done: subprocess.CompletedProcess[str], argv: Sequence[str], *, first: bool = False) -> None:
    """DriverError when the command failed; ``first``: it was the fault's first change,
    so nothing of the fault reached the target (not applied)."""
    if done.returncode != 0:
        message = f"{shlex.join(argv)} failed: {done.stderr.strip()}"
        if first:
            raise not_applied(message, driver=NAME)
        raise DriverError(message, driver=NAME)


def _lab_port(target: str, lab_dir: Path) -> int:
    from chaoslab.drivers.targets import LabState

    name = target.partition(":")[2]
    port = LabState.load(lab_dir).component(name).port
    if not port:
        raise TargetNotFound(f"lab component {name!r} has no port", driver="net", target=target)
    return int(port)


def _rules(op: str, args: Mapping[str, Any], *, host: bool) -> tuple[Rule, ...]:
    """The DROP rules of a fault, without the comment and target (added on insert)."""
    peer = args.get("peer")
    net = ipaddress.ip_network(peer, strict=False) if peer else None
    if net is not None and net.prefixlen == 0 and host:
        raise UnsafeTarget(f"peer {peer} would cut this host off from everything", driver="net")
    families = [net.version] if net else [f for f in (4, 6) if shutil.which(_BINARIES[f])]
    rules: list[Rule] = []
    for family in families:
        src = ["-s", str(net)] if net else []
        dst = ["-d", str(net)] if net else []
        if op == "partition":
            rules += [Rule(family=family, chain="INPUT", spec=tuple(src))]
            rules += [Rule(family=family, chain="OUTPUT", spec=tuple(dst))]
            continue
        proto, port, direction = str(args["protocol"]), str(args["port"]), str(args["direction"])
        p = ["-p", proto]
        if direction in ("ingress", "both"):
            rules += [Rule(family=family, chain="INPUT", spec=(*p, "--dport", port, *src))]
            rules += [Rule(family=family, chain="OUTPUT", spec=(*p, "--sport", port, *dst))]
        if direction in ("egress", "both"):
            rules += [Rule(family=family, chain="OUTPUT", spec=(*p, "--dport", port, *dst))]
            rules += [Rule(family=family, chain="INPUT", spec=(*p, "--sport", port, *src))]
    return tuple(rules)


def _our_rules(netns: str | None, fault_id: str) -> list[tuple[int, str]]:
    """Lines of ``iptables -S`` carrying exactly this fault's comment."""
    wanted = comment_for(fault_id)
    found = []
    for family, binary in _BINARIES.items():
        if shutil.which(binary) is None:
            continue
        listing = _run(netns, [binary, "-w", "-S"])
        if listing.returncode != 0:
            raise DriverError(f"{binary} -S failed: {listing.stderr.strip()}", driver="net")
        for line in listing.stdout.splitlines():
            words = shlex.split(line)
            if any(a == "--comment" and b == wanted for a, b in zip(words, words[1:], strict=False)):
                found.append((family, line))
    return found


def _delete_args(line: str) -> list[str]:
    words = shlex.split(line)  # "-A CHAIN spec..." as printed by -S
    if words[:1] != ["-A"] or len(words) < 2 or words[1] not in _CHAINS:
        raise DriverError(f"unexpected iptables rule line: {line!r}", driver="net")
    return ["-D", *words[1:]]


def _our_qdisc(netns: str | None, interface: str, fault_id: str) -> bool:
    shown = _run(netns, ["tc", "qdisc", "show", "dev", interface, "root"])
    return f"netem {netem_handle(fault_id)}:" in shown.stdout


def _netem_args(op: str, args: Mapping[str, Any]) -> list[str]:
    if op == "loss":
        return ["loss", f"{float(args['percent']):g}%"]
    delay_ms = parse_duration(args["delay"]) * 1000
    if delay_ms <= 0:
        raise InvalidInput([Problem(path="delay", message="delay must be positive")])
    out = ["delay", f"{delay_ms:g}ms"]
    if "jitter" in args:
        out.append(f"{parse_duration(args['jitter']) * 1000:g}ms")
    return out
