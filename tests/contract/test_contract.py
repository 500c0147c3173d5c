"""The driver contract, checked against real targets for every fault operation.

For each ``FaultCase`` (collected from every ``tests/contract/cases_*.py``):

1. inject → visible on the target → revert → ``check_clean`` passes, fault gone;
2. revert twice: the second revert is a harmless no-op;
3. revert from a *new* process given only the record's JSON;
4. the runner is SIGKILLed right after inject: the fault outlives it, then the lease
   (or, for faults without lease, the system healing) ends it: clean within lease + 1 s.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.contract as contract_pkg
from chaoslab.drivers.base import Driver, DriverContext, RevertRecord
from chaoslab.drivers.registry import DriverRegistry
from tests.conftest import poll, require, wait_until
from tests.contract.cases import FaultCase, Target
from tests.contract.targets import adopting_orphans, stop
from tests.statepaths import env_state

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _all_cases() -> list[FaultCase]:
    cases: list[FaultCase] = []
    for info in sorted(pkgutil.iter_modules(contract_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            module = importlib.import_module(f"tests.contract.{info.name}")
            cases.extend(module.CASES)
    return cases


CASES = _all_cases()


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> FaultCase:
    c: FaultCase = request.param
    ok, reason = c.available()
    if not ok and not c.required_in_ci:
        pytest.skip(f"{c.id}: {reason}")
    require(ok, f"{c.id}: {reason}")
    return c


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="contract", state_dir=tmp_path / "state", lab_dir=env_state().lab)


def _driver(case: FaultCase) -> Driver:
    return DriverRegistry().get(case.driver)


def _inject(case: FaultCase, ctx: DriverContext, target: Target) -> RevertRecord:
    driver = _driver(case)
    op = driver.operation(case.op)
    assert op is not None, f"{case.driver} has no operation {case.op}"
    record = driver.prepare(ctx, op, {**case.args, **target.args}, target.selector, case.lease_s)
    json.loads(record.to_json())  # the record written to the ledger is plain JSON
    return driver.inject(ctx, record)


def _assert_gone(case: FaultCase, ctx: DriverContext, target: Target, record: RevertRecord) -> None:
    report = _driver(case).check_clean(ctx, record)
    assert report.clean, report.residue
    wait_until(
        lambda: not case.observe(target, record), timeout_s=3.0, interval_s=0.05, what="the fault to vanish"
    )


def test_inject_observe_revert_clean(case: FaultCase, ctx: DriverContext, tmp_path: Path) -> None:
    driver = _driver(case)
    with case.make_target(tmp_path) as target:
        assert not case.observe(target, _probe_record(case)), "target shows the fault before inject"
        record = _inject(case, ctx, target)
        try:
            wait_until(
                lambda: case.observe(target, record), timeout_s=5.0, interval_s=0.05, what="the fault to show"
            )
            assert not driver.check_clean(ctx, record).clean, "check_clean blind to the fault"
            result = driver.revert(ctx, record)
            assert result.reverted, result.detail
            if case.lease_s is None:
                assert result.time_to_recover_s is not None and result.time_to_recover_s > 0
            _assert_gone(case, ctx, target, record)
        finally:
            driver.revert(ctx, record)


def test_revert_twice(case: FaultCase, ctx: DriverContext, tmp_path: Path) -> None:
    driver = _driver(case)
    with case.make_target(tmp_path) as target:
        record = _inject(case, ctx, target)
        try:
            wait_until(
                lambda: case.observe(target, record), timeout_s=5.0, interval_s=0.05, what="the fault to show"
            )
            first = driver.revert(ctx, record)
            second = driver.revert(ctx, record)
            assert first.reverted and second.reverted, (first, second)
            _assert_gone(case, ctx, target, record)
        finally:
            driver.revert(ctx, record)


_REVERT_ELSEWHERE = """
import json, sys
from pathlib import Path
from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.registry import DriverRegistry
record = RevertRecord.from_dict(json.loads(sys.argv[1]))
driver = DriverRegistry().get(record.driver)
ctx = DriverContext(run_id=record.run_id, state_dir=Path(sys.argv[2]), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
result = driver.revert(ctx, record)
report = driver.check_clean(ctx, record)
print(json.dumps({"reverted": result.reverted, "clean": report.clean, "residue": report.residue}))
"""


def test_revert_from_new_process(case: FaultCase, ctx: DriverContext, tmp_path: Path) -> None:
    with case.make_target(tmp_path) as target:
        record = _inject(case, ctx, target)
        try:
            wait_until(
                lambda: case.observe(target, record), timeout_s=5.0, interval_s=0.05, what="the fault to show"
            )
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
            _assert_gone(case, ctx, target, record)
        finally:
            _driver(case).revert(ctx, record)


_RUNNER = """
import json, sys, time
from pathlib import Path
from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.registry import DriverRegistry
spec = json.loads(sys.stdin.readline())
driver = DriverRegistry().get(spec["driver"])
ctx = DriverContext(run_id="contract-runner", state_dir=Path(spec["state_dir"]), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab)
record = driver.prepare(ctx, driver.operation(spec["op"]), spec["args"], spec["target"], spec["lease"])
record = driver.inject(ctx, record)
print(record.to_json(), flush=True)
time.sleep(120)
"""


def test_runner_sigkilled_lease_ends_fault(case: FaultCase, ctx: DriverContext, tmp_path: Path) -> None:
    driver = _driver(case)
    with case.make_target(tmp_path) as target:
        spec = {
            "driver": case.driver,
            "op": case.op,
            "args": {**case.args, **target.args},
            "target": target.selector,
            "lease": case.lease_s,
            "state_dir": str(ctx.state_dir),
        }
        # The spec goes through stdin so a pattern target never matches the runner itself.
        runner = subprocess.Popen(
            [sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        guard = threading.Timer(60, runner.kill)  # bound the readline below
        guard.start()
        record: RevertRecord | None = None
        try:
            assert runner.stdin is not None and runner.stdout is not None
            runner.stdin.write(json.dumps(spec) + "\n")
            runner.stdin.flush()
            line = runner.stdout.readline()
            assert line, "the runner died before injecting"
            record = RevertRecord.from_dict(json.loads(line))
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=5)
            # The fault outlives its runner: the target, not the runner, ends it.
            wait_until(
                lambda: case.observe(target, record),
                timeout_s=1.0,
                interval_s=0.05,
                what="the fault after the kill",
            )
            if record.lease_expires_at is not None:
                deadline = record.lease_expires_at + 1.0
            else:
                deadline = time.time() + case.heal_s
            clean = (
                poll(
                    lambda: driver.check_clean(ctx, record).clean and not case.observe(target, record),
                    timeout_s=max(0.0, deadline - time.time()),
                    interval_s=0.05,
                )
                is not None
            )
            late = time.time() - (record.lease_expires_at or deadline)
            assert clean, f"not clean {late:.2f}s after the lease: {driver.check_clean(ctx, record)}"
        finally:
            guard.cancel()
            stop(runner, sig=signal.SIGKILL)
            if record is not None:
                driver.revert(ctx, record)


def _probe_record(case: FaultCase) -> RevertRecord:
    """A record for observing a target before any fault exists (nothing to find)."""
    return RevertRecord(
        driver=case.driver,
        operation=case.op,
        target="",
        data={"sid": -1, "mib": 1, "fill_bytes": 1},
    )
