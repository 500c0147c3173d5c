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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgspec

from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    RevertResult,
    check_args,
    parse_duration,
    with_defaults,
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
from chaoslab.drivers.watchdog import report_lapse
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


class SSHDriver(Driver):
    """Faults and probes on a fleet of hosts over SSH (see the module docstring)."""

    name = "ssh"
    summary = "processes, CPU stress, iptables and netem on hosts over SSH"
    install_hint = INSTALL_HINT
    heartbeat_ops = frozenset({"suspend", "stress_cpu", "iptables_drop", "netem"})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, float, int], ConnectionPool] = {}

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    # -- validation (pure) -------------------------------------------------------------

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems = check_args(op, args)
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
        if problems := self.validate(op, args, target):
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

    # -- faults -------------------------------------------------------------------------

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        a = self._checked(op, args, target)
        inv = _load(a)
        seed = _seed(a, ctx)
        hosts = pick_hosts(inv.match(str(target)), a["pick"], seed, **_limits(a))
        if op.lease is LeaseKind.NONE:
            lease: float | None = None
        else:
            lease = DEFAULT_LEASE_S if lease_s is None else float(lease_s)
            if lease <= 0:
                raise InvalidInput([Problem(path="lease", message="a lease must be positive")])
        data: dict[str, Any] = {
            "inventory": str(inv.path),
            "hosts": [h.to_dict() for h in hosts],
            "state_dir": inv.settings.remote_state_dir,
            "concurrency": int(a.get("concurrency") or inv.settings.concurrency),
            "command_timeout_s": _timeout(a, inv.settings.command_timeout_s),
            "connect_timeout_s": inv.settings.connect_timeout_s,
            "connect_attempts": inv.settings.connect_attempts,
            "seed": seed,
        }
        record = RevertRecord(
            driver=self.name,
            operation=op.name,
            target=str(target),
            run_id=ctx.run_id,
            args=dict(args),
            lease_s=lease,
        )
        if op.name == "iptables_drop":
            data["netns"] = a.get("netns")
            data["tag"] = f"chaoslab:{record.fault_id}"
            data["rules"] = remote.iptables_rules(
                record.fault_id,
                port=a["port"],
                protocol=a["protocol"],
                direction=a["direction"],
                peer=a.get("peer"),
            )
        elif op.name == "netem":
            data["netns"] = a.get("netns")
            data["interface"] = a["interface"]
            data["handle"] = remote.netem_handle(record.fault_id)
        if not ctx.dry:
            data |= self._resolve(ctx, op, a, hosts, data, record.target)
        return record.with_data(**data)

    def _resolve(
        self,
        ctx: DriverContext,
        op: Operation,
        a: Mapping[str, Any],
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
        selector = _selector(a) if op.name in _PROCESS_OPS else None
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
            most = int(a["max_processes"])
            crowded = [f"{n} ({len(r['procs'])})" for n, r in resolved.items() if len(r["procs"]) > most]
            if crowded:
                raise UnsafeTarget(
                    f"{by} {value!r} matches more than max_processes={most} processes "
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

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        op = self._op(record)
        a = with_defaults(op, record.args)
        hosts, pool, timeout_s, concurrency = self._context(ctx, record)
        lease = record.lease_s or DEFAULT_LEASE_S
        if ctx.dry:
            ctx.log(f"ssh: dry run, would {op.name} on {', '.join(h.name for h in hosts)}")
            return record
        if op.name in _PROCESS_OPS:
            _check_resolved(record, hosts)
        started = time.time()
        outcomes = fan_out(
            hosts,
            lambda h: _run(pool, h, _inject_script(op.name, record, h, a, lease), timeout_s),
            concurrency=concurrency,
        )
        failed = [o for o in outcomes if o.error is not None or (o.value is not None and not o.value.ok)]
        fingerprints = pool.accepted_fingerprints()
        pinned = {h.name: fingerprints[h.name] for h in hosts if h.name in fingerprints}
        if failed:
            if op.lease is not LeaseKind.NONE:
                # All or nothing: undo the hosts where the fault took (and any half-done).
                self._revert_hosts(pool, record.with_data(host_keys=pinned), hosts, timeout_s, concurrency)
            err = _inject_error(op.name, record.target, failed)
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
        enriched = record.with_data(results=per_host, host_keys=pinned, injected_at=started)
        if record.lease_s is not None:
            enriched = msgspec.structs.replace(enriched, lease_expires_at=started + lease)
        return enriched

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        op = self._op(record)
        hosts, pool, timeout_s, concurrency = self._context(ctx, record)
        if op.name == "kill":
            return self._await_heal(record, hosts, pool, timeout_s, concurrency)
        outcomes = self._revert_hosts(pool, record, hosts, timeout_s, concurrency)
        lapses = [
            f"{o.host.name}: {why}"
            for o in outcomes
            if o.value is not None
            for why in remote.parse_kv(o.value.stdout).get("lapsed", [])
        ]
        if lapses and record.heartbeat and record.run_id == ctx.run_id:
            report_lapse(ctx.state_dir, record.fault_id, "the host ended it: " + "; ".join(lapses))
        failed = [o for o in outcomes if o.error is not None or (o.value is not None and not o.value.ok)]
        if failed:
            raise DriverError(
                "revert failed on "
                + "; ".join(f"{o.host.name}: {_why(o)}" for o in failed)
                + " (the host's watchdog still ends the fault when the lease expires)",
                driver="ssh",
                target=record.target,
            )
        return RevertResult(reverted=True, detail=f"reverted on {len(hosts)} host(s)")

    def identities(self, record: RevertRecord) -> tuple[str, ...]:
        """What the fault hits on each picked host, named as the local drivers name it on
        their own host, with the host's own name (resolved on the host by ``prepare``):
        ``proc:<host>:<pid>:<start time>`` for kill and suspend (psutil's
        ``create_time``), ``host:<host>:cpu``, ``host:<host>:netns:<netns or ->``. So
        ``ssh:h0`` and ``ssh:tag=eu`` naming one host, a pattern and a pid naming one
        process, two inventory entries for one machine, and the process driver on the
        machine itself all meet on one key. A host ``prepare`` could not reach keeps a
        key by its pinned fingerprint or address (its fault is not applied)."""
        resolved: Mapping[str, Any] = record.data.get("resolved") or {}
        op = record.operation
        keys: list[str] = []
        for h in record.data.get("hosts", []):
            node = str((resolved.get(h.get("name")) or {}).get("node") or "")
            if node and op in _PROCESS_OPS:
                procs = resolved[h["name"]].get("procs") or []
                keys += [f"proc:{node}:{p['pid']}:{float(p['create_time']):.2f}" for p in procs]
                continue
            if node:
                keys.append(
                    f"host:{node}:cpu" if op == "stress_cpu" else f"host:{node}:netns:{_netns(record)}"
                )
                continue
            fps = sorted(str(f) for f in h.get("fingerprints") or ())
            ident = fps[0] if fps else f"{h.get('address')}:{h.get('port')}"
            keys.append(f"ssh:{ident}:{_unresolved_what(record)}")
        return tuple(keys) or (f"{self.name}:{record.target}",)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        op = self._op(record)
        hosts, pool, timeout_s, concurrency = self._context(ctx, record)
        results = record.data.get("results") or {}

        def one(host: HostSpec) -> CommandResult:
            stopped = (results.get(host.name) or {}).get("pids", []) if op.name == "suspend" else []
            script = remote.check_script(
                op.name,
                remote.instance_id(record.fault_id, host.name),
                str(record.data["state_dir"]),
                record.data,
                stopped_pids=stopped,
                sessions=_sessions(record, host),
            )
            return _run(pool, host, script, timeout_s)

        residue: list[str] = []
        if op.name == "kill" and "heal_timeout" in record.args and "pid" not in record.args:
            # A kill leaves nothing on the host, but the target is not back until a
            # matching process runs again (what revert waits for).
            by, value = _selector(record.args)
            for o in fan_out(
                hosts,
                lambda h: _run(pool, h, remote.count_script(by, value), timeout_s),
                concurrency=concurrency,
            ):
                count = remote.parse_kv(o.value.stdout).get("count") if o.value is not None else None
                if o.error is not None or o.value is None or not o.value.ok or not count:
                    # A count that never came back is not "zero": say so, never "not healed".
                    residue.append(f"{o.host.name}: cannot verify the heal ({_why(o)})")
                elif count == ["0"]:
                    residue.append(f"{o.host.name}: no process matches {by} {value!r} yet (not healed)")
        for o in fan_out(hosts, one, concurrency=concurrency):
            if o.error is not None or o.value is None or not o.value.ok:
                residue.append(f"{o.host.name}: cannot verify ({_why(o)})")
                continue
            residue += [f"{o.host.name}: {r}" for r in remote.parse_kv(o.value.stdout).get("residue", [])]
        return CleanReport(
            clean=not residue,
            residue=tuple(residue),
            detail=f"checked {len(hosts)} host(s)",
        )

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

    def _op(self, record: RevertRecord) -> Operation:
        op = self.operation(record.operation)
        if op is None or op.kind is not Kind.FAULT:
            raise DriverError(f"no fault {record.operation!r}", driver="ssh", target=record.target)
        return op

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
            )
            return _run(pool, host, script, timeout_s)

        return fan_out(hosts, one, concurrency=concurrency)

    def _await_heal(
        self,
        record: RevertRecord,
        hosts: Sequence[HostSpec],
        pool: ConnectionPool,
        timeout_s: float,
        concurrency: int,
    ) -> RevertResult:
        """A kill cannot be undone: optionally wait for a matching process to be back."""
        a = record.args
        wait_s = parse_duration(a["heal_timeout"]) if "heal_timeout" in a else 0.0
        if wait_s <= 0 or "pid" in a:
            return RevertResult(reverted=True, detail="a killed process cannot be restored by chaoslab")
        by, value = _selector(a)
        injected = float(record.data.get("injected_at") or record.created_at)
        deadline = time.monotonic() + wait_s

        def healed(host: HostSpec) -> float | None:
            while True:
                res = _run(pool, host, remote.count_script(by, value), timeout_s)
                if res.ok and remote.parse_kv(res.stdout).get("count", ["0"]) != ["0"]:
                    return time.time() - injected
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.2)

        outcomes = fan_out(hosts, healed, concurrency=concurrency)
        missing = [o.host.name for o in outcomes if o.error is not None or o.value is None]
        if missing:
            return RevertResult(
                reverted=False, detail=f"not healed within {wait_s:g}s on {', '.join(missing)}"
            )
        ttr = max(float(o.value) for o in outcomes if o.value is not None)
        return RevertResult(reverted=True, detail="healed on every host", time_to_recover_s=ttr)


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


