"""The ``proxy`` driver against a real proxy server: every fault observable, reverted,
checked clean; revert idempotent and from another process; a SIGKILLed runner's fault
ended by the server's lease; lab targets; bad input refused before any change."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chaoslab.drivers import lease
from chaoslab.drivers.base import MAX_LEASE_S, DriverContext, RevertRecord, check_args
from chaoslab.drivers.lease import lapse_path
from chaoslab.drivers.proxy.driver import ProxyDriver
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.errors import DriverError, TargetNotFound
from chaoslab.lab.state import write_state
from chaoslab.paths import lab_dir
from tests.conftest import wait_until
from tests.integration.proxykit import ProxyRef, connect, median_rtt
from tests.statepaths import env_state


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="test-run", state_dir=tmp_path, lab_dir=env_state().lab)


def inject(ctx: DriverContext, op: str, args: dict[str, Any], target: str, lease: float = 30):
    driver = ProxyDriver()
    operation = driver.operation(op)
    assert operation is not None
    assert check_args(operation, args) == []
    assert driver.validate(operation, args, target) == []
    record = driver.prepare(ctx, operation, args, target, lease)
    return driver, driver.inject(ctx, record)


FAULTS = [
    ("latency", {"latency": "50ms", "jitter": "5ms"}, {"latency": 50, "jitter": 5}),
    ("bandwidth", {"rate": 100}, {"rate": 100}),
    ("timeout", {"timeout": "2s"}, {"timeout": 2000}),
    ("reset_peer", {"timeout": 0.5}, {"timeout": 500}),
    (
        "slicer",
        {"average_size": 64, "size_variation": 8, "delay_us": 100},
        {"average_size": 64, "size_variation": 8, "delay": 100},
    ),
    ("slow_close", {"delay": "1s", "stream": "upstream"}, {"delay": 1000}),
    ("limit_data", {"bytes": 4096, "toxicity": 0.5}, {"bytes": 4096}),
]


@pytest.mark.parametrize(("op", "args", "attributes"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_inject_revert_check_clean(
    ctx: DriverContext, proxy: ProxyRef, op: str, args: dict[str, Any], attributes: dict[str, int]
) -> None:
    driver, record = inject(ctx, op, args, proxy.target)
    name = record.data["toxic"]["name"]
    assert name == f"chaoslab-{record.fault_id}"
    [toxic] = proxy.toxics()
    assert toxic["name"] == name and toxic["type"] == op and toxic["attributes"] == attributes
    assert toxic["stream"] == args.get("stream", "downstream")
    assert toxic["toxicity"] == args.get("toxicity", 1.0) and toxic["lease_s"] == 30
    assert record.lease_expires_at is not None and record.lease_expires_at > time.time() + 25
    report = driver.check_clean(ctx, record)
    assert not report.clean and name in report.residue[0]

    assert driver.revert(ctx, record).reverted
    assert proxy.toxics() == []
    assert driver.check_clean(ctx, record).clean
    again = driver.revert(ctx, record)  # idempotent
    assert again.reverted and again.detail == "already clean"


def test_latency_fault_is_observable_and_probe_lists_it(ctx: DriverContext, proxy: ProxyRef) -> None:
    base = median_rtt(proxy.port, n=3)
    driver, record = inject(ctx, "latency", {"latency": "80ms"}, proxy.target)
    assert 0.078 <= median_rtt(proxy.port, n=3) - base <= 0.09
    op = driver.operation("toxics")
    assert op is not None
    listed = driver.probe(ctx, op, {}, proxy.target)
    assert [t["name"] for t in listed] == [record.data["toxic"]["name"]]
    driver.revert(ctx, record)
    assert median_rtt(proxy.port, n=3) < 0.03


def test_down_fault_refuses_connections_until_reverted(ctx: DriverContext, proxy: ProxyRef) -> None:
    driver, record = inject(ctx, "down", {}, proxy.target)
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.port).close()
    report = driver.check_clean(ctx, record)
    assert not report.clean and "disabled" in report.residue[0]
    assert driver.revert(ctx, record).reverted
    assert driver.revert(ctx, record).reverted
    assert driver.check_clean(ctx, record).clean
    assert median_rtt(proxy.port, n=2) < 0.05


def test_revert_from_a_new_process_with_only_the_record(ctx: DriverContext, proxy: ProxyRef) -> None:
    _, record = inject(ctx, "latency", {"latency": "100ms"}, proxy.target)
    code = (
        "import json, sys, pathlib\n"
        "from chaoslab.drivers.base import DriverContext, RevertRecord\n"
        "from chaoslab.drivers.proxy.driver import ProxyDriver\n"
        "r = RevertRecord.from_dict(json.loads(sys.argv[1]))\n"
        "from chaoslab.paths import StatePaths\n"
        "c = DriverContext(run_id='other', state_dir=pathlib.Path('.'), lab_dir=StatePaths.from_environment().lab)\n"
        "print(ProxyDriver().revert(c, r).reverted, ProxyDriver().check_clean(c, r).clean)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, record.to_json()], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["True", "True"], out.stderr
    assert proxy.toxics() == []


@pytest.mark.parametrize("op", ["latency", "down"])
def test_sigkilled_runner_fault_ends_with_the_lease(ctx: DriverContext, proxy: ProxyRef, op: str) -> None:
    """The runner injects with a 1 s lease and is SIGKILLed: the server alone cleans up."""
    args = {"latency": "300ms"} if op == "latency" else {}
    code = (
        "import json, sys, time, pathlib\n"
        "from chaoslab.drivers.base import DriverContext\n"
        "from chaoslab.drivers.proxy.driver import ProxyDriver\n"
        "from chaoslab.paths import StatePaths\n"
        "lab = StatePaths.from_environment().lab\n"
        "d = ProxyDriver(); c = DriverContext(run_id='doomed', state_dir=pathlib.Path('.'), lab_dir=lab)\n"
        f"op = d.operation({op!r})\n"
        f"r = d.inject(c, d.prepare(c, op, {args!r}, sys.argv[1], 1.0))\n"
        "print(r.to_json(), flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", code, proxy.target], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    try:
        record = RevertRecord.from_dict(json.loads(runner.stdout.readline()))
        injected_at = time.monotonic()
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=10)
        runner.stdout.close()
    driver = ProxyDriver()
    assert not driver.check_clean(ctx, record).clean
    wait_until(lambda: driver.check_clean(ctx, record).clean, timeout_s=2.0, what="a clean check")
    assert time.monotonic() - injected_at <= 2.0  # within lease + 1 s
    assert median_rtt(proxy.port, n=2) < 0.05


def _renewed_record(ctx: DriverContext, proxy: ProxyRef, op: str) -> tuple[ProxyDriver, RevertRecord]:
    """A fault prepared as the run prepares one it renews: the 24 h ceiling and a heartbeat."""
    driver = ProxyDriver()
    operation = driver.operation(op)
    assert operation is not None
    args = {"latency": "1ms"} if op == "latency" else {}
    record = driver.prepare(ctx, operation, args, proxy.target, MAX_LEASE_S)
    beat = lease.beat_path(ctx.state_dir, record.fault_id)
    lease.beat(beat)
    return driver, msgspec.structs.replace(record, heartbeat=str(beat))


@pytest.mark.parametrize("op", ["latency", "down"])
def test_the_run_s_renewals_hold_the_fault_and_their_lapse_is_reported(
    ctx: DriverContext, proxy: ProxyRef, op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``renew`` keeps the fault on past its window; once renewals stop the server ends it
    within the window, ``renew`` says why, and a revert afterwards tells the run too."""
    monkeypatch.setattr("chaoslab.drivers.proxy.driver.LAPSE_S", 1.0)  # a short window: a short test
    driver, record = _renewed_record(ctx, proxy, op)
    assert driver.renew(ctx, record) is None  # not injected yet: nothing to renew
    record = driver.inject(ctx, record)
    assert record.data["heartbeat_s"] == 1.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:  # renewed: held well past its window
        assert driver.renew(ctx, record) is None
        last = time.monotonic()
        assert not driver.check_clean(ctx, record).clean
        time.sleep(0.25)
    wait_until(
        lambda: driver.check_clean(ctx, record).clean, timeout_s=3.0, what="the unrenewed lease to end it"
    )
    assert time.monotonic() - last < 1.0 + 0.5
    reason = driver.renew(ctx, record)
    assert reason is not None and "the proxy ended it" in reason and "no renewal for" in reason, reason
    assert not lapse_path(ctx.state_dir, record.fault_id).exists()
    result = driver.revert(ctx, record)
    assert result.reverted and "no renewal for" in result.detail, result.detail
    reported = json.loads(lapse_path(ctx.state_dir, record.fault_id).read_text())
    assert "no renewal for" in reported["reason"]
    assert driver.check_clean(ctx, record).clean


