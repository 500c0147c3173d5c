"""The docker driver against a real Docker Engine (dockerd from Debian's ``docker.io``).

Every fault is checked on the container through ``docker inspect`` / the cgroup files,
independently of the driver: inject → visible → revert → ``check_clean`` → gone; a second
revert is a no-op; a revert from a new process with only the record; and a runner
SIGKILLed right after inject, whose fault the lease ends within lease + 1 s.

Containers use ``--network none``, ``--network host`` (busybox httpd on 127.0.0.1) or an
``--internal`` network that carries no traffic. ``dockerlab`` labels and removes them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chaoslab.drivers import _proc, lease
from chaoslab.drivers.base import MAX_LEASE_S, Driver, DriverContext, RevertRecord
from chaoslab.drivers.docker import parse_size, parse_target, parse_timestamp
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.watchdog import outcome_path
from chaoslab.errors import DriverError, InvalidInput, TargetNotFound
from tests.conftest import poll, require, wait_until
from tests.integration.dockerlab import DockerLab, docker_lab
from tests.statepaths import env_state

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

LEASE_S = 3.0


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    with docker_lab(tmp_path_factory.mktemp("dockerd") / "dockerd.log") as lab:
        yield lab


@pytest.fixture
def lab(session_lab: DockerLab) -> Iterator[DockerLab]:
    require(bool(session_lab.image), f"Docker Engine: {session_lab.problem}")
    try:
        yield session_lab
    finally:
        session_lab.cleanup()  # every container and network of the test, even on failure


@pytest.fixture
def driver() -> Driver:
    return DriverRegistry().get("docker")


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="docker-test", state_dir=tmp_path / "state", seed=7, lab_dir=env_state().lab)


def inject(
    driver: Driver,
    ctx: DriverContext,
    op: str,
    target: str,
    args: dict[str, Any] | None = None,
    lease_s: float | None = LEASE_S,
) -> RevertRecord:
    operation = driver.operation(op)
    assert operation is not None
    record = driver.prepare(ctx, operation, args or {}, target, lease_s)
    json.loads(record.to_json())  # the ledger stores plain JSON
    return driver.inject(ctx, record)


def state(c: Any) -> dict[str, Any]:
    c.reload()
    return dict(c.attrs["State"])


def cgroup_file(c: Any, controller: str, name: str) -> Path:
    pid = state(c)["Pid"]
    return _proc.cgroup_dirs(pid)[controller] / name


def _cpu_stat(path: Path) -> dict[str, int]:
    """``cpu.stat`` of a cgroup (nr_periods, nr_throttled, throttled_time)."""
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


# --- pure parsing (no daemon) ----------------------------------------------------------------


def test_target_syntax() -> None:
    assert str(parse_target("name:web")) == "name:web"
    assert str(parse_target("docker:name=web")) == "name:web"
    assert parse_target("label=app=web,tier").labels() == {"app": "web", "tier": None}
    assert parse_target("image:busybox:1.36").value == "busybox:1.36"
    assert parse_target("id:3f2a").kind == "id"
    for bad in ("", "web", "color:red", "name:", "label:=x", None):
        with pytest.raises(InvalidInput):
            parse_target(bad)


def test_sizes_and_timestamps() -> None:
    assert parse_size("64m") == 64 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size(4096) == 4096
    for bad in ("", "-1m", "12q", 0, True):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_timestamp("1970-01-01T00:00:01.500000999Z") == pytest.approx(1.5)
    assert parse_timestamp("0001-01-01T00:00:00Z") is None


def test_unreachable_daemon_and_missing_sdk_are_driver_errors(
    driver: Driver, ctx: DriverContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    op = driver.operation("running")
    assert op is not None
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(DriverError, match="cannot reach the Docker daemon"):
        driver.probe(ctx, op, {}, "name:web")
    monkeypatch.setitem(sys.modules, "docker", None)  # what a missing extra looks like
    with pytest.raises(DriverError, match=r"pip install 'chaoslab\[docker\]'"):
        driver.probe(ctx, op, {}, "name:web")


# --- resolution and selection ----------------------------------------------------------------


@pytest.mark.parametrize("op", ["kill", "stop", "pause", "restart", "throttle", "stress", "disconnect"])
def test_nothing_matches_raises_before_anything(
    lab: DockerLab, driver: Driver, ctx: DriverContext, op: str
) -> None:
    operation = driver.operation(op)
    assert operation is not None
    net = {"network": lab.internal_network().name} if op == "disconnect" else {}
    args = {"cpus": 0.5} if op == "throttle" else net
    with pytest.raises(TargetNotFound):
        driver.prepare(ctx, operation, args, f"label:chaoslab.nothing={lab.session}", LEASE_S)
    # A match that is not running is no target for a fault either.
    c = lab.run(labels={"role": "exited"}, command=["true"], wait=False)
    wait_until(
        lambda: state(c)["Status"] == "exited", timeout_s=10, interval_s=0.05, what="the container to exit"
    )
    # A dry plan injects nothing, so it says so at once.
    with pytest.raises(TargetNotFound):
        driver.prepare(msgspec.structs.replace(ctx, dry=True), operation, args, f"name:{c.name}", LEASE_S)
    # Planned on what was found (so the run's locks see it), refused at inject as not applied.
    record = driver.prepare(ctx, operation, args, f"name:{c.name}", LEASE_S)
    assert driver.identities(record) == (f"docker:{c.id}",)
    with pytest.raises(TargetNotFound) as refused:
        driver.inject(ctx, record)
    assert refused.value.not_applied, refused.value
    assert state(c)["Status"] == "exited"
    assert not (ctx.state_dir / "watchdogs").exists()


def test_selection_count_percent_all_with_recorded_seed(
    lab: DockerLab, driver: Driver, ctx: DriverContext
) -> None:
    group = f"sel-{lab.session}"
    names = sorted(lab.run(labels={"group": group}).name for _ in range(4))
    op = driver.operation("pause")
    assert op is not None
    target = f"label:group={group}"

    def picked(args: dict[str, Any]) -> list[str]:
        record = driver.prepare(ctx, op, args, target, LEASE_S)
        return [e["name"] for e in record.data["containers"]]

    two = picked({"count": 2, "seed": 11})
    assert len(two) == 2 and set(two) <= set(names)
    assert picked({"count": 2, "seed": 11}) == two  # same seed, same pick
    seeds = {tuple(picked({"count": 2, "seed": s})) for s in range(12)}
    assert len(seeds) > 1  # the seed matters
    assert len(picked({"percent": 50})) == 2
    assert len(picked({"percent": 1})) == 1
    assert picked({"all": True}) == names
    record = driver.prepare(ctx, op, {"count": 3}, target, LEASE_S)
    assert record.data["pick"]["seed"] == ctx.seed and record.data["pick"]["candidates"] == 4
    assert not any(state(c)["Paused"] for c in lab.containers())  # prepare touched nothing


def test_image_and_id_targets(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    c = lab.run()
    op = driver.operation("running")
    assert op is not None
    assert driver.probe(ctx, op, {}, f"id:{c.id[:12]}") is True
    by_image = driver.probe(ctx, op, {}, f"image:{lab.image}")
    assert by_image is True or (isinstance(by_image, dict) and by_image[c.name] is True)


# --- probes --------------------------------------------------------------------------------


def test_probes_running_health_restart_count(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    web, _port = lab.httpd(restart="always")
    plain = lab.run()

    def probe(name: str, target: str) -> Any:
        op = driver.operation(name)
        assert op is not None
        return driver.probe(ctx, op, {}, target)

    assert probe("running", f"name:{web.name}") is True
    assert probe("health", f"name:{web.name}") == "healthy"
    assert probe("health", f"name:{plain.name}") == "none"
    assert probe("restart_count", f"name:{web.name}") == 0
    record = inject(driver, ctx, "kill", f"name:{web.name}", lease_s=None)
    assert driver.revert(ctx, record).reverted
    assert probe("restart_count", f"name:{web.name}") == 1
    both = probe("running", f"label:chaoslab.test={lab.session}")
    assert both == {web.name: True, plain.name: True}
    plain.stop(timeout=1)
    assert probe("running", f"name:{plain.name}") is False
    with pytest.raises(TargetNotFound):
        probe("running", "name:chaoslab-no-such-container")


# --- the leased faults, through the contract checks -----------------------------------------


@dataclass(frozen=True, kw_only=True)
class Case:
    """One leased fault: how to build the container, the args, and how to see the fault."""

    op: str
    args: dict[str, Any]
    observe: Callable[[Any, RevertRecord], bool]
    kwargs: dict[str, Any]


def _paused(c: Any, _r: RevertRecord) -> bool:
    return bool(state(c)["Paused"])


def _stopped(c: Any, _r: RevertRecord) -> bool:
    return not state(c)["Running"]


def _throttled(c: Any, _r: RevertRecord) -> bool:
    quota = int(cgroup_file(c, "cpu", "cpu.cfs_quota_us").read_text())
    return quota == 20_000 and c.attrs["HostConfig"]["CpuQuota"] == 20_000


def _cpu_busy(c: Any, _r: RevertRecord) -> bool:
    # Independent of the driver: a shell spinning `while :` sits in the container's cgroup.
    # (Its CPU rate depends on the machine's load; the throttle test measures rates.)
    procs = cgroup_file(c, "cpu", "cgroup.procs").read_text().split()
    for pid in procs:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"while :; do :; done" in cmd and stat[0] in ("R", "S") and not cmd.startswith(b"timeout"):
            return True
    return False


def _memory_held(c: Any, _r: RevertRecord) -> bool:
    return int(cgroup_file(c, "memory", "memory.usage_in_bytes").read_text()) > 48 << 20


def _disconnected(c: Any, r: RevertRecord) -> bool:
    nets = state(c) and c.attrs["NetworkSettings"]["Networks"] or {}
    return r.data["network"]["name"] not in nets


CASES = [
    Case(op="pause", args={}, observe=_paused, kwargs={}),
    Case(op="stop", args={"grace": "1s"}, observe=_stopped, kwargs={}),
    Case(op="throttle", args={"cpus": 0.2}, observe=_throttled, kwargs={}),
    Case(op="stress", args={"kind": "cpu", "workers": 1}, observe=_cpu_busy, kwargs={}),
    Case(op="stress", args={"kind": "memory", "memory": "64m"}, observe=_memory_held, kwargs={}),
    Case(op="disconnect", args={}, observe=_disconnected, kwargs={"internal": True}),
]
IDS = ["pause", "stop", "throttle", "stress-cpu", "stress-memory", "disconnect"]


def _target(lab: DockerLab, case: Case) -> tuple[Any, dict[str, Any]]:
    """A fresh container for ``case`` and the args naming what it needs (a network)."""
    if case.kwargs.get("internal"):
        net = lab.internal_network()
        return lab.run(network=net.name), {**case.args, "network": net.name}
    return lab.run(), dict(case.args)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inject_observe_revert_twice_clean(
    lab: DockerLab, driver: Driver, ctx: DriverContext, case: Case
) -> None:
    c, args = _target(lab, case)
    probe_record = RevertRecord(
        driver="docker", operation=case.op, target="", data={"network": {"name": args.get("network", "")}}
    )
    assert not case.observe(c, probe_record), "fault visible before inject"
    record = inject(driver, ctx, case.op, f"name:{c.name}", args, lease_s=30)
    try:
        wait_until(lambda: case.observe(c, record), timeout_s=5, interval_s=0.05, what="the fault to show")
        report = driver.check_clean(ctx, record)
        assert not report.clean, "check_clean blind to the fault"
        assert _proc.watchdog_processes(record.fault_id), "no lease watchdog armed"
        first = driver.revert(ctx, record)
        assert first.reverted, first.detail
        assert not case.observe(c, record)
        second = driver.revert(ctx, record)
        assert second.reverted, second.detail
        report = driver.check_clean(ctx, record)
        assert report.clean, report.residue
        assert state(c)["Running"] and not state(c)["Paused"]
        assert not _proc.watchdog_processes(record.fault_id)
    finally:
        driver.revert(ctx, record)


_REVERT_ELSEWHERE = """
import json, sys
from pathlib import Path
from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.watchdog import outcome_path
record = RevertRecord.from_dict(json.loads(sys.argv[1]))
driver = DriverRegistry().get(record.driver)
ctx = DriverContext(run_id=record.run_id, state_dir=Path(sys.argv[2]), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
result = driver.revert(ctx, record)
report = driver.check_clean(ctx, record)
print(json.dumps({"reverted": result.reverted, "clean": report.clean, "residue": report.residue}))
"""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_revert_from_new_process(lab: DockerLab, driver: Driver, ctx: DriverContext, case: Case) -> None:
    c, args = _target(lab, case)
    record = inject(driver, ctx, case.op, f"name:{c.name}", args, lease_s=30)
    try:
        wait_until(lambda: case.observe(c, record), timeout_s=5, interval_s=0.05, what="the fault to show")
        done = subprocess.run(
            [sys.executable, "-c", _REVERT_ELSEWHERE, record.to_json(), str(ctx.state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["reverted"] and outcome["clean"], outcome
        assert not case.observe(c, record)
    finally:
        driver.revert(ctx, record)


_RUNNER = """
import json, sys, time
from pathlib import Path
from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.watchdog import outcome_path
spec = json.loads(sys.stdin.readline())
driver = DriverRegistry().get("docker")
ctx = DriverContext(run_id="docker-runner", state_dir=Path(spec["state_dir"]), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
record = driver.prepare(ctx, driver.operation(spec["op"]), spec["args"], spec["target"], spec["lease"])
record = driver.inject(ctx, record)
print(record.to_json(), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_runner_sigkilled_lease_ends_fault(
    lab: DockerLab, driver: Driver, ctx: DriverContext, case: Case
) -> None:
    c, args = _target(lab, case)
    spec: dict[str, Any] = {"op": case.op, "args": args, "target": f"name:{c.name}", "lease": LEASE_S}
    spec["state_dir"] = str(ctx.state_dir)
    runner = subprocess.Popen(
        [sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    guard = threading.Timer(60, runner.kill)  # bounds the readline below
    guard.start()
    record: RevertRecord | None = None
    try:
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps(spec) + "\n")
        runner.stdin.close()
        line = runner.stdout.readline()
        assert line, "the runner died before injecting"
        record = RevertRecord.from_dict(json.loads(line))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=5)
        rec, expires = record, record.lease_expires_at
        assert expires is not None
        # The fault outlives the runner (a memory hog may still be filling up).
        visible = max(0.0, expires - 0.5 - time.time())
        wait_until(
            lambda: case.observe(c, rec), timeout_s=visible, interval_s=0.05, what="the fault after the kill"
        )
        deadline = expires + 1.0
        clean = (
            poll(
                lambda: driver.check_clean(ctx, rec).clean and not case.observe(c, rec),
                timeout_s=max(0.0, deadline - time.time()),
                interval_s=0.1,
            )
            is not None
        )
        late = time.time() - expires
        print(f"{case.op}: clean {late:+.2f}s after the lease expired")
        assert clean, f"not clean {late:.2f}s after the lease: {driver.check_clean(ctx, rec)}"
    finally:
        guard.cancel()
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=5)
        assert runner.stdout is not None
        runner.stdout.close()
        if record is not None:
            driver.revert(ctx, record)


# --- throttle keeps the exact previous limits ------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        ({}, {"CpuQuota": -1, "CpuPeriod": 0, "NanoCpus": 0}),  # unset is restored as -1
        (
            {"cpu_quota": 50_000, "cpu_period": 50_000},
            {"CpuQuota": 50_000, "CpuPeriod": 50_000, "NanoCpus": 0},
        ),
        ({"nano_cpus": 1_500_000_000}, {"CpuQuota": 0, "CpuPeriod": 0, "NanoCpus": 1_500_000_000}),
    ],
    ids=["unset", "quota", "nanocpus"],
)
def test_throttle_restores_exact_limits(
    lab: DockerLab, driver: Driver, ctx: DriverContext, kwargs: dict[str, Any], expect: dict[str, int]
) -> None:
    c = lab.run(**kwargs)
    quota_file = cgroup_file(c, "cpu", "cpu.cfs_quota_us")
    before_cgroup = quota_file.read_text()
    record = inject(driver, ctx, "throttle", f"name:{c.name}", {"cpus": 0.25}, lease_s=30)
    try:
        period = int(cgroup_file(c, "cpu", "cpu.cfs_period_us").read_text())
        assert int(quota_file.read_text()) == round(0.25 * period)
        assert driver.revert(ctx, record).reverted
        c.reload()
        hc = c.attrs["HostConfig"]
        assert {k: hc[k] for k in expect} == expect
        assert quota_file.read_text() == before_cgroup
        assert driver.check_clean(ctx, record).clean
    finally:
        driver.revert(ctx, record)


