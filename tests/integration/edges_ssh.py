"""Edge-column hooks of the ssh driver (see matrix_edges.py).

Every ssh case runs against a one-host fleet of its own (tests/contract/cases_ssh.py:
a per-cell sshd on 127.0.0.1, its inventory in ``target.args["inventory"]``), so a hook
may reconfigure that sshd, distrust its host key or point at a dead port without
touching another test:

- revert fails: the kill's healer (the per-cell lab supervisor) is stopped; a co-tenant
  re-stops what the suspend's revert continues (as process.suspend's row); for the CPU
  stress and the iptables drop the host locks the runner out (its sshd denies the user
  and drops the connections it serves);
- target unreachable: the same host at a port nobody listens on, or with a host key
  nobody trusts (an empty known_hosts);
- named two ways: a tag, a host-name glob, or a second inventory entry for one machine;
- relative paths: the inventory, its known_hosts and the user key, all relative to the
  run's directory; the same names in the recover directory are decoys (another key,
  another known_hosts, an inventory pointing at a port the hook watches).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from chaoslab.drivers.base import RevertRecord
from tests.conftest import wait_until
from tests.contract.cases import Target
from tests.integration.edges_local import restopping
from tests.integration.matrix_edges import EdgeHooks, NotApplicable, Variant
from tests.integration.sshfleet import keygen

# --- the fleet behind a target -----------------------------------------------------------------


def _inventory(target: Target) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(Path(target.args["inventory"]).read_text())
    return doc


def _host(target: Target) -> dict[str, Any]:
    (host,) = _inventory(target)["hosts"].values()
    return dict(host)


def _write_inventory(path: Path, hosts: dict[str, dict[str, Any]], **top: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**top, "hosts": hosts}, sort_keys=False))
    return path


@contextlib.contextmanager
def _nobody_listens() -> Iterator[int]:
    """A port bound (so nobody else can take it) but not listening: connect is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


# --- revert fails ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _healer_stopped(target: Target, record: RevertRecord) -> Iterator[None]:
    """The lab supervisor that restarts the killed replica is stopped (SIGSTOP): nothing
    brings the service back while the break holds. Lifted: the supervisor continues, and
    the hook waits until it has restarted the replica."""
    replica = target.handle
    sup = replica.supervisor.pid
    os.kill(sup, signal.SIGSTOP)
    try:
        # Under load the supervisor may have restarted it before the stop landed: the
        # service is down again, and stays down while its healer is stopped.
        if replica.live() and (pid := replica.pid()) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        yield
    finally:
        os.kill(sup, signal.SIGCONT)
    wait_until(replica.live, timeout_s=15.0, interval_s=0.05, what="the supervisor to restart the replica")


def _sshd(target: Target) -> tuple[int, Path]:
    """This cell's sshd: its pid and its config (``sshfleet``'s layout, found from the
    inventory: the user key sits at the fleet's root, each host has a directory there)."""
    host = _host(target)
    root = Path(host["key_file"]).parent
    (name,) = _inventory(target)["hosts"]
    return int((root / name / "sshd.pid").read_text().split()[0]), root / name / "sshd_config"


def _banner(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
        s.settimeout(2.0)
        return s.recv(8).startswith(b"SSH-")
    return False


def _reload(pid: int, port: int) -> None:
    """SIGHUP: sshd re-executes itself (same pid) with its config read again."""
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: _banner(port), timeout_s=15.0, interval_s=0.05, what="sshd to answer again")


@contextlib.contextmanager
def _locked_out(target: Target, record: RevertRecord) -> Iterator[None]:
    """The host locks the runner out: this cell's sshd is reconfigured to deny the user
    (``DenyUsers``, as an admin's lockout would) and the connections it already serves
    are closed, so the runner's revert and clean check fail at login, at once. Lifted:
    the config is restored and sshd reloaded."""
    pid, config = _sshd(target)
    port = int(_host(target)["port"])
    original = config.read_text()
    config.write_text(original + f"DenyUsers {_host(target)['user']}\n")
    try:
        _reload(pid, port)
        for child in psutil.Process(pid).children(recursive=True):  # per-connection sshd
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        yield
    finally:
        config.write_text(original)
        _reload(pid, port)


# --- target unreachable --------------------------------------------------------------------------


@contextlib.contextmanager
def _dead_port(target: Target, workdir: Path) -> Iterator[Variant]:
    """The host as the inventory names it, but at a port nobody listens on."""
    inv = _inventory(target)
    host = _host(target)
    with _nobody_listens() as port:
        path = _write_inventory(
            workdir / "dead.yaml",
            {"h0": {**host, "port": port}},
            known_hosts=inv["known_hosts"],
            remote_state_dir=inv["remote_state_dir"],
        )
        yield Variant(args={"inventory": str(path)})