def test_a_fault_another_client_removed_is_reported_gone(ctx: DriverContext, proxy: ProxyRef) -> None:
    driver, record = _renewed_record(ctx, proxy, "latency")
    record = driver.inject(ctx, record)
    assert driver.renew(ctx, record) is None
    toxic = record.data["toxic"]["name"]
    proxy.http("DELETE", f"/proxies/{proxy.name}/toxics/{toxic}")  # another client
    reason = driver.renew(ctx, record)
    assert reason is not None and "another client" in reason, reason
    result = driver.revert(ctx, record)
    assert result.reverted and result.detail == "already clean"  # no lease ended it
    assert not lapse_path(ctx.state_dir, record.fault_id).exists()


def test_lab_target_resolves_through_the_lab_state(ctx: DriverContext, proxy: ProxyRef) -> None:
    api_port = int(proxy.api.rsplit(":", 1)[1])
    write_state(
        lab_dir(env_state().home),
        {
            "proxy": {"pid": 1, "api_port": api_port},
            "components": {
                "replica-1": {"kind": "replica", "pid": 2, "port": 1, "proxy": proxy.name},
                "lb": {"kind": "lb", "pid": 3, "port": 2},
            },
        },
    )
    driver, record = inject(ctx, "latency", {"latency": "10ms"}, "lab:replica-1")
    assert record.data["proxy"] == proxy.name
    assert [t["name"] for t in proxy.toxics()] == [record.data["toxic"]["name"]]
    driver.revert(ctx, record)
    assert driver.check_clean(ctx, record).clean
    op = driver.operation("latency")
    assert op is not None
    for bad in ("lab:lb", "lab:replica-9"):
        with pytest.raises(TargetNotFound):
            driver.prepare(ctx, op, {"latency": "10ms"}, bad, 10)


