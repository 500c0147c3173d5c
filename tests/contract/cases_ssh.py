"""Contract cases of the ssh driver, against a real OpenSSH server on 127.0.0.1.

Each case starts a one-host fleet of its own (``tests/integration/sshfleet``: sshd with
throwaway host and user keys, and an inventory naming it ``h0``). The "remote" host is
this machine, so every fault is aimed only at what the case itself started, and seen
here, independently of the driver:

- ``kill``: the child of a mini lab supervisor (``targets.lab_replica``) that restarts it
  1.5 s after it dies; visible while the child recorded in the lab state is not alive;
- ``suspend``: a sleeper with a unique marker; visible while ``/proc`` says ``T``;
- ``stress_cpu``: processes carrying the fault's ``CHAOSLAB_FAULT`` mark in their
  environment burn CPU;
- ``iptables_drop`` and ``netem``: a TCP server inside a network namespace the case
  creates (the rule and the qdisc live there); visible as a failed or slow connect
  from inside it. netem needs ``sch_netem`` in the kernel: without it the case is
  skipped even in CI, like the net driver's netem cases.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord
from chaoslab.drivers.net import netem_support
from tests.contract.cases import FaultCase, Target
from tests.contract.targets import lab_replica, netns_available, netns_server, sleepers, unique_marker
from tests.integration.sshfleet import SSHFleet, sshd_available

LEASE_S = 2.0
RESTART_DELAY_S = 1.5  # the supervisor's back-off: how long a killed replica stays down
HOST = "ssh:h0"


def _sshd() -> tuple[bool, str]:
    if not sshd_available():
        return False, "OpenSSH server as root (apt-get install openssh-server)"
    try:
        import paramiko  # noqa: F401  (only whether it imports)
    except ImportError:
        return False, "paramiko (pip install 'chaoslab[ssh]')"
    return True, ""


def _sshd_and_netns() -> tuple[bool, str]:
    ok, why = _sshd()
    if ok:
        ok, why = netns_available()
    if ok and shutil.which("iptables") is None:
        ok, why = False, "iptables (apt-get install iptables)"
    return ok, why


def _sshd_and_netem() -> tuple[bool, str]:
    ok, why = _sshd_and_netns()
    if not ok:
        return ok, why
    ok, why = netem_support()
    if not ok and "no netem" in why:
        return False, f"kernel has no netem ({why})"
    return ok, why


def _pattern(marker: str) -> str:
    """A regex matching ``marker`` whose own text does not: ``abc`` → ``ab[c]``.

    The pattern travels in the record, and the record in the argv of whatever reverts
    from a new process; pgrep -f on the host would otherwise find that process too (and
    a kill's revert would call the target healed at once).
    """
    return f"{marker[:-1]}[{marker[-1]}]"


@contextlib.contextmanager
def _fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """One sshd; yields the driver args naming its inventory."""
    with SSHFleet(root=tmp_path / "fleet", size=1) as fleet:
        inventory = fleet.inventory(tmp_path / "inventory.yaml")
        yield {"inventory": str(inventory)}


@contextlib.contextmanager
def _supervised(tmp_path: Path) -> Iterator[Target]:
    with _fleet(tmp_path) as conn, lab_replica(tmp_path / "lab", restart_delay_s=RESTART_DELAY_S) as replica:
        yield Target(selector=HOST, handle=replica, args={**conn, "pattern": _pattern(replica.marker)})


@contextlib.contextmanager
def _sleeper(tmp_path: Path) -> Iterator[Target]:
    marker = unique_marker()
    with _fleet(tmp_path) as conn, sleepers(marker) as procs:
        yield Target(selector=HOST, handle=procs, args={**conn, "pattern": _pattern(marker)})


@contextlib.contextmanager
def _host(tmp_path: Path) -> Iterator[Target]:
    with _fleet(tmp_path) as conn:
        yield Target(selector=HOST, args=conn)


@contextlib.contextmanager
def _namespace(tmp_path: Path) -> Iterator[Target]:
    with _fleet(tmp_path) as conn, netns_server() as server:
        args = {**conn, "netns": server.netns, "port": server.port}
        yield Target(selector=HOST, handle=server, args=args)


@contextlib.contextmanager
def _namespace_lo(tmp_path: Path) -> Iterator[Target]:
    with _fleet(tmp_path) as conn, netns_server() as server:
        args = {**conn, "netns": server.netns, "interface": "lo"}
        yield Target(selector=HOST, handle=server, args=args)


# --- observers ------------------------------------------------------------------------------


def _replica_down(target: Target, record: RevertRecord) -> bool:
    return not target.handle.live()


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _stopped(target: Target, record: RevertRecord) -> bool:
    return any(_proc_state(p.pid) == "T" for p in target.handle)


@dataclass(frozen=True, kw_only=True)
class _Marked:
    pid: int
    cpu_ticks: int


def _marked(fault_id: str) -> list[_Marked]:
    """Live processes whose environment carries this fault's mark, with their CPU ticks."""
    mark = f"CHAOSLAB_FAULT={fault_id}.".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if mark not in (proc / "environ").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found.append(_Marked(pid=int(proc.name), cpu_ticks=int(fields[11]) + int(fields[12])))
    return found


def _burning(target: Target, record: RevertRecord) -> bool:
    before = {m.pid: m.cpu_ticks for m in _marked(record.fault_id)}
    if not before:
        return False
    time.sleep(0.3)  # the measurement window itself: a CPU rate needs an interval
    after = {m.pid: m.cpu_ticks for m in _marked(record.fault_id)}
    used = sum(after[p] - before[p] for p in after.keys() & before.keys())
    return used / os.sysconf("SC_CLK_TCK") > 0.03  # >10% of a core over 0.3 s


def _blocked(target: Target, record: RevertRecord) -> bool:
    return not target.handle.reachable("127.0.0.1")


def _slow(target: Target, record: RevertRecord) -> bool:
    took = target.handle.connect_s(timeout_s=2.0)
    return took is None or took >= 0.15  # SYN and SYN-ACK each delayed by 100 ms


CASES = [
    FaultCase(
        id="ssh.kill",
        driver="ssh",
        op="kill",
        args={"heal_timeout": "15s"},
        make_target=_supervised,
        observe=_replica_down,
        lease_s=None,
        heal_s=10.0,
        available=_sshd,
    ),
    FaultCase(
        id="ssh.suspend",
        driver="ssh",
        op="suspend",
        make_target=_sleeper,
        observe=_stopped,
        lease_s=LEASE_S,
        available=_sshd,
    ),
    FaultCase(
        id="ssh.stress_cpu",
        driver="ssh",
        op="stress_cpu",
        args={"workers": 1, "backend": "shell"},
        make_target=_host,
        observe=_burning,
        lease_s=LEASE_S,
        available=_sshd,
    ),
    FaultCase(
        id="ssh.iptables_drop",
        driver="ssh",
        op="iptables_drop",
        make_target=_namespace,
        observe=_blocked,
        lease_s=LEASE_S,
        available=_sshd_and_netns,
    ),
    FaultCase(
        id="ssh.netem",
        driver="ssh",
        op="netem",
        args={"delay": "100ms"},
        make_target=_namespace_lo,
        observe=_slow,
        lease_s=LEASE_S,
        available=_sshd_and_netem,
        required_in_ci=False,
    ),
]