def test_throttle_limits_cpu_of_a_stressed_container(
    lab: DockerLab, driver: Driver, ctx: DriverContext
) -> None:
    c = lab.run()
    stress = inject(driver, ctx, "stress", f"name:{c.name}", {"workers": 2}, lease_s=10)
    throttle = inject(driver, ctx, "throttle", f"name:{c.name}", {"cpus": 0.2}, lease_s=10)
    try:
        usage = cgroup_file(c, "cpuacct", "cpuacct.usage")
        stat = cgroup_file(c, "cpu", "cpu.stat")
        # Measure once the quota has held the spinner back for a whole period at least once.
        wait_until(lambda: _cpu_stat(stat)["nr_throttled"] > 0, timeout_s=10, what="the quota to throttle")
        before, t0 = int(usage.read_text()), time.monotonic()
        time.sleep(1.0)  # the measurement window itself: a CPU rate needs an interval
        rate = (int(usage.read_text()) - before) / 1e9 / (time.monotonic() - t0)
        # The cap is load-independent; the floor only proves the spinner runs at all
        # (on a loaded shared machine it may get less than its 0.2 CPU).
        assert 0.02 < rate < 0.25, rate
    finally:
        assert driver.revert(ctx, throttle).reverted
        assert driver.revert(ctx, stress).reverted
    assert driver.check_clean(ctx, stress).clean and driver.check_clean(ctx, throttle).clean


