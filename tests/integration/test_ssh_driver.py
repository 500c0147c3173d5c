"""The ssh driver against real OpenSSH servers on 127.0.0.1 (see ``sshfleet``).

The "fleet" is this machine, so every fault targets only what the test itself started:
sleep processes with a unique name or command line, iptables rules inside a network
namespace the test creates, stressors that carry the fault's own mark.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.ssh.driver import SSHDriver
from chaoslab.drivers.ssh.pool import CommandTimeout, HostKeyRefused
from chaoslab.errors import DriverError, InvalidInput, TargetNotFound, UnsafeTarget, Unsupported
from tests.conftest import poll, require, wait_until
from tests.integration.sshfleet import SSHFleet, free_port, sshd_available
from tests.statepaths import env_state

pytestmark = [pytest.mark.sshd, pytest.mark.root]

try:
    import paramiko
except ImportError:  # the fleet fixture reports it (skip locally, fail in CI)
    paramiko = None

REPO = Path(__file__).resolve().parents[2]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFleet]:
    require(sshd_available(), "OpenSSH server (Debian openssh-server) and root")
    require(paramiko is not None, "paramiko (pip install 'chaoslab[ssh]')")
    f = SSHFleet(root=tmp_path_factory.mktemp("sshfleet"), size=4)
    with f:
        yield f


@pytest.fixture
def inventory(fleet: SSHFleet, tmp_path: Path) -> Path:
    return fleet.inventory(
        tmp_path / "inventory.yaml",
        tags={"h0": ["web", "eu"], "h1": ["web"], "h2": ["db"], "h3": ["db", "eu"]},
        connect_attempts=2,
        command_timeout="20s",
    )


class TrackingDriver(SSHDriver):
    """The real driver, remembering what it injected so a failing test still reverts."""

    def __init__(self) -> None:
        super().__init__()
        self.injected: list[tuple[DriverContext, RevertRecord]] = []

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        self.injected.append((ctx, record))
        done = super().inject(ctx, record)
        self.injected.append((ctx, done))
        return done


@pytest.fixture
def driver() -> Iterator[SSHDriver]:
    d = TrackingDriver()
    yield d
    for ctx, record in reversed(d.injected):
        if record.operation != "kill":
            with contextlib.suppress(DriverError):
                d.revert(ctx, record)
    d.close()


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id=uuid.uuid4().hex[:8], state_dir=tmp_path, seed=7, lab_dir=env_state().lab)


class Markers:
    """Processes the test starts (and the only ones its faults may touch)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def by_pattern(self) -> tuple[str, subprocess.Popen[bytes]]:
        marker = f"chaoslab-marker-{uuid.uuid4().hex[:10]}"
        proc = subprocess.Popen([marker, "300"], executable="/bin/sleep")
        self.procs.append(proc)
        return marker, proc

    def by_name(self) -> tuple[str, subprocess.Popen[bytes]]:
        name = f"clm{uuid.uuid4().hex[:10]}"  # 13 chars: fits comm (15)
        binary = self.root / name
        if not binary.exists():
            shutil.copy("/bin/sleep", binary)
        proc = subprocess.Popen([str(binary), "300"])
        self.procs.append(proc)
        return name, proc

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.wait(timeout=5)


@pytest.fixture
def markers(tmp_path: Path) -> Iterator[Markers]:
    m = Markers(tmp_path)
    yield m
    m.close()


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def fault_processes(record: RevertRecord) -> list[int]:
    """Local view (the fleet is this machine) of every process of the fault: those that
    carry its mark, and every member of the sessions it recorded."""
    sessions = {s for r in (record.data.get("results") or {}).values() for s in r.get("sessions", [])}
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = (proc / "environ").read_bytes()
            sid = int((proc / "stat").read_text().rsplit(") ", 1)[1].split()[3])
        except (OSError, IndexError, ValueError):
            continue
        if f"CHAOSLAB_FAULT={record.fault_id}.".encode() in env or sid in sessions:
            found.append(int(proc.name))
    return found


def stressors(record: RevertRecord) -> list[int]:
    """The fault's processes outside its watchdog's session."""
    watchdogs = {int(r["watchdog"]) for r in record.data["results"].values() if "watchdog" in r}
    return [p for p in fault_processes(record) if _sid(p) not in watchdogs]


def _sid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def fault(
    driver: SSHDriver,
    ctx: DriverContext,
    op: str,
    args: dict[str, Any],
    target: str,
    lease: float | None = 30,
) -> RevertRecord:
    record = driver.prepare(ctx, driver.operation(op), args, target, lease)  # type: ignore[arg-type]
    return driver.inject(ctx, record)


def probe(driver: SSHDriver, ctx: DriverContext, op: str, args: dict[str, Any], target: str) -> Any:
    return driver.probe(ctx, driver.operation(op), args, target)  # type: ignore[arg-type]


def assert_clean(driver: SSHDriver, ctx: DriverContext, record: RevertRecord) -> None:
    report = driver.check_clean(ctx, record)
    assert report.clean, report.residue
    assert not fault_processes(record)


# --- probes, inventory, selection ----------------------------------------------------------


def test_entry_point_loads_the_driver() -> None:
    from chaoslab.drivers.registry import DriverRegistry

    assert isinstance(DriverRegistry().get("ssh"), SSHDriver)


