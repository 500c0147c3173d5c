"""The ``ssh`` driver: the process, stress, iptables and netem faults, on hosts over SSH.

Targets are ``ssh:<selector>`` over an inventory (syntax in ``inventory``); the inventory
path is the ``inventory`` argument or ``$CHAOSLAB_SSH_INVENTORY``. A fault runs on every
selected host in parallel (at most ``concurrency`` at a time) and is all-or-nothing: if
any host fails, the hosts that succeeded are reverted before the error is raised.

Everything the revert needs is in the record: the resolved hosts (address, port, user,
credentials, trust settings), the remote state directory and the fault id; the host key
seen at inject is pinned in the record so a later revert only talks to the same host.
On the host, the fault's watchdog and processes are found by the fault id alone.

Leases follow the run (``heartbeat_ops``): while the run lives, ``renew`` rewrites each
fault's beat on every host over the pooled connection (one short command per fault and
host a second; the run keeps one renewal in flight per fault), and the host's watchdog
ends the fault within ``lease.LAPSE_S`` + ``lease.POLL_S`` of the last beat it got (see
``remote``). A fault without ``duration`` then lasts as long as its method. ``renew``
returns the reason once a host says its watchdog already ended the fault; a revert that
finds that reason on a host writes it where the run looks for lapses
(``watchdog.report_lapse``), so a lapse is never silent.

Connections are cached per run id on the driver object (never module state); call
``close()`` (or ``close(run_id)``) when a run ends.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import msgspec

from chaoslab.drivers.base import (
    Driver,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    check_args,
    parse_duration,
    with_defaults,
)
from chaoslab.drivers.lifecycle import (
    Ask,
    FaultDriver,
    Heal,
    HealingData,
    HealingFault,
    LeasedData,
    LeasedFault,
)
from chaoslab.drivers.ssh import remote
from chaoslab.drivers.ssh.inventory import (
    TARGET_PREFIX,
    HostSpec,
    Inventory,
    check_pick,
    inventory_path,
    load_inventory,
    pick_hosts,
)
from chaoslab.drivers.ssh.pool import (
    INSTALL_HINT,
    CommandResult,
    CommandTimeout,
    ConnectionPool,
    HostKeyRefused,
    HostOutcome,
    fan_out,
)
from chaoslab.drivers.watchdog import check_lease, report_lapse
from chaoslab.errors import (
    DriverError,
    InvalidInput,
    Problem,
    TargetNotFound,
    UnsafeTarget,
    Unsupported,
)

DEFAULT_LEASE_S = 300.0  # a leased fault without a lease still ends by itself
RENEW_TIMEOUT_S = 2.0  # one heartbeat command on a host; a slower one is a missed beat
SIGNALS = ("KILL", "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "ABRT")
_IFACE = re.compile(r"^[^\s/]{1,15}$")


def _seed(a: Mapping[str, Any], ctx: DriverContext) -> str:
    """The pick's seed: the step's, else the run's (``plan --seed`` and ``run --seed``
    with the same seed pick the same hosts), else one per run."""
    if a.get("seed") is not None:
        return str(a["seed"])
    return str(ctx.seed) if ctx.seed else f"{ctx.seed}:{ctx.run_id}"


def _limits(a: Mapping[str, Any]) -> dict[str, Any]:
    return {"cap": a.get("max"), "allow_fewer": bool(a.get("allow_fewer", False))}


_COMMON = (
    Param(name="inventory", type=str, help="inventory file (default: $CHAOSLAB_SSH_INVENTORY)"),
    Param(name="pick", type=(str, int), help="all, one, N or 'N%' of the matched hosts", default="all"),
    Param(name="seed", type=int, help="random seed for the pick (default: the run's seed)"),
    Param(name="max", type=int, help="refuse to start when more hosts than this match", minimum=1),
    Param(name="allow_fewer", type=bool, help="pick what matches when fewer hosts match than pick N"),
    Param(name="concurrency", type=int, help="hosts worked on at once", minimum=1, maximum=256),
    Param(name="timeout", type=(str, int, float), help="per remote command", duration=True),
    Param(name="trust_new_host_keys", type=bool, help="accept UNKNOWN host keys (never changed ones)"),
)
# Faults hit one host unless asked for more (one blast-radius default on every platform,
# chaoslab.drivers.selection); probes read every matched host.
_FAULT_COMMON = tuple(msgspec.structs.replace(p, default="one") if p.name == "pick" else p for p in _COMMON)
_SELECT = (
    Param(name="name", type=str, help="exact process name (comm, at most 15 chars)"),
    Param(name="pattern", type=str, help="regex over the full command line (pgrep -f)"),
    Param(name="pid", type=int, help="one process id", minimum=2),
)
_MAX = Param(
    name="max_processes",
    type=int,
    help="refuse (before changing anything) when more processes than this match on a host",
    default=20,
    minimum=1,
    maximum=10000,
)
_NETNS = Param(name="netns", type=str, help="network namespace on the host (ip netns)")

OPERATIONS: tuple[Operation, ...] = (
    Operation(name="reachable", kind=Kind.PROBE, summary="connect and run `true`; per host", params=_COMMON),
    Operation(
        name="process_count",
        kind=Kind.PROBE,
        summary="how many processes match, per host",
        params=(*_COMMON, *_SELECT),
    ),
    Operation(
        name="command",
        kind=Kind.PROBE,
        summary="run argv (each element quoted) and return status/stdout/stderr per host",
        params=(*_COMMON, Param(name="argv", type=list, help="program and arguments", required=True)),
    ),
    Operation(
        name="kill",
        kind=Kind.FAULT,
        summary="send a signal to matching processes (cannot be undone; revert may wait to heal)",
        params=(
            *_FAULT_COMMON,
            *_SELECT,
            _MAX,
            Param(name="signal", type=str, help="signal name", default="KILL", choices=SIGNALS),
            Param(
                name="heal_timeout",
                type=(str, int, float),
                help="revert waits this long for a matching process to be back",
                duration=True,
            ),
        ),
        lease=LeaseKind.NONE,
    ),
    Operation(
        name="suspend",
        kind=Kind.FAULT,
        summary="SIGSTOP matching processes; SIGCONT on revert or when the lease ends",
        params=(*_FAULT_COMMON, *_SELECT, _MAX),
    ),
    Operation(
        name="stress_cpu",
        kind=Kind.FAULT,
        summary="CPU load on the host (stress-ng if installed, else busy shell loops)",
        params=(
            *_FAULT_COMMON,
            Param(
                name="workers", type=int, help="workers (default: host's CPU count)", minimum=1, maximum=1024
            ),
            Param(name="load", type=int, help="percent per worker", default=100, minimum=1, maximum=100),
            Param(name="backend", type=str, help="", default="auto", choices=("auto", "stress-ng", "shell")),
        ),
    ),
    Operation(
        name="iptables_drop",
        kind=Kind.FAULT,
        summary="drop packets to a port (rule tagged chaoslab:<fault id>)",
        params=(
            *_FAULT_COMMON,
            Param(name="port", type=int, help="destination port", required=True, minimum=1, maximum=65535),
            Param(name="protocol", type=str, help="", default="tcp", choices=("tcp", "udp")),
            Param(name="direction", type=str, help="", default="in", choices=("in", "out", "both")),
            Param(name="peer", type=str, help="only traffic from/to this address or CIDR"),
            _NETNS,
        ),
    ),
    Operation(
        name="netem",
        kind=Kind.FAULT,
        summary="tc netem latency/loss on an interface (needs sch_netem in the host's kernel)",
        params=(
            *_FAULT_COMMON,
            Param(name="interface", type=str, help="network interface", required=True),
            Param(name="delay", type=(str, int, float), help="added latency", duration=True),
            Param(name="jitter", type=(str, int, float), help="latency jitter", duration=True),
            Param(name="loss", type=(int, float), help="percent of packets lost", minimum=0, maximum=100),
            _NETNS,
        ),
    ),
)


# --- the faults, on the lifecycle skeleton ------------------------------------------------------
#
# Every fault's record data keeps the keys it always had (open ledger entries stay
# readable): keys a record did not have are left out (``omit_defaults``). The remote
# scripts read the record's plain data; the typed data checks its shape on the way in.


class SSHData(LeasedData, frozen=True, kw_only=True, omit_defaults=True):
    """A fault on hosts: the resolved hosts and settings, then what inject learned.

    The lease lives on each host (its watchdog script, ``remote``), not in a local
    watchdog: ``watchdog`` stays unset."""

    inventory: str
    hosts: list[dict[str, Any]]
    state_dir: str
    concurrency: int
    command_timeout_s: float
    connect_timeout_s: float
    connect_attempts: int
    seed: str
    # prepare (not in a dry run): who each host is, the processes a process fault hits
    resolved: dict[str, Any] | None = None
    unresolved: dict[str, Any] | None = None
    host_keys: dict[str, str] | None = None
    # inject: per host pids/sessions/backend..., and when it started
    results: dict[str, Any] | None = None
    injected_at: float | None = None


class IptablesData(SSHData, frozen=True, kw_only=True, omit_defaults=True):
    netns: str | None
    tag: str
    rules: list[list[str]]


class NetemData(SSHData, frozen=True, kw_only=True, omit_defaults=True):
    netns: str | None
    interface: str
    handle: str


class KillData(HealingData, frozen=True, kw_only=True, omit_defaults=True):
    """A kill on hosts (the same keys as ``SSHData``); ``timeout_s``: ``heal_timeout``."""

    inventory: str
    hosts: list[dict[str, Any]]
    state_dir: str
    concurrency: int
    command_timeout_s: float
    connect_timeout_s: float
    connect_attempts: int
    seed: str
    resolved: dict[str, Any] | None = None
    unresolved: dict[str, Any] | None = None
    host_keys: dict[str, str] | None = None
    results: dict[str, Any] | None = None
    injected_at: float | None = None
    timeout_s: float = 0.0


class _OnHosts:
    """What every ssh fault shares: plan over the inventory, fan the fault's script out
    to its hosts (all or nothing), read its residue, name its identities."""

    operation: ClassVar[str]
    driver: Driver
    process_fault: ClassVar[bool] = False  # hits processes prepare resolved (and locked)

    @property
    def ssh(self) -> SSHDriver:
        assert isinstance(self.driver, SSHDriver)
        return self.driver

    def op(self) -> Operation:
        op = self.ssh.operation(self.operation)
        assert op is not None
        return op

    # -- plan ----------------------------------------------------------------------------

    def extra(self, a: Mapping[str, Any], fault_id: str) -> dict[str, Any]:
        """The operation's own record data (computed from the args alone)."""
        return {}

    def _plan[T](self, ctx: DriverContext, ask: Ask, data_type: type[T]) -> T:
        a = ask.full
        inv = _load(a)
        seed = _seed(a, ctx)
        hosts = pick_hosts(inv.match(str(ask.target)), a["pick"], seed, **_limits(a))
        data: dict[str, Any] = {
            "inventory": str(inv.path),
            "hosts": [h.to_dict() for h in hosts],
            "state_dir": inv.settings.remote_state_dir,
            "concurrency": int(a.get("concurrency") or inv.settings.concurrency),
            "command_timeout_s": _timeout(a, inv.settings.command_timeout_s),
            "connect_timeout_s": inv.settings.connect_timeout_s,
            "connect_attempts": inv.settings.connect_attempts,
            "seed": seed,
            **self.extra(a, ask.fault_id),
        }
        if not ctx.dry:
            selector = _selector(a) if self.process_fault else None
            most = int(a["max_processes"]) if self.process_fault else 0
            data |= self.ssh._resolve(ctx, selector, most, hosts, data, str(ask.target))
        return msgspec.convert(data, type=data_type)

    def recorded_args(self, ask: Ask, data: Any) -> Mapping[str, Any]:
        """The inventory as the absolute path it was read from: a relative ``inventory``
        argument means another file from another directory (a ``recover`` run
        elsewhere), so no record holds one."""
        if "inventory" in ask.args:
            return {**ask.args, "inventory": str(data.inventory)}
        return ask.args

    def _refuse(self, ctx: DriverContext, record: RevertRecord) -> None:
        names = [str(h.get("name")) for h in record.data.get("hosts") or []]
        if ctx.dry:
            ctx.log(f"ssh: dry run, would {record.operation} on {', '.join(names)}")
        else:
            _check_resolved(record, names, processes=self.process_fault)

    # -- apply ---------------------------------------------------------------------------

    @abstractmethod
    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        """The fault's script for one host (``a``: the args with defaults)."""

    def _apply(self, ctx: DriverContext, record: RevertRecord, *, leased: bool) -> dict[str, Any]:
        """Run the fault's script on every host; all or nothing. Returns what inject adds
        to the record data."""
        a = with_defaults(self.op(), record.args)
        hosts, pool, timeout_s, concurrency = self.ssh._context(ctx, record)
        lease = record.lease_s or DEFAULT_LEASE_S
        started = time.time()
        outcomes = fan_out(
            hosts,
            lambda h: _run(pool, h, self.script(record, h, a, lease), timeout_s),
            concurrency=concurrency,
        )
        failed = [o for o in outcomes if o.error is not None or (o.value is not None and not o.value.ok)]
        fingerprints = pool.accepted_fingerprints()
        pinned = {h.name: fingerprints[h.name] for h in hosts if h.name in fingerprints}
        if failed:
            if leased:
                # All or nothing: undo the hosts where the fault took (and any half-done).
                pinned_record = record.with_data(host_keys=pinned)
                self.ssh._revert_hosts(pool, pinned_record, hosts, timeout_s, concurrency)
            err = _inject_error(record.operation, record.target, failed)
            # No host was even reached (connect refused, unknown key): nothing was applied.
            err.not_applied = len(failed) == len(outcomes) and all(
                o.value is None and o.error is not None and not isinstance(o.error, CommandTimeout)
                for o in failed
            )
            raise err
        per_host: dict[str, Any] = {}
        for o in outcomes:
            assert o.value is not None
            kv = remote.parse_kv(o.value.stdout)
            per_host[o.host.name] = {
                "pids": [int(p) for p in " ".join(kv.get("pids", [])).split()],
                "sessions": [int(x) for x in kv.get("session", [])],
                **{k: v[0] for k, v in kv.items() if k in ("backend", "workers", "watchdog")},
            }
        return {"results": per_host, "host_keys": pinned, "injected_at": started}

    # -- residue -------------------------------------------------------------------------

    def _residue(
        self, ctx: DriverContext, record: RevertRecord, prefix: str = ""
    ) -> tuple[list[str], list[HostOutcome[CommandResult]]]:
        """What of the fault the hosts still hold (its processes, state, rules...), one
        line per thing, prefixed by the host; a host that cannot answer is residue too.
        ``prefix``: a read-only script run first in the same command (its output kept)."""
        hosts, pool, timeout_s, concurrency = self.ssh._context(ctx, record)
        results = record.data.get("results") or {}
        stopped_by = self.operation == "suspend"

        def one(host: HostSpec) -> CommandResult:
            stopped = (results.get(host.name) or {}).get("pids", []) if stopped_by else []
            script = remote.check_script(
                record.operation,
                remote.instance_id(record.fault_id, host.name),
                str(record.data["state_dir"]),
                record.data,
                stopped_pids=stopped,
                sessions=_sessions(record, host),
            )
            return _run(pool, host, f"{prefix}\n{script}" if prefix else script, timeout_s)

        outcomes = fan_out(hosts, one, concurrency=concurrency)
        residue: list[str] = []
        for o in outcomes:
            if o.error is not None or o.value is None or not o.value.ok:
                residue.append(f"{o.host.name}: cannot verify ({_why(o)})")
                continue
            residue += [f"{o.host.name}: {r}" for r in remote.parse_kv(o.value.stdout).get("residue", [])]
        return residue, outcomes

    # -- identities ----------------------------------------------------------------------

    def node_keys(self, node: str, procs: Sequence[Mapping[str, Any]], record: RevertRecord) -> list[str]:
        """Lock keys on a host ``prepare`` resolved (``node``: the host's own name)."""
        return [f"host:{node}:netns:{_netns(record)}"]

    def unresolved_what(self, record: RevertRecord) -> str:
        return f"netns:{_netns(record)}"

    def _identities(self, record: RevertRecord) -> tuple[str, ...]:
        """What the fault hits on each picked host, named as the local drivers name it on
        their own host, with the host's own name (resolved on the host by ``prepare``):
        ``proc:<host>:<pid>:<start time>`` for kill and suspend (psutil's
        ``create_time``), ``host:<host>:cpu``, ``host:<host>:netns:<netns or ->``. So
        ``ssh:h0`` and ``ssh:tag=eu`` naming one host, a pattern and a pid naming one
        process, two inventory entries for one machine, and the process driver on the
        machine itself all meet on one key. A host ``prepare`` could not reach keeps a
        key by its pinned fingerprint or address (its fault is not applied)."""
        resolved: Mapping[str, Any] = record.data.get("resolved") or {}
        keys: list[str] = []
        for h in record.data.get("hosts", []):
            node = str((resolved.get(h.get("name")) or {}).get("node") or "")
            if node:
                keys += self.node_keys(node, resolved[h["name"]].get("procs") or [], record)
                continue
            fps = sorted(str(f) for f in h.get("fingerprints") or ())
            ident = fps[0] if fps else f"{h.get('address')}:{h.get('port')}"
            keys.append(f"ssh:{ident}:{self.unresolved_what(record)}")
        return tuple(keys)