def test_bad_input_is_refused_before_anything_changes(ctx: DriverContext, proxy: ProxyRef) -> None:
    driver = ProxyDriver()
    op = driver.operation("latency")
    assert op is not None
    assert check_args(op, {}) != []  # latency is required
    assert check_args(op, {"latency": "fast"}) != []
    assert check_args(op, {"latency": "10ms", "toxicity": 2}) != []
    assert check_args(op, {"latency": "10ms", "stream": "sideways"}) != []
    assert driver.validate(op, {"latency": "2m"}, proxy.target) != []
    assert driver.validate(op, {"latency": "1s"}, "pid:1") != []
    assert driver.validate(op, {"latency": "1s"}, "proxy:x@10.0.0.1:8474") != []
    with pytest.raises(TargetNotFound):
        driver.prepare(ctx, op, {"latency": "10ms"}, f"proxy:nope@{proxy.target.split('@')[1]}", 5)
    assert proxy.toxics() == []


@pytest.mark.parametrize("op", ["latency", "down"])
def test_a_proxy_api_nobody_listens_on_is_not_applied(ctx: DriverContext, op: str) -> None:
    """Planned (nothing about the proxy can be known yet); inject cannot connect, so
    nothing reached the server: "not applied", never a fault to revert or recover."""
    driver = ProxyDriver()
    operation = driver.operation(op)
    assert operation is not None
    args = {"latency": "10ms"} if op == "latency" else {}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connection refused
        record = driver.prepare(ctx, operation, args, f"proxy:x@127.0.0.1:{dead}", 5)
        with pytest.raises(DriverError, match="Connection refused") as refused:
            driver.inject(ctx, record)
        # A dry plan injects nothing, so it tells at once (``chaoslab plan`` shows it).
        dry = msgspec.structs.replace(ctx, dry=True)
        with pytest.raises(DriverError, match="Connection refused"):
            driver.prepare(dry, operation, args, f"proxy:x@127.0.0.1:{dead}", 5)
    assert refused.value.not_applied


@pytest.mark.parametrize("op", ["latency", "down"])
def test_a_proxy_deleted_after_the_plan_is_not_applied(ctx: DriverContext, proxy: ProxyRef, op: str) -> None:
    driver = ProxyDriver()
    operation = driver.operation(op)
    assert operation is not None
    args = {"latency": "10ms"} if op == "latency" else {}
    record = driver.prepare(ctx, operation, args, proxy.target, 5)
    proxy.http("DELETE", f"/proxies/{proxy.name}")  # another client, between plan and inject
    with pytest.raises(TargetNotFound) as gone:
        driver.inject(ctx, record)
    assert gone.value.not_applied and "nothing was changed" in str(gone.value)


def test_localhost_and_127_0_0_1_name_one_proxy(ctx: DriverContext, proxy: ProxyRef) -> None:
    """Two spellings of the API's host lock the same identity (two runs cannot fault one
    proxy by naming it differently), and the record holds the address."""
    driver = ProxyDriver()
    op = driver.operation("latency")
    assert op is not None
    port = proxy.api.rsplit(":", 1)[1]
    records = [
        driver.prepare(ctx, op, {"latency": "10ms"}, f"proxy:{proxy.name}@{host}:{port}", 5)
        for host in ("127.0.0.1", "localhost")
    ]
    keys = {driver.identities(r) for r in records}
    assert keys == {(f"proxy:http://127.0.0.1:{port}/{proxy.name}",)}, keys
    assert {r.data["api"] for r in records} == {f"http://127.0.0.1:{port}"}


def test_registered_as_entry_point() -> None:
    assert isinstance(DriverRegistry().get("proxy"), ProxyDriver)