# --- disconnect keeps the endpoint settings ----------------------------------------------------


def test_disconnect_reconnects_with_same_settings(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    # A user-configured subnet lets Docker honour a static address; internal: no traffic.
    third = int(lab.session[:2], 16)
    net = lab.client.networks.create(
        f"chaoslab-test-{lab.session}-static",
        driver="bridge",
        internal=True,
        labels=lab.labels(),
        ipam={"Config": [{"Subnet": f"10.231.{third}.0/24"}]},
    )
    c = lab.client.containers.create(
        lab.image,
        name=f"chaoslab-test-{lab.session}-static",
        labels=lab.labels(),
        stop_signal="SIGKILL",
        network=net.name,
        networking_config={
            net.name: lab.client.api.create_endpoint_config(
                ipv4_address=f"10.231.{third}.77", aliases=["db", "primary"]
            )
        },
    )
    c.start()
    before = state(c) and c.attrs["NetworkSettings"]["Networks"][net.name]
    record = inject(driver, ctx, "disconnect", f"name:{c.name}", {"network": net.name}, lease_s=30)
    try:
        assert net.name not in (state(c) and c.attrs["NetworkSettings"]["Networks"])
        assert driver.revert(ctx, record).reverted
        after = state(c) and c.attrs["NetworkSettings"]["Networks"][net.name]
        for key in ("IPAddress", "IPAMConfig", "MacAddress"):
            assert after[key] == before[key], key
        assert set(after["Aliases"]) == set(before["Aliases"]) >= {"db", "primary"}
        assert driver.check_clean(ctx, record).clean
    finally:
        driver.revert(ctx, record)


# --- kill and restart: no lease, revert waits for the restart policy --------------------------


def test_kill_heals_through_restart_policy(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    web, port = lab.httpd(restart="always")
    started = state(web)["StartedAt"]
    record = inject(driver, ctx, "kill", f"name:{web.name}", {"timeout": "20s"}, lease_s=None)
    assert record.lease_expires_at is None and record.data["survived"] == []
    # Right after inject the container is down (or restarting): check_clean sees it.
    assert not driver.check_clean(ctx, record).clean
    result = driver.revert(ctx, record)
    assert result.reverted, result.detail
    assert result.time_to_recover_s is not None and 0 < result.time_to_recover_s < 20
    s = state(web)
    assert s["Running"] and s["StartedAt"] != started and s["Health"]["Status"] == "healthy"
    assert web.attrs["RestartCount"] == 1
    # The time to recover comes from the daemon's timestamps: a late revert agrees.
    again = driver.revert(ctx, record)
    assert again.time_to_recover_s == pytest.approx(result.time_to_recover_s, abs=1e-6)
    assert driver.check_clean(ctx, record).clean
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
        assert resp.read() == b"ok\n"


def test_kill_without_restart_policy_says_it_cannot_heal(
    lab: DockerLab, driver: Driver, ctx: DriverContext
) -> None:
    c = lab.run()
    record = inject(driver, ctx, "kill", f"name:{c.name}", {"timeout": "5s"}, lease_s=None)
    t0 = time.monotonic()
    result = driver.revert(ctx, record)
    # The same verdict as a killed bare pid on the process driver: done, nothing to wait
    # for, no time to recover, and nothing of chaoslab's left (clean), the reason said.
    assert result.reverted and result.time_to_recover_s is None
    assert "no restart policy" in result.detail and "cannot heal" in result.detail
    assert time.monotonic() - t0 < 2, "it knows at once that nothing will heal it"
    report = driver.check_clean(ctx, record)
    assert report.clean and "no restart policy" in report.detail


def test_kill_via_api_disables_the_restart_policy(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    c = lab.run(restart="always")
    record = inject(driver, ctx, "kill", f"name:{c.name}", {"via": "api", "timeout": "2s"}, lease_s=None)
    result = driver.revert(ctx, record)
    assert not result.reverted and "not healed within 2s" in result.detail
    assert state(c)["Status"] == "exited"  # Docker's documented behaviour for `docker kill`


def test_kill_runner_sigkilled_heals_by_itself(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    web, _port = lab.httpd(restart="always")
    spec: dict[str, Any] = {"op": "kill", "args": {}, "target": f"name:{web.name}", "lease": None}
    spec["state_dir"] = str(ctx.state_dir)
    runner = subprocess.Popen(
        [sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps(spec) + "\n")
        runner.stdin.close()
        record = RevertRecord.from_dict(json.loads(runner.stdout.readline()))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=5)
        wait_until(
            lambda: driver.check_clean(ctx, record).clean,
            timeout_s=10,
            interval_s=0.05,
            what="the restart to heal it",
        )
        result = driver.revert(ctx, record)
        assert result.reverted and (result.time_to_recover_s or 0) > 0
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=5)
        assert runner.stdout is not None
        runner.stdout.close()


def test_restart_reports_time_to_recover(lab: DockerLab, driver: Driver, ctx: DriverContext) -> None:
    web, _port = lab.httpd()
    started = state(web)["StartedAt"]
    record = inject(driver, ctx, "restart", f"name:{web.name}", {"grace": "1s"}, lease_s=None)
    result = driver.revert(ctx, record)
    assert result.reverted, result.detail
    assert result.time_to_recover_s is not None and result.time_to_recover_s > 0
    assert state(web)["StartedAt"] != started
    assert driver.check_clean(ctx, record).clean


def test_one_container_named_by_name_and_by_label_is_one_lock(
    lab: DockerLab, driver: Driver, ctx: DriverContext
) -> None:
    from chaoslab.errors import LockHeld
    from chaoslab.safety.claims import ClaimingLedger

    c = lab.run(labels={"h13.role": f"only-me-{lab.session}"})  # no other test's container
    op = driver.operation("pause")
    assert op is not None
    by_name = driver.prepare(ctx, op, {}, f"name:{c.name}", 10)
    by_label = driver.prepare(ctx, op, {}, f"label:h13.role=only-me-{lab.session}", 10)
    assert driver.identities(by_name) == driver.identities(by_label) == (f"docker:{c.id}",)
    with (
        ClaimingLedger(
            "run-a", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks
        ) as a,
        ClaimingLedger(
            "run-b", lease_s=None, directory=env_state().ledger, locks_directory=env_state().locks
        ) as b,
    ):
        a.claim(msgspec.structs.replace(by_name, run_id="run-a", keys=driver.identities(by_name)))
        with pytest.raises(LockHeld, match=c.id):
            b.claim(msgspec.structs.replace(by_label, run_id="run-b", keys=driver.identities(by_label)))
    assert state(c)["Status"] == "running", "prepare and claim touch nothing"


def test_a_lease_ending_mid_stop_waits_for_the_grace_period_then_starts_it(
    lab: DockerLab, driver: Driver, ctx: DriverContext, tmp_path: Path
) -> None:
    """docker.stop on a container that ignores SIGTERM (its PID 1): the stop takes its whole
    grace period. A lease ending meanwhile (here: heartbeats that stopped at once) must not
    call the still-running container clean and leave: it waits the stop out, then starts it."""
    c = lab.run()  # `sleep` as PID 1: SIGTERM is ignored, the stop waits for SIGKILL
    op = driver.operation("stop")
    assert op is not None
    record = driver.prepare(ctx, op, {"grace": "4s"}, f"name:{c.name}", 2.0)
    assert (record.lease_s or 0) >= 4.0 + 2.0, "the stop's grace period fits inside the lease"
    beat = tmp_path / "stale.beat"
    beat.touch()
    os.utime(beat, (time.time() - 60, time.time() - 60))  # a runner that stopped renewing
    record = msgspec.structs.replace(record, heartbeat=str(beat))
    stopper = threading.Thread(target=driver.inject, args=(ctx, record), daemon=True)
    stopper.start()
    try:
        wait_until(
            lambda: outcome_path(ctx.state_dir, record.fault_id).exists(),
            timeout_s=20,
            interval_s=0.05,
            what="the watchdog's outcome file",
        )
        stopper.join(timeout=20)
        outcome = json.loads(outcome_path(ctx.state_dir, record.fault_id).read_text())
        assert outcome["reverted"] and outcome["clean"], outcome
        assert state(c)["Running"], "the watchdog started the container once the stop completed"
    finally:
        stopper.join(timeout=20)
        driver.revert(ctx, record)


def _stressors(c: Any, tag: str) -> list[str]:
    """Processes in the container's cgroup whose argv holds ``tag`` (read on this host,
    not through the driver)."""
    found = []
    for pid in cgroup_file(c, "cpu", "cgroup.procs").read_text().split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if tag.encode() in cmd:
            found.append(pid)
    return found


def test_stress_follows_the_run_s_heartbeat(
    lab: DockerLab, driver: Driver, ctx: DriverContext, tmp_path: Path
) -> None:
    """docker.stress without a duration (the engine gives renewed faults the 24 h ceiling):
    held while the heartbeat is renewed, past LAPSE_S and past the old fixed timeout's
    reach; once renewals stop, the watchdog kills the stressors within LAPSE_S of the last
    beat, says why, and the container's own ``timeout`` never had to act."""
    c = lab.run()
    op = driver.operation("stress")
    assert op is not None
    record = driver.prepare(ctx, op, {"workers": 1}, f"name:{c.name}", MAX_LEASE_S)
    beat = lease.beat_path(ctx.state_dir, record.fault_id)
    lease.beat(beat)
    record = msgspec.structs.replace(record, heartbeat=str(beat))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.HEARTBEAT_S):
            lease.beat(beat)

    beater = threading.Thread(target=renew, daemon=True)
    beater.start()
    try:
        record = driver.inject(ctx, record)
        tag = str(record.data["tag"])
        wait_until(lambda: _stressors(c, tag), timeout_s=5, interval_s=0.05, what="a stressor to start")
        t0 = time.monotonic()
        # Renewed: held all along (sampled past LAPSE_S + 2 s), the behaviour under test.
        gone = poll(lambda: not _stressors(c, tag), timeout_s=lease.LAPSE_S + 2.0, interval_s=0.2)
        assert gone is None, f"the stressor ended {time.monotonic() - t0:.1f}s in"
        stop.set()
        beater.join(timeout=5)
        last = os.stat(beat).st_mtime
        wait_until(
            lambda: not _stressors(c, tag),
            timeout_s=lease.LAPSE_S + 10,
            interval_s=0.05,
            what="the lease to end it",
        )
        ended = time.time() - last
        print(f"docker.stress: ended {ended:.2f}s after the last heartbeat")
        assert ended <= lease.LAPSE_S + lease.POLL_S + 2.0, ended
        wait_until(
            lambda: outcome_path(ctx.state_dir, record.fault_id).exists(),
            timeout_s=10,
            interval_s=0.05,
            what="the watchdog's outcome file",
        )
        outcome = json.loads(outcome_path(ctx.state_dir, record.fault_id).read_text())
        assert outcome["reverted"] and outcome["clean"], outcome
        assert "renewing" in outcome["reason"], outcome
        assert state(c)["Running"], "the container itself was left alone"
    finally:
        stop.set()
        beater.join(timeout=5)
        driver.revert(ctx, record)


# --- edges found by the failure matrix's edge columns ----------------------------------------


def test_stress_in_a_paused_container_is_not_reverted_until_unpaused(
    lab: DockerLab, driver: Driver, ctx: DriverContext
) -> None:
    """Someone pauses the container under a stress fault: no exec reaches it and its
    stressors are frozen, not gone. The revert says so and keeps the lease (it used to
    say "not running: no stressor can remain"); once unpaused, a revert ends them."""
    c = lab.run()
    record = inject(driver, ctx, "stress", f"name:{c.name}", {"workers": 1})
    tag = str(record.data["tag"])
    try:
        wait_until(lambda: _stressors(c, tag), timeout_s=5, interval_s=0.05, what="a stressor to start")
        c.pause()
        result = driver.revert(ctx, record)
        assert not result.reverted and "paused" in result.detail and "lease kept" in result.detail, result
        assert _stressors(c, tag), "the stressors are still there, frozen"
        report = driver.check_clean(ctx, record)
        assert not report.clean and any(tag in r for r in report.residue), report
        c.unpause()
        assert driver.revert(ctx, record).reverted
        assert driver.check_clean(ctx, record).clean
        assert not _stressors(c, tag)
    finally:
        if state(c)["Paused"]:
            c.unpause()
        driver.revert(ctx, record)


def test_a_daemon_that_cannot_be_reached_is_not_applied(
    lab: DockerLab, driver: Driver, ctx: DriverContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOCKER_HOST names the socket of a daemon that died (bound, nobody listening): the
    fault is planned (no error before the run's ledger has its entry) and refused at
    inject as not applied, with the reason; no watchdog is armed."""
    c = lab.run()
    short = Path(tempfile.mkdtemp(prefix="cl-dead-"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dead.bind(str(short / "docker.sock"))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{short}/docker.sock")
        for op in ("kill", "pause"):
            operation = driver.operation(op)
            assert operation is not None
            record = driver.prepare(ctx, operation, {}, f"name:{c.name}", LEASE_S)
            with pytest.raises(DriverError, match="cannot reach the Docker daemon") as refused:
                driver.inject(ctx, record)
            assert refused.value.not_applied
            with pytest.raises(DriverError, match="cannot reach the Docker daemon"):
                driver.prepare(
                    msgspec.structs.replace(ctx, dry=True), operation, {}, f"name:{c.name}", LEASE_S
                )
        assert not (ctx.state_dir / "watchdogs").exists()
    finally:
        dead.close()
        shutil.rmtree(short, ignore_errors=True)
    assert state(c)["Running"] and not state(c)["Paused"]


def test_a_relative_docker_host_is_read_from_the_root_as_the_sdk_reads_it(
    lab: DockerLab, driver: Driver, ctx: DriverContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``unix://var/run/docker.sock``: the SDK dials /var/run/docker.sock from any working
    directory; the reachability check used to dial it relative to the working directory
    and call the daemon unreachable."""
    c = lab.run()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "unix://var/run/docker.sock")
    op = driver.operation("running")
    assert op is not None
    assert driver.probe(ctx, op, {}, f"name:{c.name}") is True


def test_revert_talks_to_the_daemon_the_record_names_not_the_environment_s(
    lab: DockerLab, driver: Driver, ctx: DriverContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container id names a container of one daemon. The run reached it through
    DOCKER_HOST; `recover` runs in a shell whose DOCKER_HOST names a daemon that is not
    there (or another one): the revert, and the clean check, still act on the record's
    daemon. (They used to follow the environment: unreachable, or, against another
    daemon, "no longer exists" and clean while the container stayed paused.)"""
    c = lab.run()
    short = Path(tempfile.mkdtemp(prefix="cl-dh-"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        (short / "docker.sock").symlink_to("/var/run/docker.sock")  # the daemon by another address
        monkeypatch.setenv("DOCKER_HOST", f"unix://{short}/docker.sock")
        record = inject(driver, ctx, "pause", f"name:{c.name}")
        assert record.data["daemon"] == f"unix://{short}/docker.sock"
        assert state(c)["Paused"]
        dead.bind(str(short / "dead.sock"))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{short}/dead.sock")
        result = driver.revert(ctx, record)
        assert result.reverted, result
        assert driver.check_clean(ctx, record).clean
        assert not state(c)["Paused"]
    finally:
        dead.close()
        monkeypatch.delenv("DOCKER_HOST")
        if state(c)["Paused"]:
            c.unpause()
        shutil.rmtree(short, ignore_errors=True)