class _ProcessFault(_OnHosts):
    process_fault = True

    def node_keys(self, node: str, procs: Sequence[Mapping[str, Any]], record: RevertRecord) -> list[str]:
        return [f"proc:{node}:{p['pid']}:{float(p['create_time']):.2f}" for p in procs]

    def unresolved_what(self, record: RevertRecord) -> str:
        a = record.args
        return "proc:" + ",".join(f"{k}={a[k]}" for k in ("pid", "name", "pattern") if k in a)

    def targets(self, record: RevertRecord, host: HostSpec) -> list[tuple[int, int]]:
        return _targets(record, host)


class _LeasedOnHosts[D: SSHData](_OnHosts, LeasedFault[D]):
    """A leased ssh fault: the lease is the watchdog script each host runs (renewed
    through ``SSHDriver.renew``), armed by the fault's own script; no local watchdog."""

    def plan(self, ctx: DriverContext, ask: Ask) -> D:
        return self._plan(ctx, ask, self.data_type)

    def lease_for(self, ask: Ask) -> float | None:
        return check_lease(ask.lease_s, default=DEFAULT_LEASE_S)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: D) -> None:
        self._refuse(ctx, record)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: D) -> D:
        return msgspec.structs.replace(data, **self._apply(ctx, record, leased=True))

    def undo(self, ctx: DriverContext, record: RevertRecord, data: D) -> str:
        hosts, pool, timeout_s, concurrency = self.ssh._context(ctx, record)
        outcomes = self.ssh._revert_hosts(pool, record, hosts, timeout_s, concurrency)
        lapses = [
            f"{o.host.name}: {why}"
            for o in outcomes
            if o.value is not None
            for why in remote.parse_kv(o.value.stdout).get("lapsed", [])
        ]
        if lapses and record.heartbeat and record.run_id == ctx.run_id:
            report_lapse(ctx.state_dir, record.fault_id, "the host ended it: " + "; ".join(lapses))
        kept = [
            f"{o.host.name}: {what.strip().rstrip(';')}"
            for o in outcomes
            if o.value is not None and o.value.ok
            for what in remote.parse_kv(o.value.stdout).get("kept", [])
        ]
        if kept:
            raise DriverError(
                "the revert did not hold on " + "; ".join(kept),
                driver="ssh",
                target=record.target,
            )
        failed = [o for o in outcomes if o.error is not None or (o.value is not None and not o.value.ok)]
        if failed:
            raise DriverError(
                "revert failed on "
                + "; ".join(f"{o.host.name}: {_why(o)}" for o in failed)
                + " (the host's watchdog still ends the fault when the lease expires)",
                driver="ssh",
                target=record.target,
            )
        return f"reverted on {len(hosts)} host(s)"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: D) -> list[str]:
        return self._residue(ctx, record)[0]

    def notes(self, ctx: DriverContext, record: RevertRecord, data: D) -> list[str]:
        return [f"checked {len(data.hosts)} host(s)"]

    def identities(self, record: RevertRecord, data: D) -> tuple[str, ...]:
        return self._identities(record)

    # The lease is on the hosts: their residue says whether a watchdog still waits.
    def needs_watchdog(self, record: RevertRecord, data: D) -> bool:
        return False

    def retire(self, ctx: DriverContext, record: RevertRecord, data: D) -> None:
        """The hosts' watchdogs end with the revert script (``remote.revert_body``)."""

    def lease_residue(self, record: RevertRecord, data: D) -> list[str]:
        return []