_PROCESS_OPS = ("kill", "suspend")


def _netns(record: RevertRecord) -> str:
    return str(record.data.get("netns") or "-")


def _unresolved_what(record: RevertRecord) -> str:
    if record.operation == "stress_cpu":
        return "cpu"
    if record.operation in _PROCESS_OPS:
        a = record.args
        return "proc:" + ",".join(f"{k}={a[k]}" for k in ("pid", "name", "pattern") if k in a)
    return f"netns:{_netns(record)}"


def _check_resolved(record: RevertRecord, hosts: Sequence[HostSpec]) -> None:
    """A process fault hits only processes ``prepare`` resolved (and locked): a host it
    could not reach then is not touched now, and the fault is "not applied"."""
    unresolved: Mapping[str, Any] = record.data.get("unresolved") or {}
    resolved: Mapping[str, Any] = record.data.get("resolved") or {}
    missing = [h.name for h in hosts if h.name not in resolved]
    if not missing:
        return
    why = "; ".join(f"{n}: {(unresolved.get(n) or {}).get('error', 'not resolved')}" for n in missing)
    message = f"{record.operation}: the processes on {', '.join(missing)} could not be resolved ({why})"
    refused = all((unresolved.get(n) or {}).get("key_refused") for n in missing)
    cls: Callable[..., DriverError] = HostKeyRefused if refused else DriverError
    raise cls(message + " (nothing was changed)", driver="ssh", target=record.target, not_applied=True)