@contextlib.contextmanager
def _unknown_key(target: Target, workdir: Path) -> Iterator[Variant]:
    """The live host, but its host key is in no known_hosts (and new keys are not trusted)."""
    inv = _inventory(target)
    (workdir / "empty.known").write_text("")
    path = _write_inventory(
        workdir / "stranger.yaml",
        {"h0": _host(target)},
        known_hosts=str(workdir / "empty.known"),
        trust_new_host_keys=False,
        remote_state_dir=inv["remote_state_dir"],
    )
    yield Variant(args={"inventory": str(path)})


# --- named two ways --------------------------------------------------------------------------------


def _selector(selector: str) -> Any:
    @contextlib.contextmanager
    def alias(target: Target, workdir: Path) -> Iterator[Variant]:
        yield Variant(selector=selector)

    return alias


@contextlib.contextmanager
def _second_entry(target: Target, workdir: Path) -> Iterator[Variant]:
    """Another inventory, where the same machine (same address, port and key) is ``web-1``."""
    inv = _inventory(target)
    path = _write_inventory(
        workdir / "other.yaml",
        {"web-1": {**_host(target), "tags": ["web"]}},
        known_hosts=inv["known_hosts"],
        remote_state_dir=inv["remote_state_dir"],
    )
    yield Variant(selector="ssh:web-1", args={"inventory": str(path)})


# --- relative paths ---------------------------------------------------------------------------------

REL_INVENTORY = "ssh/inventory.yaml"
REL_KNOWN = "fleet.known"  # relative to the inventory's directory
REL_KEY = "keys/user.key"


@contextlib.contextmanager
def _relative_inventory(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``inventory: ssh/inventory.yaml`` relative to the run's directory, naming its
    known_hosts and key file relative to itself. In ``elsewhere`` the same names hold a
    decoy: another user key, a known_hosts with another host key, and an inventory
    whose h0 is a port this hook listens on: recover must dial none of it."""
    inv = _inventory(target)
    host = _host(target)
    real = here / "ssh"
    (real / "keys").mkdir(parents=True)
    shutil.copy(host["key_file"], real / REL_KEY)
    (real / REL_KEY).chmod(0o600)
    shutil.copy(inv["known_hosts"], real / REL_KNOWN)
    relative_host = {**host, "key_file": REL_KEY}
    _write_inventory(
        here / REL_INVENTORY,
        {"h0": relative_host},
        known_hosts=REL_KNOWN,
        remote_state_dir=inv["remote_state_dir"],
    )
    decoy = elsewhere / "ssh"
    (decoy / "keys").mkdir(parents=True)
    keygen(decoy / REL_KEY)
    keygen(decoy / "decoy_host_key")
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap_port = int(trap.getsockname()[1])
        kind, blob = (decoy / "decoy_host_key.pub").read_text().split()[:2]
        (decoy / REL_KNOWN).write_text(f"[127.0.0.1]:{trap_port} {kind} {blob}\n")
        _write_inventory(
            elsewhere / REL_INVENTORY,
            {"h0": {**relative_host, "port": trap_port}},
            known_hosts=REL_KNOWN,
            remote_state_dir=str(elsewhere / "decoy-state"),
        )
        yield Variant(args={"inventory": REL_INVENTORY}, relative=(REL_INVENTORY, REL_KNOWN, REL_KEY))
        trap.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            conn, _ = trap.accept()
            conn.close()
            raise AssertionError("something dialled the decoy host of the recover directory")
    assert not (elsewhere / "decoy-state").exists(), "a fault's state was written at the decoy's"


# --- the row ----------------------------------------------------------------------------------------

_KILL_TWICE = NotApplicable(
    "a kill ends its target at once: while run A holds the fault, the process it hit (its "
    "lock key is that host's pid + start time) is dead, and any other name for it resolves "
    "to nothing or to the supervisor's restarted process, another process with another key"
)

HOOKS: dict[str, EdgeHooks] = {
    "ssh.kill": EdgeHooks(
        break_revert=_healer_stopped,
        revert_fails_args={"heal_timeout": "2s"},
        unreachable=_dead_port,
        alias=_KILL_TWICE,
        relative=_relative_inventory,
    ),
    "ssh.suspend": EdgeHooks(
        break_revert=restopping,  # the same co-tenant as process.suspend's
        unreachable=_unknown_key,
        alias=_selector("ssh:tag=fleet"),
        relative=_relative_inventory,
    ),
    "ssh.stress_cpu": EdgeHooks(
        break_revert=_locked_out,
        unreachable=_dead_port,
        alias=_second_entry,
        relative=_relative_inventory,
    ),
    "ssh.iptables_drop": EdgeHooks(
        break_revert=_locked_out,
        unreachable=_unknown_key,
        alias=_selector("ssh:h*"),
        relative=_relative_inventory,
    ),
}