class Suspend(_ProcessFault, _LeasedOnHosts[SSHData]):
    operation = "suspend"
    data_type = SSHData

    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        fid, state_dir = remote.instance_id(record.fault_id, host.name), str(record.data["state_dir"])
        return remote.suspend_script(
            fid, state_dir, self.targets(record, host), lease, heartbeat=bool(record.heartbeat)
        )


class StressCpu(_LeasedOnHosts[SSHData]):
    operation = "stress_cpu"
    data_type = SSHData

    def node_keys(self, node: str, procs: Sequence[Mapping[str, Any]], record: RevertRecord) -> list[str]:
        return [f"host:{node}:cpu"]

    def unresolved_what(self, record: RevertRecord) -> str:
        return "cpu"

    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        return remote.stress_script(
            remote.instance_id(record.fault_id, host.name),
            str(record.data["state_dir"]),
            workers=a.get("workers"),
            load=int(a["load"]),
            lease_s=lease,
            backend=str(a["backend"]),
            heartbeat=bool(record.heartbeat),
        )


class IptablesDrop(_LeasedOnHosts[IptablesData]):
    operation = "iptables_drop"
    data_type = IptablesData

    def extra(self, a: Mapping[str, Any], fault_id: str) -> dict[str, Any]:
        rules = remote.iptables_rules(
            fault_id, port=a["port"], protocol=a["protocol"], direction=a["direction"], peer=a.get("peer")
        )
        return {"netns": a.get("netns"), "tag": f"chaoslab:{fault_id}", "rules": rules}

    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        data = record.data
        return remote.iptables_script(
            remote.instance_id(record.fault_id, host.name),
            str(data["state_dir"]),
            rules=data["rules"],
            netns=data.get("netns"),
            lease_s=lease,
            heartbeat=bool(record.heartbeat),
        )