def _pool_key(ctx: DriverContext, record: RevertRecord) -> tuple[str, float, int]:
    return (ctx.run_id, float(record.data["connect_timeout_s"]), int(record.data["connect_attempts"]))


def _inject_script(op: str, record: RevertRecord, host: HostSpec, a: Mapping[str, Any], lease: float) -> str:
    fid = remote.instance_id(record.fault_id, host.name)
    state_dir, data = str(record.data["state_dir"]), record.data
    beats = bool(record.heartbeat)
    if op in _PROCESS_OPS:
        procs = ((data.get("resolved") or {}).get(host.name) or {}).get("procs") or []
        targets = [(int(p["pid"]), int(p["ticks"])) for p in procs]
        if op == "kill":
            return remote.kill_script(fid, state_dir, targets, str(a["signal"]))
        return remote.suspend_script(fid, state_dir, targets, lease, heartbeat=beats)
    if op == "stress_cpu":
        return remote.stress_script(
            fid,
            state_dir,
            workers=a.get("workers"),
            load=int(a["load"]),
            lease_s=lease,
            backend=str(a["backend"]),
            heartbeat=beats,
        )
    if op == "iptables_drop":
        return remote.iptables_script(
            fid, state_dir, rules=data["rules"], netns=data.get("netns"), lease_s=lease, heartbeat=beats
        )
    if op == "netem":
        netem_args: list[str] = []
        if "delay" in a:
            netem_args += ["delay", f"{parse_duration(a['delay']) * 1000:g}ms"]
            if "jitter" in a:
                netem_args.append(f"{parse_duration(a['jitter']) * 1000:g}ms")
        if "loss" in a:
            netem_args += ["loss", f"{float(a['loss']):g}%"]
        return remote.netem_script(
            fid,
            state_dir,
            interface=str(data["interface"]),
            netns=data.get("netns"),
            netem_args=netem_args,
            handle=str(data["handle"]),
            lease_s=lease,
            heartbeat=beats,
        )
    raise DriverError(f"no fault {op!r}", driver="ssh")


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