def test_probes_over_the_fleet(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    marker, _ = markers.by_pattern()
    args = {"inventory": str(inventory)}
    assert probe(driver, ctx, "reachable", args, "ssh:*") == {f"h{i}": True for i in range(4)}
    assert probe(driver, ctx, "process_count", {**args, "pattern": marker}, "ssh:tag=web") == {
        "h0": 1,
        "h1": 1,
    }
    assert probe(driver, ctx, "process_count", {**args, "pattern": marker}, "ssh:tag=db+eu") == {"h3": 1}
    out = probe(driver, ctx, "command", {**args, "argv": ["sh", "-c", "exit 3"]}, "ssh:h2")
    assert out["h2"]["exit_status"] == 3
    # A script too long to ride in the exec request goes on the channel's stdin instead.
    long = "x" * 40_000
    out = probe(driver, ctx, "command", {**args, "argv": ["printf", "%s", long]}, "ssh:h2")
    assert out["h2"] == {"exit_status": 0, "stdout": long, "stderr": ""}


def test_inventory_from_environment_and_selection(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msgspec

    ctx = msgspec.structs.replace(ctx, dry=True)  # the pick only: nothing resolved on the hosts
    monkeypatch.setenv("CHAOSLAB_SSH_INVENTORY", str(inventory))
    op = driver.operation("suspend")
    assert op is not None
    rec = driver.prepare(ctx, op, {"pattern": "x", "pick": "50%"}, "ssh:*", 5)
    picked = [h["name"] for h in rec.data["hosts"]]
    assert len(picked) == 2
    again = driver.prepare(ctx, op, {"pattern": "x", "pick": "50%"}, "ssh:*", 5)
    assert [h["name"] for h in again.data["hosts"]] == picked  # reproducible from the seed
    assert len(driver.prepare(ctx, op, {"pattern": "x", "pick": "one"}, "ssh:*", 5).data["hosts"]) == 1
    assert len(driver.prepare(ctx, op, {"pattern": "x", "pick": 3}, "ssh:*", 5).data["hosts"]) == 3
    with pytest.raises(TargetNotFound, match="no host 'nope'"):
        driver.prepare(ctx, op, {"pattern": "x"}, "ssh:nope", 5)
    with pytest.raises(TargetNotFound, match="tag"):
        driver.prepare(ctx, op, {"pattern": "x"}, "ssh:tag=mars", 5)
    monkeypatch.delenv("CHAOSLAB_SSH_INVENTORY")
    with pytest.raises(InvalidInput, match="CHAOSLAB_SSH_INVENTORY"):
        driver.prepare(ctx, op, {"pattern": "x"}, "ssh:*", 5)


def test_bad_inventory_and_arguments_are_reported_together(
    driver: SSHDriver, ctx: DriverContext, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "hosts": {
                    "a": {"address": "127.0.0.1", "port": 70000, "key_file": "k"},
                    "b": {"address": "127.0.0.1", "host_key_fingerprints": ["MD5:zz"]},
                }
            }
        )
    )
    op = driver.operation("suspend")
    assert op is not None
    with pytest.raises(InvalidInput) as err:
        driver.prepare(ctx, op, {"inventory": str(bad), "pattern": "x"}, "ssh:a", 5)
    text = str(err.value)
    assert "hosts.a.port" in text and "hosts.b.host_key_fingerprints" in text and "authenticate" in text
    problems = driver.validate(op, {"name": "x", "pid": 5, "pick": "150%"}, "lab:x")
    assert {p.path for p in problems} >= {"target", "pick", "suspend"}


# --- each fault: inject -> observable -> revert (twice) -> clean ---------------------------