class Netem(_LeasedOnHosts[NetemData]):
    operation = "netem"
    data_type = NetemData

    def extra(self, a: Mapping[str, Any], fault_id: str) -> dict[str, Any]:
        return {"netns": a.get("netns"), "interface": a["interface"], "handle": remote.netem_handle(fault_id)}

    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        data = record.data
        netem_args: list[str] = []
        if "delay" in a:
            netem_args += ["delay", f"{parse_duration(a['delay']) * 1000:g}ms"]
            if "jitter" in a:
                netem_args.append(f"{parse_duration(a['jitter']) * 1000:g}ms")
        if "loss" in a:
            netem_args += ["loss", f"{float(a['loss']):g}%"]
        return remote.netem_script(
            remote.instance_id(record.fault_id, host.name),
            str(data["state_dir"]),
            interface=str(data["interface"]),
            netns=data.get("netns"),
            netem_args=netem_args,
            handle=str(data["handle"]),
            lease_s=lease,
            heartbeat=bool(record.heartbeat),
        )


class Kill(_ProcessFault, HealingFault[KillData]):
    """Cannot be undone: its "revert" waits up to ``heal_timeout`` for a matching process
    to run again on every host (a pid, or no ``heal_timeout``: nothing to wait for); its
    clean check is that count plus the fault's own residue on the hosts."""

    operation = "kill"
    data_type = KillData
    poll_s = 0.2

    def extra(self, a: Mapping[str, Any], fault_id: str) -> dict[str, Any]:
        wait_s = parse_duration(a["heal_timeout"]) if "heal_timeout" in a else 0.0
        return {"timeout_s": wait_s} if wait_s > 0 else {}

    def decode(self, record: RevertRecord) -> KillData:
        data = super().decode(record)
        if "timeout_s" not in record.data and "heal_timeout" in record.args:  # an entry written before
            data = msgspec.structs.replace(data, timeout_s=parse_duration(record.args["heal_timeout"]))
        return data

    def plan(self, ctx: DriverContext, ask: Ask) -> KillData:
        return self._plan(ctx, ask, self.data_type)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> None:
        self._refuse(ctx, record)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> KillData:
        return msgspec.structs.replace(data, **self._apply(ctx, record, leased=False))

    def script(self, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
        fid, state_dir = remote.instance_id(record.fault_id, host.name), str(record.data["state_dir"])
        return remote.kill_script(fid, state_dir, self.targets(record, host), str(a["signal"]))

    def identities(self, record: RevertRecord, data: KillData) -> tuple[str, ...]:
        return self._identities(record)

    def since(self, record: RevertRecord, data: KillData) -> float:
        return float(data.injected_at or record.created_at)

    def heal(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> Heal:
        if data.timeout_s <= 0 or "pid" in record.args:
            residue, _ = self._residue(ctx, record)
            if residue:
                return Heal(healed=False, detail="; ".join(residue))
            return Heal(
                healed=False, possible=False, detail="a killed process cannot be restored by chaoslab"
            )
        # A kill leaves nothing on the host, but the target is not back until a matching
        # process runs again: one command per host counts them and reads the residue.
        by, value = _selector(record.args)
        residue, outcomes = self._residue(ctx, record, prefix=remote.count_script(by, value))
        at = time.time()
        for o in outcomes:
            count = remote.parse_kv(o.value.stdout).get("count") if o.value is not None else None
            if o.error is not None or o.value is None or not o.value.ok or not count:
                # A count that never came back is not "zero": say so, never "not healed".
                residue.append(f"{o.host.name}: cannot verify the heal ({_why(o)})")
            elif count == ["0"]:
                residue.append(f"{o.host.name}: no process matches {by} {value!r} yet (not healed)")
        if residue:
            return Heal(healed=False, detail="; ".join(residue))
        return Heal(healed=True, recovered_at=at, detail=f"healed on {len(outcomes)} host(s)")


class SSHDriver(FaultDriver):
    """Faults and probes on a fleet of hosts over SSH (see the module docstring)."""

    name = "ssh"
    summary = "processes, CPU stress, iptables and netem on hosts over SSH"
    install_hint = INSTALL_HINT
    faults = (Kill, Suspend, StressCpu, IptablesDrop, Netem)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, float, int], ConnectionPool] = {}

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    # -- validation (pure) -------------------------------------------------------------

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems: list[Problem] = []
        if target is None or not target.startswith(TARGET_PREFIX):
            problems.append(
                Problem(
                    path="target", message=f"ssh targets look like ssh:HOST or ssh:tag=TAG, got {target!r}"
                )
            )
        if "pick" in args and (msg := check_pick(args["pick"])) is not None:
            problems.append(Problem(path="pick", message=msg))
        if any(p.name == "pid" for p in op.params):
            given = [k for k in ("name", "pattern", "pid") if k in args]
            if len(given) != 1:
                problems.append(
                    Problem(
                        path=op.name,
                        message="give exactly one of name, pattern or pid",
                        hint=f"got {given or 'none'}",
                    )
                )
            if isinstance(args.get("name"), str) and not 0 < len(args["name"]) <= 15:
                problems.append(
                    Problem(
                        path="name",
                        message="a process name has 1 to 15 characters",
                        hint="use pattern for longer",
                    )
                )
            if isinstance(args.get("pattern"), str) and _matches_everything(args["pattern"]):
                problems.append(
                    Problem(path="pattern", message=f"{args['pattern']!r} matches every command line")
                )
        if op.name == "command":
            argv = args.get("argv")
            if isinstance(argv, list) and (not argv or not all(isinstance(a, str) for a in argv)):
                problems.append(Problem(path="argv", message="must be a non-empty list of strings"))
        if op.name == "iptables_drop" and isinstance(args.get("peer"), str):
            try:
                ipaddress.ip_network(args["peer"], strict=False)
            except ValueError:
                problems.append(Problem(path="peer", message=f"not an IP address or CIDR: {args['peer']!r}"))
            else:
                if ":" in args["peer"]:
                    problems.append(
                        Problem(path="peer", message="IPv6 peers are not supported (iptables only)")
                    )
        if op.name == "netem":
            if not any(k in args for k in ("delay", "loss")):
                problems.append(Problem(path="netem", message="give delay and/or loss"))
            if "jitter" in args and "delay" not in args:
                problems.append(Problem(path="jitter", message="jitter needs a delay"))
            iface = args.get("interface")
            if isinstance(iface, str) and not _IFACE.match(iface):
                problems.append(Problem(path="interface", message=f"not an interface name: {iface!r}"))
        return problems

    def _checked(self, op: Operation, args: Mapping[str, Any], target: str | None) -> dict[str, Any]:
        if problems := check_args(op, args) + self.validate(op, args, target):
            raise InvalidInput(problems)
        return with_defaults(op, args)

    # -- probes -------------------------------------------------------------------------

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        """A mapping host name → value. Raises if any host cannot answer."""
        a = self._checked(op, args, target)
        inv = _load(a)
        hosts = pick_hosts(inv.match(str(target)), a["pick"], _seed(a, ctx), **_limits(a))
        pool = self._pool(ctx, inv.settings.connect_timeout_s, inv.settings.connect_attempts)
        timeout_s = _timeout(a, inv.settings.command_timeout_s)
        concurrency = int(a.get("concurrency") or inv.settings.concurrency)
        if op.name == "reachable":
            script = "true"
        elif op.name == "command":
            script = remote.argv_command(a["argv"]) + " </dev/null"
        else:
            by, value = _selector(a)
            script = remote.count_script(by, value)

        def one(host: HostSpec) -> Any:
            res = _run(pool, host, script, timeout_s)
            if op.name == "command":
                return {"exit_status": res.exit_status, "stdout": res.stdout, "stderr": res.stderr}
            if op.name == "reachable":
                return res.ok
            counts = remote.parse_kv(res.stdout).get("count")
            if not res.ok or not counts:
                raise DriverError(
                    f"cannot count processes: {res.stderr.strip()}", driver="ssh", target=host.name
                )
            return int(counts[0])

        outcomes = fan_out(hosts, one, concurrency=concurrency)
        _raise_failures(outcomes, f"probe {op.name}")
        return {o.host.name: o.value for o in outcomes}

    # -- faults: resolution (the fault classes above call it) ------------------------------

    def _resolve(
        self,
        ctx: DriverContext,
        selector: tuple[remote.Selector, str | int] | None,
        max_processes: int,
        hosts: Sequence[HostSpec],
        data: Mapping[str, Any],
        target: str,
    ) -> dict[str, Any]:
        """Who each host is and, for a process fault, which processes it hits (pid + start
        time): the fault's identities (``identities``), read before anything changes, and
        all a process fault will touch. A host that cannot be reached stays unresolved
        (its fault is then "not applied"); a selector matching nothing, or too much, on
        any host raises here, before any host is touched."""
        pool = self._pool(ctx, float(data["connect_timeout_s"]), int(data["connect_attempts"]))
        script = remote.resolve_script(selector)
        outcomes = fan_out(
            hosts,
            lambda h: _run(pool, h, script, float(data["command_timeout_s"])),
            concurrency=int(data["concurrency"]),
        )
        resolved: dict[str, Any] = {}
        unresolved: dict[str, Any] = {}
        for o in outcomes:
            if o.value is None or not o.value.ok:
                unresolved[o.host.name] = {
                    "error": _why(o),
                    "key_refused": isinstance(o.error, HostKeyRefused),
                }
                continue
            kv = remote.parse_kv(o.value.stdout)
            btime, tck = float(kv.get("btime", ["0"])[0]), int(kv.get("tck", ["100"])[0]) or 100
            procs = []
            for line in kv.get("proc", []):
                pid, _, ticks = line.partition(" ")
                if pid.isdigit() and ticks.isdigit():
                    # psutil's create_time (what the process driver keys on): same key.
                    procs.append(
                        {"pid": int(pid), "ticks": int(ticks), "create_time": int(ticks) / tck + btime}
                    )
            resolved[o.host.name] = {"node": kv.get("node", [""])[0], "procs": procs}
        if selector is not None:
            by, value = selector
            crowded = [
                f"{n} ({len(r['procs'])})" for n, r in resolved.items() if len(r["procs"]) > max_processes
            ]
            if crowded:
                raise UnsafeTarget(
                    f"{by} {value!r} matches more than max_processes={max_processes} processes "
                    f"on {', '.join(crowded)} (nothing was changed)",
                    driver="ssh",
                    target=target,
                )
            if empty := [n for n, r in resolved.items() if not r["procs"]]:
                raise TargetNotFound(
                    f"no process matches {by} {value!r} on {', '.join(empty)} (nothing was changed)",
                    driver="ssh",
                    target=target,
                )
        fingerprints = pool.accepted_fingerprints()
        return {
            "resolved": resolved,
            "unresolved": unresolved,
            # Inject talks only to the host key the processes were resolved on.
            "host_keys": {h.name: fingerprints[h.name] for h in hosts if h.name in fingerprints},
        }

    # -- lifecycle ----------------------------------------------------------------------

    def renew(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        """One heartbeat of ``record`` on each of its hosts (one short command each, over
        the run's pooled connection, bounded by ``RENEW_TIMEOUT_S``); returns why a host's
        watchdog already ended the fault, or None. A host that does not answer is a
        missed beat, never an error (the run calls this on a thread of its own, one in
        flight per fault, so a slow host holds no other heartbeat)."""
        if not record.heartbeat or ctx.dry or "results" not in record.data:
            return None  # not renewed, or not on the hosts yet (inject is still running)
        with self._lock:
            pool = self._pools.get(_pool_key(ctx, record))
        if pool is None:
            return None  # the run's connections are closed: the run is over
        hosts, _pool, _timeout, concurrency = self._context(ctx, record, pool=pool)
        state_dir = str(record.data["state_dir"])

        def one(host: HostSpec) -> CommandResult:
            script = remote.renew_script(remote.instance_id(record.fault_id, host.name), state_dir)
            return _run(pool, host, script, RENEW_TIMEOUT_S)

        lapses = [
            f"{o.host.name}: {why}"
            for o in fan_out(hosts, one, concurrency=concurrency)
            if o.value is not None
            for why in remote.parse_kv(o.value.stdout).get("lapsed", [])
        ]
        return "the host ended it: " + "; ".join(lapses) if lapses else None

    def end_run(self, ctx: DriverContext) -> None:
        self.close(ctx.run_id)

    def close(self, run_id: str | None = None) -> None:
        """Close cached connections (of one run, or all). Safe to call any time."""
        with self._lock:
            keys = [k for k in self._pools if run_id is None or k[0] == run_id]
            pools = [self._pools.pop(k) for k in keys]
        for p in pools:
            p.close()

    # -- internals ----------------------------------------------------------------------

    def _pool(self, ctx: DriverContext, connect_timeout_s: float, attempts: int) -> ConnectionPool:
        key = (ctx.run_id, float(connect_timeout_s), int(attempts))
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = ConnectionPool(
                    connect_timeout_s=connect_timeout_s, connect_attempts=attempts, log=ctx.log
                )
                self._pools[key] = pool
            return pool

    def _context(
        self, ctx: DriverContext, record: RevertRecord, *, pool: ConnectionPool | None = None
    ) -> tuple[list[HostSpec], ConnectionPool, float, int]:
        data = record.data
        keys: Mapping[str, str] = data.get("host_keys") or {}
        hosts = []
        for raw in data.get("hosts") or []:
            host = HostSpec.from_dict(raw)
            if host.name in keys:
                # The key accepted at inject is the only one revert/check will talk to.
                host = replace(host, fingerprints=(keys[host.name],))
            hosts.append(host)
        if pool is None:
            pool = self._pool(ctx, float(data["connect_timeout_s"]), int(data["connect_attempts"]))
        return hosts, pool, float(data["command_timeout_s"]), int(data["concurrency"])

    def _revert_hosts(
        self,
        pool: ConnectionPool,
        record: RevertRecord,
        hosts: Sequence[HostSpec],
        timeout_s: float,
        concurrency: int,
    ) -> list[HostOutcome[CommandResult]]:
        def one(host: HostSpec) -> CommandResult:
            instance = remote.instance_id(record.fault_id, host.name)
            script = remote.revert_body(
                record.operation,
                instance,
                str(record.data["state_dir"]),
                record.data,
                _sessions(record, host),
                targets=_targets(record, host) if record.operation == "suspend" else (),
            )
            return _run(pool, host, script, timeout_s)

        return fan_out(hosts, one, concurrency=concurrency)


# --- helpers -------------------------------------------------------------------------------


def _matches_everything(pattern: str) -> bool:
    """True when the regex matches an empty command line, i.e. every process.

    pgrep uses POSIX EREs; Python's dialect agrees on what matters here (alternation,
    ``*``, ``?``, anchors). A pattern Python cannot compile is left to pgrep.
    """
    try:
        return re.search(pattern, "") is not None
    except re.error:
        return False


def _load(a: Mapping[str, Any]) -> Inventory:
    trust = a.get("trust_new_host_keys")
    return load_inventory(
        inventory_path(a.get("inventory")), trust_new=trust if isinstance(trust, bool) else None
    )


def _timeout(a: Mapping[str, Any], default: float) -> float:
    return parse_duration(a["timeout"]) if a.get("timeout") is not None else default


def _selector(a: Mapping[str, Any]) -> tuple[remote.Selector, str | int]:
    if "name" in a:
        return "name", str(a["name"])
    if "pattern" in a:
        return "pattern", str(a["pattern"])
    return "pid", int(a["pid"])


def _run(pool: ConnectionPool, host: HostSpec, script: str, timeout_s: float) -> CommandResult:
    # The client deadline leaves room for the host's own `timeout -k` to fire first.
    command, stdin = remote.command(script, timeout_s)
    res = pool.run(host, command, stdin=stdin, timeout_s=timeout_s + remote.KILL_GRACE_S + 1)
    if res.exit_status in remote.TIMEOUT_STATUSES and res.elapsed_s >= timeout_s:
        raise CommandTimeout(
            f"command did not finish within {timeout_s:g}s (ended by the host's timeout)",
            driver="ssh",
            target=host.name,
        )
    return res


def _netns(record: RevertRecord) -> str:
    return str(record.data.get("netns") or "-")


def _check_resolved(record: RevertRecord, hosts: Sequence[str], *, processes: bool) -> None:
    """A fault hits only what ``prepare`` resolved (and locked): the processes of a process
    fault, the host itself (its own name) of the others. A host it could not reach then
    is not touched now -- its lock key was only its address, which another name for the
    same machine does not meet -- and the fault is "not applied"."""
    unresolved: Mapping[str, Any] = record.data.get("unresolved") or {}
    resolved: Mapping[str, Any] = record.data.get("resolved") or {}
    missing = [name for name in hosts if name not in resolved]
    if not missing:
        return
    why = "; ".join(f"{n}: {(unresolved.get(n) or {}).get('error', 'not resolved')}" for n in missing)
    what = "the processes on " if processes else "the host(s) "
    message = f"{record.operation}: {what}{', '.join(missing)} could not be resolved ({why})"
    refused = all((unresolved.get(n) or {}).get("key_refused") for n in missing)
    cls: Callable[..., DriverError] = HostKeyRefused if refused else DriverError
    raise cls(message + " (nothing was changed)", driver="ssh", target=record.target, not_applied=True)


def _pool_key(ctx: DriverContext, record: RevertRecord) -> tuple[str, float, int]:
    return (ctx.run_id, float(record.data["connect_timeout_s"]), int(record.data["connect_attempts"]))


def _targets(record: RevertRecord, host: HostSpec) -> list[tuple[int, int]]:
    """The (pid, start ticks) ``prepare`` resolved on ``host`` for a process fault."""
    procs = ((record.data.get("resolved") or {}).get(host.name) or {}).get("procs") or []
    return [(int(p["pid"]), int(p["ticks"])) for p in procs]


def _sessions(record: RevertRecord, host: HostSpec) -> list[int]:
    results = record.data.get("results") or {}
    return [int(s) for s in (results.get(host.name) or {}).get("sessions", [])]


def _why(o: HostOutcome[Any]) -> str:
    if o.error is not None:
        return str(o.error)
    res = o.value
    if isinstance(res, CommandResult):
        return f"exit {res.exit_status}: {res.stderr.strip() or res.stdout.strip() or 'no output'}"
    return "no result"


def _raise_failures(outcomes: Sequence[HostOutcome[Any]], what: str) -> None:
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return
    first = failed[0].error
    # A refused host key is the one error that must keep its type: it is a security stop.
    cls: Callable[..., DriverError] = HostKeyRefused if isinstance(first, HostKeyRefused) else DriverError
    raise cls(
        f"{what} failed on {len(failed)} of {len(outcomes)} host(s): "
        + "; ".join(f"{o.host.name}: {_why(o)}" for o in failed),
        driver="ssh",
    ) from first


def _inject_error(op: str, target: str, failed: Sequence[HostOutcome[CommandResult]]) -> DriverError:
    statuses = {o.value.exit_status for o in failed if o.value is not None}
    message = f"{op} failed on " + "; ".join(f"{o.host.name}: {_why(o)}" for o in failed)
    errors = [o.error for o in failed if o.error is not None]
    if errors and all(isinstance(e, HostKeyRefused) for e in errors) and not statuses:
        err: DriverError = HostKeyRefused(message, driver="ssh", target=target)
    elif statuses == {remote.EXIT_UNSUPPORTED} and not errors:
        err = Unsupported(message, driver="ssh", target=target)
    elif statuses == {remote.EXIT_UNSAFE} and not errors:
        err = UnsafeTarget(message, driver="ssh", target=target)
    elif statuses == {remote.EXIT_NOT_FOUND} and not errors:
        err = TargetNotFound(message, driver="ssh", target=target)
    else:
        err = DriverError(message + " (hosts that succeeded were reverted)", driver="ssh", target=target)
    err.__cause__ = errors[0] if errors else None
    return err