def test_suspend_and_revert_twice(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    marker, proc = markers.by_pattern()
    rec = fault(
        driver, ctx, "suspend", {"inventory": str(inventory), "pattern": marker, "pick": "all"}, "ssh:tag=web"
    )
    assert state(proc.pid) == "T"
    assert rec.data["results"]["h0"]["pids"] == [proc.pid]
    assert rec.lease_expires_at is not None
    assert not driver.check_clean(ctx, rec).clean
    assert driver.revert(ctx, rec).reverted
    assert state(proc.pid) in ("S", "R")
    assert driver.revert(ctx, rec).reverted  # idempotent
    assert_clean(driver, ctx, rec)


def test_a_fault_hits_one_matching_host_by_default(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    # one blast-radius default on every platform: the old ``ssh.*`` names included
    marker, proc = markers.by_pattern()
    record = driver.prepare(
        ctx, driver.operation("suspend"), {"inventory": str(inventory), "pattern": marker}, "ssh:h0,h2", 30
    )  # type: ignore[arg-type]
    assert len(record.data["hosts"]) == 1, record.data
    everywhere = driver.prepare(
        ctx,
        driver.operation("suspend"),
        {"inventory": str(inventory), "pattern": marker, "pick": "all"},
        "ssh:h0,h2",
        30,
    )  # type: ignore[arg-type]
    assert len(everywhere.data["hosts"]) == 2


def test_output_written_just_before_exit_is_never_lost(inventory: Path) -> None:
    # sshd may send a command's exit status before the last of its output; a reader that
    # stops at the status loses the tail (this is how a fault's "backend=" line went
    # missing in CI). Large final writes make the race likely on every try.
    from chaoslab.drivers.ssh.inventory import load_inventory
    from chaoslab.drivers.ssh.pool import ConnectionPool

    host = load_inventory(inventory).hosts["h0"]
    with ConnectionPool(connect_attempts=2) as pool:
        for size in [1, 10, 100, 1000] * 5:
            res = pool.run(host, f"seq 1 {size * 1000}; echo tail=ok", timeout_s=20)
            assert res.ok
            assert res.stdout.endswith("tail=ok\n"), (size, res.stdout[-40:])
            assert res.stdout.count("\n") == size * 1000 + 1


def test_inject_revert_and_check_share_one_connection_per_host(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, inventory: Path, markers: Markers, tmp_path: Path
) -> None:
    # revert and check_clean see each host pinned to the key accepted at inject; they
    # must reuse inject's connection (a second handshake costs round trips per host) ...
    import psutil

    marker, _proc = markers.by_pattern()
    rec = fault(
        driver, ctx, "suspend", {"inventory": str(inventory), "pattern": marker, "pick": "all"}, "ssh:tag=web"
    )
    assert driver.revert(ctx, rec).reverted
    assert driver.check_clean(ctx, rec).clean
    names = {h.port: h.name for h in fleet.hosts}
    mine = [
        names[c.raddr.port]
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port in names and c.status == psutil.CONN_ESTABLISHED
    ]
    assert sorted(mine) == ["h0", "h1"]
    # ... but a live connection never serves a spec pinning another key: that is verified
    # by a new connect, and refused.
    doc = yaml.safe_load(inventory.read_text())
    doc["hosts"]["h0"]["host_key_fingerprints"] = [fleet.hosts[1].fingerprint]
    wrong = tmp_path / "wrong-pin.yaml"
    wrong.write_text(yaml.safe_dump(doc))
    with pytest.raises(HostKeyRefused, match="pinned"):
        probe(driver, ctx, "reachable", {"inventory": str(wrong)}, "ssh:h0")


def test_one_process_named_two_ways_through_two_hosts_is_one_lock(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    """Keys name what a fault hits, resolved on the host: a pattern on ``ssh:h0`` and a pid
    on ``ssh:tag=web+eu`` (the same host) or on ``ssh:h2`` (another sshd on the same
    machine) are one process, and the process driver names it the same way."""
    import msgspec
    import psutil

    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.errors import LockHeld
    from chaoslab.safety.claims import ClaimingLedger

    marker, proc = markers.by_pattern()
    suspend = driver.operation("suspend")
    assert suspend is not None
    inv = {"inventory": str(inventory)}
    by_pattern = driver.prepare(ctx, suspend, {**inv, "pattern": marker}, "ssh:h0", 30)
    by_pid = driver.prepare(ctx, suspend, {**inv, "pid": proc.pid}, "ssh:tag=web+eu", 30)
    elsewhere = driver.prepare(ctx, suspend, {**inv, "pid": proc.pid}, "ssh:h2", 30)
    key = f"proc:{os.uname().nodename}:{proc.pid}:{psutil.Process(proc.pid).create_time():.2f}"
    assert (
        driver.identities(by_pattern) == driver.identities(by_pid) == driver.identities(elsewhere) == (key,)
    )
    local = DriverRegistry().get("process")
    local_op = local.operation("suspend")
    assert local_op is not None
    assert key in local.identities(local.prepare(ctx, local_op, {}, f"pid:{proc.pid}", 30))
    where = {"directory": env_state().ledger, "locks_directory": env_state().locks}
    with (
        ClaimingLedger("run-a", lease_s=None, **where) as a,
        ClaimingLedger("run-b", lease_s=None, **where) as b,
    ):
        a.claim(msgspec.structs.replace(by_pattern, run_id="run-a", keys=driver.identities(by_pattern)))
        with pytest.raises(LockHeld, match=str(proc.pid)):
            b.claim(msgspec.structs.replace(by_pid, run_id="run-b", keys=driver.identities(by_pid)))
    # Host resources too: one machine's CPU through two of its names.
    stress = driver.operation("stress_cpu")
    assert stress is not None
    cpu = [
        driver.identities(driver.prepare(ctx, stress, {**inv, "workers": 1}, t, 30))
        for t in ("ssh:h0", "ssh:h1")
    ]
    assert cpu[0] == cpu[1] == (f"host:{os.uname().nodename}:cpu",)
    assert state(proc.pid) in ("S", "R"), "prepare and claim touch nothing"


def test_kill_by_name_then_heal_is_measured(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    name, proc = markers.by_name()
    rec = fault(
        driver,
        ctx,
        "kill",
        {"inventory": str(inventory), "name": name, "signal": "TERM", "heal_timeout": "5s"},
        "ssh:h1",
        lease=None,
    )
    assert proc.wait(timeout=5) == -signal.SIGTERM
    # Something (here: the test, standing in for a supervisor) restarts the process.
    threading.Timer(
        0.3, lambda: markers.procs.append(subprocess.Popen([str(markers.root / name), "300"]))
    ).start()
    result = driver.revert(ctx, rec)
    assert result.reverted and result.time_to_recover_s is not None
    assert 0.3 <= result.time_to_recover_s < 5
    assert_clean(driver, ctx, rec)


def test_kill_by_pid(driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers) -> None:
    _, proc = markers.by_pattern()
    rec = fault(driver, ctx, "kill", {"inventory": str(inventory), "pid": proc.pid}, "ssh:h2", lease=None)
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert driver.revert(ctx, rec).reverted
    assert_clean(driver, ctx, rec)


def test_process_fault_matching_nothing_changes_nothing(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    marker, proc = markers.by_pattern()
    # h0 has the marker, the pattern also requires a second one that nobody has: the
    # preflight fails on every host before any process is stopped.
    with pytest.raises(TargetNotFound, match="nothing was changed"):
        fault(
            driver,
            ctx,
            "suspend",
            {"inventory": str(inventory), "pattern": f"{marker}-absent", "pick": "all"},
            "ssh:*",
        )
    assert state(proc.pid) in ("S", "R")


def test_too_broad_a_match_is_refused_before_any_change(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    marker, first = markers.by_pattern()
    others = [subprocess.Popen([marker, "301"], executable="/bin/sleep") for _ in range(2)]
    markers.procs += others
    args = {"inventory": str(inventory), "pattern": marker, "max_processes": 2}
    with pytest.raises(UnsafeTarget, match="max_processes=2"):
        fault(driver, ctx, "suspend", args, "ssh:h0")
    assert all(state(p.pid) in ("S", "R") for p in [first, *others])
    with pytest.raises(InvalidInput, match="every command line"):
        fault(driver, ctx, "kill", {"inventory": str(inventory), "pattern": "x|"}, "ssh:h0")


@pytest.mark.parametrize("backend", ["stress-ng", "shell"])
def test_stress_cpu(driver: SSHDriver, ctx: DriverContext, inventory: Path, backend: str) -> None:
    if backend == "stress-ng":
        require(shutil.which("stress-ng") is not None, "stress-ng (Debian stress-ng)")
    rec = fault(
        driver,
        ctx,
        "stress_cpu",
        {"inventory": str(inventory), "workers": 1, "backend": backend},
        "ssh:h0",
        lease=20,
    )
    assert rec.data["results"]["h0"]["backend"] == backend
    # Observable: the fault's processes exist and burn CPU.
    wait_until(
        lambda: len(fault_processes(rec)) >= 2, timeout_s=3, interval_s=0.05, what="the fault's processes"
    )
    before = _cpu_ticks(fault_processes(rec))
    # Idle processes gain no ticks; a busy loop gains 5 (50 ms of CPU) within a few seconds
    # even on this shared, loaded machine. The processes are listed afresh each time:
    # stress-ng forks its worker a moment after it starts, and that worker counts in full.
    wait_until(
        lambda: _cpu_ticks(fault_processes(rec)) - before >= 5,
        timeout_s=5,
        interval_s=0.05,
        what="50 ms of CPU burnt",
    )
    assert driver.revert(ctx, rec).reverted
    assert driver.revert(ctx, rec).reverted
    assert_clean(driver, ctx, rec)


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


class Netns:
    """A network namespace with a TCP listener on 127.0.0.1:port inside it."""

    def __init__(self) -> None:
        self.name = f"clssh-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        code = (
            "import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1',{self.port})); s.listen(64); print('up', flush=True)\n"
            "while True:\n  c,_=s.accept(); c.close()\n"
        )
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        assert self.server.stdout is not None and self.server.stdout.readline() == b"up\n"

    def connects(self) -> bool:
        code = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 0.5).close()"
        return (
            subprocess.run(
                ["ip", "netns", "exec", self.name, sys.executable, "-c", code], capture_output=True
            ).returncode
            == 0
        )

    def rules(self) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, "iptables", "-w", "-S"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def close(self) -> None:
        self.server.kill()
        self.server.wait(timeout=5)
        assert self.server.stdout is not None
        self.server.stdout.close()
        subprocess.run(["ip", "netns", "del", self.name], check=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    require(shutil.which("iptables") is not None and shutil.which("ip") is not None, "iptables + iproute2")
    ns = Netns()
    yield ns
    ns.close()


def test_iptables_drop_in_a_namespace(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, netns: Netns
) -> None:
    assert netns.connects()
    rec = fault(
        driver,
        ctx,
        "iptables_drop",
        {"inventory": str(inventory), "port": netns.port, "netns": netns.name},
        "ssh:h3",
    )
    assert f'"chaoslab:{rec.fault_id}"' in netns.rules()
    assert not netns.connects()
    assert not driver.check_clean(ctx, rec).clean
    assert driver.revert(ctx, rec).reverted
    assert driver.revert(ctx, rec).reverted
    assert netns.connects()
    assert "chaoslab" not in netns.rules()
    assert_clean(driver, ctx, rec)


def test_netem_is_detected(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, netns: Netns, fleet: SSHFleet
) -> None:
    args = {"inventory": str(inventory), "interface": "lo", "netns": netns.name, "delay": "50ms"}
    record = driver.prepare(ctx, driver.operation("netem"), args, "ssh:h0", 10)  # type: ignore[arg-type]
    try:
        injected = driver.inject(ctx, record)
    except Unsupported as exc:
        # This machine's kernel has no sch_netem: a clear error and nothing left behind.
        assert "netem" in str(exc) and "h0" in str(exc)
        assert_clean(driver, ctx, record)
        assert not (fleet.root / "remote-state").exists()
        return
    qdisc = subprocess.run(
        ["ip", "netns", "exec", netns.name, "tc", "qdisc", "show", "dev", "lo"],
        capture_output=True,
        text=True,
    ).stdout
    assert "netem" in qdisc and "delay 50ms" in qdisc
    assert driver.revert(ctx, injected).reverted
    assert driver.revert(ctx, injected).reverted
    assert_clean(driver, ctx, injected)


# --- revert from elsewhere, and the lease on the host -------------------------------------

_INJECT_AND_HANG = """
import json, sys, time
from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.ssh.driver import SSHDriver
op, args, target, lease = json.loads(sys.stdin.readline())
d = SSHDriver()
ctx = DriverContext(run_id="victim", state_dir=__import__("pathlib").Path("."), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
rec = d.inject(ctx, d.prepare(ctx, d.operation(op), args, target, lease))
print(rec.to_json(), flush=True)
time.sleep(600)
"""

_REVERT_FROM_RECORD = """
import sys
from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.ssh.driver import SSHDriver
rec = RevertRecord.from_dict(__import__("json").loads(sys.stdin.read()))
d = SSHDriver()
ctx = DriverContext(run_id="recover", state_dir=__import__("pathlib").Path("."), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
print(d.revert(ctx, rec).reverted)
d.close()
"""


def test_revert_from_a_new_process_with_only_the_record(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    marker, proc = markers.by_pattern()
    rec = fault(
        driver, ctx, "suspend", {"inventory": str(inventory), "pattern": marker, "pick": "all"}, "ssh:h0,h2"
    )
    assert state(proc.pid) == "T"
    inventory.unlink()  # the record alone must suffice
    out = subprocess.run(
        [sys.executable, "-c", _REVERT_FROM_RECORD],
        input=rec.to_json(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert state(proc.pid) in ("S", "R")
    assert_clean(driver, ctx, rec)


def test_a_relative_inventory_is_recorded_absolute(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inventory: inventory.yaml`` means another file from another directory (a recover
    run elsewhere): the record holds the absolute path, in its args as in its data."""
    monkeypatch.chdir(inventory.parent)
    op = driver.operation("stress_cpu")
    assert op is not None
    rec = driver.prepare(ctx, op, {"inventory": inventory.name, "workers": 1}, "ssh:h0", 30)
    assert rec.args["inventory"] == rec.data["inventory"] == str(inventory.resolve())


def test_a_suspend_is_continued_from_its_record_when_the_host_kept_nothing(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers
) -> None:
    """A revert that did not hold (a co-tenant stopped the process again) once ended the
    host's watchdog and removed its state directory, where the pids to continue were kept:
    every later revert (recover) then continued nothing and the process stayed stopped for
    good. The record names the processes (pid + start time): the revert continues those."""
    marker, proc = markers.by_pattern()
    rec = fault(driver, ctx, "suspend", {"inventory": str(inventory), "pattern": marker}, "ssh:h0")
    assert state(proc.pid) == "T"
    # The host lost the fault's state (and its watchdog) while the process stayed stopped.
    for pid in fault_processes(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(yaml.safe_load(inventory.read_text())["remote_state_dir"])
    assert state(proc.pid) == "T"
    result = driver.revert(ctx, rec)
    assert result.reverted, result.detail
    assert state(proc.pid) in ("S", "R")
    assert_clean(driver, ctx, rec)


def test_a_revert_that_does_not_hold_keeps_the_hosts_lease(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, netns: Netns
) -> None:
    """The rule is back as often as the revert deletes it (a co-tenant re-applying a saved
    ruleset): the revert says it did not hold, and the host's watchdog and state stay, so
    the lease still ends the fault. Once the extra copies are gone a revert is clean."""
    args = {"inventory": str(inventory), "port": netns.port, "netns": netns.name}
    rec = fault(driver, ctx, "iptables_drop", args, "ssh:h3")
    (rule,) = rec.data["rules"]
    ns = ["ip", "netns", "exec", netns.name, "iptables", "-w"]
    for _ in range(25):  # more than the revert's bounded delete loop removes
        subprocess.run([*ns, "-I", *rule], check=True)
    result = driver.revert(ctx, rec)
    assert not result.reverted and "did not hold" in result.detail, result.detail
    (watchdog,) = {int(r["watchdog"]) for r in rec.data["results"].values()}
    assert state(watchdog) not in ("gone", "Z"), "a failed revert must keep the host's watchdog"
    state_dir = Path(yaml.safe_load(inventory.read_text())["remote_state_dir"])
    assert (state_dir / f"{rec.fault_id}.h3").is_dir()
    for _ in range(40):  # bounded: 26 copies at most
        if subprocess.run([*ns, "-D", *rule], capture_output=True).returncode != 0:
            break
    assert driver.revert(ctx, rec).reverted
    assert netns.connects()
    assert_clean(driver, ctx, rec)


def test_the_hosts_watchdog_tries_again_until_its_end_holds(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, netns: Netns
) -> None:
    """The lease ends the fault on the host, but its first try does not hold (more copies
    of the rule than one pass deletes): the watchdog tries again, backing off, instead of
    leaving the rest for good (the local watchdog's rule)."""
    args = {"inventory": str(inventory), "port": netns.port, "netns": netns.name}
    rec = fault(driver, ctx, "iptables_drop", args, "ssh:h3", lease=4)  # no heartbeat: a fixed lease
    (rule,) = rec.data["rules"]
    ns = ["ip", "netns", "exec", netns.name, "iptables", "-w"]
    for _ in range(25):  # more than one pass of the end deletes
        subprocess.run([*ns, "-I", *rule], check=True)
    tag = f'"chaoslab:{rec.fault_id}"'
    assert tag in netns.rules()
    wait_until(lambda: tag not in netns.rules(), timeout_s=20.0, interval_s=0.2, what="every copy gone")
    assert netns.connects()
    wait_until(lambda: driver.check_clean(ctx, rec).clean, timeout_s=10.0, interval_s=0.2, what="clean")


@pytest.mark.slow
@pytest.mark.parametrize("op", ["suspend", "stress_cpu", "iptables_drop"])
def test_sigkilled_runner_the_host_watchdog_ends_the_fault(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers, netns: Netns, op: str
) -> None:
    lease = 2.0
    marker, proc = markers.by_pattern()
    args: dict[str, Any] = {"inventory": str(inventory)}
    if op == "suspend":
        args["pattern"] = marker
    elif op == "stress_cpu":
        args |= {"workers": 1, "load": 50} if shutil.which("stress-ng") else {"workers": 1}
    else:
        args |= {"port": netns.port, "netns": netns.name}
    # Arguments go over stdin: on argv the runner itself would match the marker pattern.
    runner = subprocess.Popen(
        [sys.executable, "-c", _INJECT_AND_HANG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps([op, args, "ssh:h1", lease]) + "\n")
        runner.stdin.close()
        rec = RevertRecord.from_dict(json.loads(runner.stdout.readline()))
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=10)
        assert runner.stdout is not None
        runner.stdout.close()
    assert rec.lease_expires_at is not None
    observable = {
        "suspend": lambda: state(proc.pid) == "T",
        "stress_cpu": lambda: bool(stressors(rec)),
        "iptables_drop": lambda: not netns.connects(),
    }[op]
    assert observable(), "the fault must be in effect after the runner died"
    deadline = rec.lease_expires_at + 1.0
    # The fault itself is over within lease + 1 s ...
    wait_until(
        lambda: not observable(),
        timeout_s=deadline - time.time(),
        interval_s=0.05,
        what="the lease to end the fault",
    )
    # ... and the watchdog, which undoes first and tidies after, is gone soon after.
    wait_until(lambda: not fault_processes(rec), timeout_s=3, interval_s=0.05, what="the watchdog to go")
    assert_clean(driver, ctx, rec)


# --- leases that follow the run (heartbeats) ------------------------------------------------

# What the run does for a heartbeat fault without `duration` (chaoslab.engine.faults): the
# lease is only a ceiling (MAX_LEASE_S) and `renew` is called every HEARTBEAT_S.
_INJECT_AND_RENEW = """
import json, sys, time
from pathlib import Path
import msgspec
from chaoslab.drivers import lease
from chaoslab.drivers.base import MAX_LEASE_S, DriverContext
from chaoslab.drivers.ssh.driver import SSHDriver
op, args, target, state = json.loads(sys.stdin.readline())
d = SSHDriver()
ctx = DriverContext(run_id="victim", state_dir=Path(state), lab_dir=Path(state) / "lab")
rec = d.prepare(ctx, d.operation(op), args, target, MAX_LEASE_S)
beat = lease.beat_path(ctx.state_dir, rec.fault_id)
lease.beat(beat)
rec = d.inject(ctx, msgspec.structs.replace(rec, heartbeat=str(beat)))
print(rec.to_json(), flush=True)
end = time.monotonic() + 600
while time.monotonic() < end:
    lease.beat(beat)
    d.renew(ctx, rec)
    time.sleep(lease.HEARTBEAT_S)
"""


def _observable(op: str, proc: subprocess.Popen[bytes], netns: Netns) -> Any:
    return {
        "suspend": lambda rec: state(proc.pid) == "T",
        "stress_cpu": lambda rec: bool(stressors(rec)),
        "iptables_drop": lambda rec: not netns.connects(),
    }[op]


@pytest.mark.slow
@pytest.mark.parametrize("op", ["suspend", "stress_cpu", "iptables_drop"])
def test_a_renewed_lease_holds_past_lapse_and_ends_soon_after_the_runner_dies(
    driver: SSHDriver,
    ctx: DriverContext,
    fleet: SSHFleet,
    inventory: Path,
    markers: Markers,
    netns: Netns,
    tmp_path: Path,
    op: str,
) -> None:
    from chaoslab.drivers.lease import LAPSE_S, POLL_S

    marker, proc = markers.by_pattern()
    args: dict[str, Any] = {"inventory": str(inventory)}
    if op == "suspend":
        args["pattern"] = marker
    elif op == "stress_cpu":
        args |= {"workers": 1, "backend": "shell"}
    else:
        args |= {"port": netns.port, "netns": netns.name}
    runner = subprocess.Popen(
        [sys.executable, "-c", _INJECT_AND_RENEW], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps([op, args, "ssh:h1", str(tmp_path / "victim")]) + "\n")
        runner.stdin.close()
        rec = RevertRecord.from_dict(json.loads(runner.stdout.readline()))
        observable = _observable(op, proc, netns)
        # Renewed, the fault outlives LAPSE_S (its lease is no fixed length any more).
        held_until = time.monotonic() + LAPSE_S + 1.0
        while time.monotonic() < held_until:
            assert observable(rec), "the host ended a fault the run still renewed"
            time.sleep(0.25)
        os.kill(runner.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        runner.kill()
        runner.wait(timeout=10)
        assert runner.stdout is not None
        runner.stdout.close()
    # The last beat reached the host at most HEARTBEAT_S before the kill: the host ends
    # the fault within LAPSE_S + POLL_S of it (slack for this shared, loaded machine).
    wait_until(
        lambda: not observable(rec),
        timeout_s=LAPSE_S + POLL_S + 2.0,
        interval_s=0.05,
        what="the fault outlived its lease",
    )
    ended_s = time.monotonic() - killed
    print(f"{op}: SIGKILL -> ended on the host in {ended_s:.2f}s")
    wait_until(lambda: not fault_processes(rec), timeout_s=3, interval_s=0.05, what="the watchdog to go")
    lapsed = fleet.root / "remote-state" / f"{rec.fault_id}.h1.lapsed"
    assert "stopped renewing its lease" in lapsed.read_text(), "the host must say why it ended the fault"
    assert driver.revert(ctx, rec).reverted  # recover: takes the reason away with it
    assert not lapsed.exists()
    assert_clean(driver, ctx, rec)


def test_renew_reports_a_lapse_the_host_saw_and_the_revert_records_it(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, markers: Markers, tmp_path: Path
) -> None:
    import msgspec

    from chaoslab.drivers import lease
    from chaoslab.drivers.base import MAX_LEASE_S
    from chaoslab.drivers.lease import lapse_path

    marker, proc = markers.by_pattern()
    record = driver.prepare(
        ctx,
        driver.operation("suspend"),
        {"inventory": str(inventory), "pattern": marker},
        "ssh:h2",
        MAX_LEASE_S,
    )  # type: ignore[arg-type]
    beat = lease.beat_path(ctx.state_dir, record.fault_id)
    lease.beat(beat)
    record = msgspec.structs.replace(record, heartbeat=str(beat))
    assert driver.renew(ctx, record) is None  # not on the host yet: nothing to renew
    rec = driver.inject(ctx, record)
    assert state(proc.pid) == "T"
    # Nobody renews: the host ends it LAPSE_S after the first beat (written at inject).
    wait_until(
        lambda: state(proc.pid) != "T",
        timeout_s=lease.LAPSE_S + lease.POLL_S + 2.0,
        interval_s=0.05,
        what="the host to end it",
    )
    reasons: list[str | None] = []

    def reported() -> bool:
        reasons.append(driver.renew(ctx, rec))
        return reasons[-1] is not None

    assert poll(reported, timeout_s=10, interval_s=0.2) is not None, reasons
    reason = str(reasons[-1])
    assert reason.startswith("the host ended it: h2: the run stopped renewing its lease"), reason
    assert driver.renew(ctx, rec) == reason  # reported again, never lost
    assert driver.revert(ctx, rec).reverted
    # The run's own revert leaves the reason where the run looks for lapses.
    noted = json.loads(lapse_path(ctx.state_dir, rec.fault_id).read_text())
    assert noted["reason"].startswith("the host ended it: h2:")
    assert_clean(driver, ctx, rec)


def test_a_run_renews_an_ssh_fault_as_long_as_its_method_and_reports_a_lapse(
    fleet: SSHFleet, inventory: Path, markers: Markers, tmp_path: Path
) -> None:
    """`chaoslab run`: a suspend without duration under a 1 s experiment lease (a fixed
    lease would end it after 1 + 5 s) holds while the method runs; then the runner is
    stopped (SIGSTOP: no renewals), the host ends the fault, and once the runner goes on
    the lapse is an event and the verdict is not "passed"."""
    from chaoslab.drivers.lease import LAPSE_S, POLL_S
    from tests.integration.matrix_support import SUPPORT, by_kind, start_run

    marker, proc = markers.by_pattern()
    pattern = f"{marker[:-1]}[{marker[-1]}]"  # the runner's own files never match it
    gate = tmp_path / "cell" / "gate"
    doc = {
        "title": "a renewed ssh lease",
        "description": "suspend without duration, held by the method",
        "lease": "1s",
        "method": [
            {
                "do": "ssh.suspend",
                "name": "fault",
                "target": "ssh:h3",
                "with": {"inventory": str(inventory), "pattern": pattern},
            },
            {
                "type": "action",
                "name": "hold",
                "provider": {
                    "type": "python",
                    "module": SUPPORT,
                    "func": "hold",
                    "arguments": {"gate": str(gate), "name": "held", "timeout": 40},
                },
            },
        ],
    }
    run = start_run(doc, tmp_path / "cell")
    try:
        run.wait_gate("held")
        assert state(proc.pid) == "T"
        held_until = time.monotonic() + 7.0  # past the 6 s a fixed lease would have given
        while time.monotonic() < held_until:
            assert state(proc.pid) == "T", "the fault was lost while the method ran"
            time.sleep(0.25)
        run.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_until(
                lambda: state(proc.pid) != "T",
                timeout_s=LAPSE_S + POLL_S + 2.0,
                interval_s=0.05,
                what="no lapse on the host",
            )
            print(f"renewals stopped -> ended on the host in {time.monotonic() - stopped:.2f}s")
        finally:
            run.signal(signal.SIGCONT)
        wait_until(
            lambda: bool(by_kind(run.events(), "lease-lapsed")),
            timeout_s=10,
            interval_s=0.05,
            what="the lapse was silent",
        )
        run.release("held")
        code = run.finish()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert "Traceback" not in run.out + run.err, run.err
    journal = run.journal()
    lapsed = by_kind(run.events(), "lease-lapsed")
    assert len(lapsed) == 1 and "stopped renewing its lease" in lapsed[0]["reason"], lapsed
    assert journal["chaoslab"]["verdict"] == "inconclusive" and code == 4, (code, run.out)
    assert [c["clean"] for c in by_kind(journal["chaoslab"]["faults"], "clean-checked")] == [True]


# --- hostile arguments -------------------------------------------------------------------

HOSTILE = [
    "x; touch {f}",
    "$(touch {f})",
    "`touch {f}`",
    "x\ntouch {f}\n",
    "'; touch {f}; '",
    '"; touch {f}; "',
    "x && touch {f} #",
    "|| touch {f}",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_arguments_are_data(
    driver: SSHDriver, ctx: DriverContext, inventory: Path, netns: Netns, template: str
) -> None:
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    hostile = template.format(f=pwned)
    inv = {"inventory": str(inventory)}
    try:
        for op, args in (
            ("suspend", {"pattern": hostile}),
            ("kill", {"pattern": hostile}),
            ("suspend", {"name": hostile[:15]}),
        ):
            # Nothing matches, or (`|| ...` matches everything) refused before any change.
            with pytest.raises((TargetNotFound, InvalidInput)):
                fault(driver, ctx, op, {**inv, **args}, "ssh:h0")
        if not hostile.startswith("||"):
            assert probe(driver, ctx, "process_count", {**inv, "pattern": hostile}, "ssh:h0") == {"h0": 0}
        out = probe(driver, ctx, "command", {**inv, "argv": ["printf", "%s", hostile]}, "ssh:h0")
        assert out["h0"]["stdout"] == hostile  # passed through as one literal argument
        with pytest.raises(DriverError):
            fault(
                driver, ctx, "iptables_drop", {**inv, "port": netns.port, "netns": hostile}, "ssh:h0", lease=5
            )
        with pytest.raises(DriverError):
            fault(
                driver,
                ctx,
                "netem",
                {**inv, "interface": "lo", "netns": hostile, "loss": 1},
                "ssh:h0",
                lease=5,
            )
        assert not pwned.exists(), f"a hostile argument was executed: {hostile!r}"
    finally:
        pwned.unlink(missing_ok=True)


# --- host keys ---------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = fleet.inventory(tmp_path / "inv.yaml", known_hosts=empty, connect_attempts=3)
    started = time.monotonic()
    with pytest.raises(HostKeyRefused) as err:
        probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h1")
    assert time.monotonic() - started < 3  # refused at once, never retried
    assert "UNKNOWN" in str(err.value) and fleet.hosts[1].fingerprint in str(err.value)
    # Trusting a new key is an explicit choice: by op argument ...
    assert probe(
        driver, ctx, "reachable", {"inventory": str(inv), "trust_new_host_keys": True}, "ssh:h1"
    ) == {"h1": True}
    # ... or in the inventory.
    trusting = fleet.inventory(tmp_path / "trust.yaml", known_hosts=empty, trust_new_host_keys=True)
    other = DriverContext(run_id="other", state_dir=tmp_path, lab_dir=env_state().lab)
    assert probe(driver, other, "reachable", {"inventory": str(trusting)}, "ssh:h1") == {"h1": True}
    assert empty.read_text() == ""  # trusting never writes known_hosts


def test_default_known_hosts_is_the_users(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    fleet.write_known_hosts(home / ".ssh" / "known_hosts", fleet.hosts[:1])
    monkeypatch.setenv("HOME", str(home))
    inv = tmp_path / "inv.yaml"
    fleet.inventory(inv)
    doc = yaml.safe_load(inv.read_text())
    del doc["known_hosts"]
    inv.write_text(yaml.safe_dump(doc))
    assert probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h0") == {"h0": True}
    with pytest.raises(HostKeyRefused, match="UNKNOWN"):
        probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h1")


def test_pinned_fingerprints(driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = tmp_path / "inv.yaml"
    fleet.inventory(inv, known_hosts=empty)
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["h0"]["host_key_fingerprints"] = [fleet.hosts[0].fingerprint]
    doc["hosts"]["h1"]["host_key_fingerprints"] = [fleet.hosts[0].fingerprint]  # wrong host's key
    inv.write_text(yaml.safe_dump(doc))
    assert probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h0") == {"h0": True}
    with pytest.raises(HostKeyRefused, match="pinned") as err:
        probe(driver, ctx, "reachable", {"inventory": str(inv), "trust_new_host_keys": True}, "ssh:h1")
    assert fleet.hosts[1].fingerprint in str(err.value)


def test_changed_host_key_is_refused_even_when_trusting_new_keys(
    fleet: SSHFleet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A separate one-host fleet: re-keying must not disturb the shared fleet.
    with SSHFleet(root=tmp_path_factory.mktemp("rekey"), size=1) as solo:
        inv = solo.inventory(tmp_path / "inv.yaml", trust_new_host_keys=True)
        old = solo.hosts[0].fingerprint
        new = solo.rekey(solo.hosts[0])
        d = SSHDriver()
        try:
            ctx = DriverContext(run_id="rekey", state_dir=tmp_path, lab_dir=env_state().lab)
            with pytest.raises(HostKeyRefused) as err:
                probe(d, ctx, "reachable", {"inventory": str(inv)}, "ssh:h0")
            message = str(err.value)
            assert "CHANGED" in message and new in message and old in message and "ssh-keygen -R" in message
        finally:
            d.close()


# --- fan-out, timeouts, retries, all-or-nothing -------------------------------------------


def test_fan_out_respects_the_concurrency_limit(
    driver: SSHDriver, ctx: DriverContext, inventory: Path
) -> None:
    # Each host reports when its command ran; the most that overlapped is the limit.
    argv = ["sh", "-c", "date +%s.%N; sleep 0.8; date +%s.%N"]
    probe(driver, ctx, "reachable", {"inventory": str(inventory)}, "ssh:*")  # warm connections
    for limit in (1, 2, 4):
        out = probe(
            driver, ctx, "command", {"inventory": str(inventory), "argv": argv, "concurrency": limit}, "ssh:*"
        )
        spans = [tuple(map(float, v["stdout"].split())) for v in out.values()]
        overlap = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
        assert overlap == limit, (limit, spans)


def test_every_command_has_a_timeout(driver: SSHDriver, ctx: DriverContext, inventory: Path) -> None:
    unique = f"29.{uuid.uuid4().int % 10**6:06d}"
    started = time.monotonic()
    with pytest.raises(DriverError) as err:
        probe(
            driver,
            ctx,
            "command",
            {"inventory": str(inventory), "argv": ["sleep", unique], "timeout": 1},
            "ssh:h0",
        )
    assert isinstance(err.value.__cause__, CommandTimeout)
    assert time.monotonic() - started < 6
    # The host's own `timeout` ends the remote command too.
    wait_until(
        lambda: subprocess.run(["pgrep", "-f", f"sleep {unique}"], capture_output=True).returncode == 1,
        timeout_s=5,
        interval_s=0.05,
        what="the remote command to end",
    )


def test_connect_is_retried_with_backoff(
    driver: SSHDriver,
    ctx: DriverContext,
    fleet: SSHFleet,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Keys, config and port are made now; sshd comes up only after the driver started trying.
    late = SSHFleet(root=tmp_path_factory.mktemp("late"), size=1)
    late.start()
    host = late.hosts[0]
    late._stop_one(host)
    launcher = threading.Timer(0.5, lambda: late._launch(host))
    inv = late.inventory(tmp_path / "late.yaml", connect_attempts=6, connect_timeout="2s")
    once = late.inventory(tmp_path / "once.yaml", connect_attempts=1, connect_timeout="2s")
    try:
        with pytest.raises(DriverError, match="after 1 attempt"):
            probe(driver, ctx, "reachable", {"inventory": str(once)}, "ssh:h0")
        launcher.start()  # the server comes up 0.5 s late: that delay is the behaviour under test
        started = time.monotonic()
        assert probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h0") == {"h0": True}
        assert time.monotonic() - started >= 0.4
    finally:
        driver.close()
        launcher.cancel()
        if launcher.ident is not None:  # started: fired (and launched) or cancelled, then stop
            launcher.join(timeout=10)
        late.stop()


def test_failed_authentication_is_not_retried(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path
) -> None:
    from tests.integration.sshfleet import keygen

    stranger = tmp_path / "stranger"
    keygen(stranger)
    inv = tmp_path / "inv.yaml"
    fleet.inventory(inv, connect_attempts=5)
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["h0"]["key_file"] = str(stranger)
    inv.write_text(yaml.safe_dump(doc))
    started = time.monotonic()
    with pytest.raises(DriverError, match="authentication failed"):
        probe(driver, ctx, "reachable", {"inventory": str(inv)}, "ssh:h0")
    assert time.monotonic() - started < 3


@contextlib.contextmanager
def _with_lone_host(fleet: SSHFleet, inv: Path, root: Path) -> Iterator[SSHFleet]:
    """``inv`` (the fleet's hosts) plus ``lone``: a one-host fleet of its own, which the
    test may stop and start without touching the module's fleet."""
    lone = SSHFleet(root=root, size=1)
    lone.start()
    try:
        fleet.inventory(inv, connect_attempts=1, connect_timeout="2s")
        doc = yaml.safe_load(inv.read_text())
        (host,) = lone.hosts
        with open(doc["known_hosts"], "a") as known:
            known.write(host.known_hosts_line())
        doc["hosts"]["lone"] = {
            **doc["hosts"]["h0"],
            "port": host.port,
            "key_file": str(lone.user_key),
        }
        inv.write_text(yaml.safe_dump(doc))
        yield lone
    finally:
        lone.stop()


def test_a_fault_is_all_or_nothing(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path
) -> None:
    inv = tmp_path / "inv.yaml"
    with _with_lone_host(fleet, inv, tmp_path / "lone") as lone:
        record = driver.prepare(
            ctx,
            driver.operation("stress_cpu"),
            {"inventory": str(inv), "workers": 1, "backend": "shell", "pick": "all"},
            "ssh:h0,h1,lone",
            20,  # type: ignore[arg-type]
        )
        lone.stop()  # resolved and locked, then gone before the fault reaches it
        with pytest.raises(DriverError, match="lone") as err:
            driver.inject(ctx, record)
    assert "reverted" in str(err.value)
    assert not fault_processes(record)  # h0 and h1 were reverted


def test_a_host_unreachable_when_prepared_is_not_faulted_later(
    driver: SSHDriver, ctx: DriverContext, fleet: SSHFleet, tmp_path: Path
) -> None:
    """A host ``prepare`` could not reach is locked by its address only (its own name
    was never read), which another name for the same machine does not meet: coming back
    before inject must not let the fault through. Not applied, nothing on any host."""
    inv = tmp_path / "inv.yaml"
    with _with_lone_host(fleet, inv, tmp_path / "lone") as lone:
        (host,) = lone.hosts
        lone._stop_one(host)
        record = driver.prepare(
            ctx,
            driver.operation("stress_cpu"),
            {"inventory": str(inv), "workers": 1, "backend": "shell", "pick": "all"},
            "ssh:h0,lone",
            20,  # type: ignore[arg-type]
        )
        assert "lone" in record.data["unresolved"]
        lone._launch(host)
        lone._wait_ready(host)
        with pytest.raises(DriverError, match="lone") as err:
            driver.inject(ctx, record)
    assert err.value.not_applied, err.value
    assert not fault_processes(record)


def test_missing_paramiko_gives_the_install_hint(inventory: Path) -> None:
    code = (
        "import sys; sys.modules['paramiko'] = None\n"
        "from pathlib import Path\n"
        "from chaoslab.drivers.base import DriverContext\n"
        "from chaoslab.drivers.ssh.driver import SSHDriver\n"
        "from chaoslab.errors import DriverError\n"
        "d = SSHDriver()\n"
        "try:\n"
        "    ctx = DriverContext(run_id='x', state_dir=Path('.'), lab_dir=Path('lab'))\n"
        f"    d.probe(ctx, d.operation('reachable'), {{'inventory': {str(inventory)!r}}}, 'ssh:h0')\n"
        "except DriverError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'chaoslab[ssh]'" in out.stdout, out.stderr
