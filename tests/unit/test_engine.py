"""The run engine with a fake driver: phases, revert guarantee, deadlines, verdicts."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.events import EventBus, FaultInjected
from chaoslab.engine.journal import read_events
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.errors import InvalidInput
from chaoslab.session import SessionOptions, run_experiment
from chaoslab.verdict import ExitCode, Verdict
from tests.fakedriver import FakeDriver
from tests.statepaths import env_state


def registry() -> DriverRegistry:
    return DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)


def run(tmp: Path, body: str, **opts: Any) -> tuple[Any, Path]:
    target = tmp / "target"
    target.mkdir(exist_ok=True)
    f = tmp / "exp.yaml"
    f.write_text(textwrap.dedent(body).replace("@TARGET@", str(target)))
    reg = registry()
    exp = load_experiment(str(f), registry=reg)
    runner = Runner(
        exp,
        registry=reg,
        options=RunOptions(run_dir=tmp / "run", handle_signals=False, state=env_state(), **opts),
    )
    return runner.run(), target


HEADER = """
title: t
description: d
steady-state-hypothesis:
  title: no marker files
  probes:
    - {do: fake.count, target: "@TARGET@", tolerance: 0}
"""


def test_fault_held_for_its_duration_then_reverted_and_verified(tmp_path: Path) -> None:
    result, target = run(
        tmp_path,
        HEADER
        + """
method:
  - {do: fake.touch, target: "@TARGET@", duration: 0.3}
""",
    )
    assert result.verdict is Verdict.PASSED
    assert list(target.iterdir()) == []
    kinds = [e["kind"] for e in read_events(result.events_path)]
    assert kinds.index("fault-injected") < kinds.index("fault-reverted") < kinds.index("clean-checked")
    injected = next(e for e in read_events(result.events_path) if e["kind"] == "fault-injected")
    reverted = next(e for e in read_events(result.events_path) if e["kind"] == "fault-reverted")
    # The duration counts from the moment the fault is put on (its lease starts then, just
    # before the driver's inject), not from the injected event written after it.
    record = injected["record"]
    assert reverted["ts"] - (record["lease_expires_at"] - record["lease_s"]) >= 0.3
    assert reverted["ts"] - injected["ts"] < 0.3 + 2.0  # and not held much longer


def test_steady_state_broken_by_a_fault_that_outlives_the_method_deviates(tmp_path: Path) -> None:
    # the after-check runs once faults are reverted, so here it is a *during* check that sees it
    result, target = run(
        tmp_path,
        HEADER
        + """
runtime: {hypothesis: {strategy: continuously, frequency: 0.05}}
method:
  - {do: fake.touch, target: "@TARGET@", duration: 0.4}
""",
    )
    assert result.verdict is Verdict.DEVIATED
    assert "during" in result.reason
    assert list(target.iterdir()) == []


def test_exception_in_inject_still_reverts_the_half_applied_fault(tmp_path: Path) -> None:
    result, target = run(
        tmp_path,
        HEADER
        + """
method:
  - {do: fake.touch, target: "@TARGET@", with: {fail_inject: true}}
""",
    )
    assert result.verdict is Verdict.ERROR
    assert list(target.iterdir()) == []


def test_revert_that_leaves_residue_is_not_clean_the_worst_verdict(tmp_path: Path) -> None:
    result, target = run(
        tmp_path,
        HEADER
        + """
method:
  - {do: fake.touch, target: "@TARGET@", with: {stubborn: true}, duration: 0.1}
""",
    )
    assert result.verdict is Verdict.NOT_CLEAN
    assert result.verdict.exit_code is ExitCode.NOT_CLEAN
    assert "still exists" in result.reason
    for f in target.iterdir():
        f.unlink()


def test_hung_activity_is_abandoned_at_its_deadline_and_rollbacks_run(tmp_path: Path) -> None:
    marker = tmp_path / "rolled-back"
    t0 = time.monotonic()
    result, target = run(
        tmp_path,
        HEADER
        + f"""
method:
  - {{do: fake.touch, target: "@TARGET@"}}
  - type: action
    name: hangs
    timeout: 0.5
    provider: {{type: python, module: tests.e2e.ctkfuncs, func: sleep_quietly, arguments: {{seconds: 3600}}}}
rollbacks:
  - {{type: action, name: mark, provider: {{type: process, path: touch, arguments: "{marker}"}}}}
""",
    )
    assert time.monotonic() - t0 < 10
    assert marker.exists()
    assert list(target.iterdir()) == []
    run_entry = next(r for r in result.journal["run"] if r["activity"]["name"] == "hangs")
    assert run_entry["status"] == "failed" and run_entry["chaoslab"]["timed_out"]


def test_baseline_not_met_skips_method_and_is_inconclusive(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "preexisting.fault").write_text("x")
    result, _ = run(
        tmp_path,
        HEADER
        + """
method:
  - {do: fake.touch, target: "@TARGET@"}
""",
    )
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.journal["run"] == []
    assert not any(e["kind"] == "fault-injected" for e in read_events(result.events_path))


def test_guard_abort_reverts_everything_and_measures_breach_to_clean(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text(
        HEADER.replace("@TARGET@", str(target))
        + f"""
method:
  - {{do: fake.touch, target: "{target}", duration: 30}}
  - {{do: fake.touch, target: "{target}", duration: 30}}
"""
    )
    reg = registry()
    exp = load_experiment(str(f), registry=reg)

    class TripWhenTwoFaults:
        def __init__(self, runner: Runner) -> None:
            self.runner = runner

        def check(self, now: float) -> str | None:
            return "two faults active" if len(self.runner.faults.active()) >= 2 else None

    runner = Runner(
        exp,
        registry=reg,
        options=RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state()),
        guard_factory=TripWhenTwoFaults,
    )
    t0 = time.monotonic()
    result = runner.run()
    assert time.monotonic() - t0 < 5, "the guard must not wait for the 30 s duration"
    assert result.verdict is Verdict.ABORTED
    assert "two faults active" in result.reason
    assert list(target.iterdir()) == []
    assert result.breach_to_clean_s is not None and result.breach_to_clean_s < 1.0


def test_a_guard_abort_waits_for_the_clean_check_its_revert_started(tmp_path: Path) -> None:
    """The guard's thread reverts; the run waits for it only so long (2 s), then winds
    down. A revert done but a clean check still under way must be waited for, not judged
    "not verified" (NOT-CLEAN): ssh.kill, whose check waits on a remote heal, ended so."""
    from chaoslab.drivers.base import CleanReport, DriverContext, RevertRecord

    class SlowCheck(FakeDriver):
        def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
            time.sleep(2.5)
            return super().check_clean(ctx, record)

    target = tmp_path / "target"
    target.mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text(
        f'title: t\ndescription: d\nmethod:\n  - {{do: fake.touch, target: "{target}", duration: 30}}\n'
    )
    reg = DriverRegistry(extra={"fake": SlowCheck()}, load_installed=False)
    exp = load_experiment(str(f), registry=reg)

    class TripOnAFault:
        def __init__(self, runner: Runner) -> None:
            self.runner = runner

        def check(self, now: float) -> str | None:
            return "a fault is in" if self.runner.faults.first_injected_at() is not None else None

    runner = Runner(
        exp,
        registry=reg,
        options=RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state()),
        guard_factory=TripOnAFault,
    )
    result = runner.run()
    assert result.verdict is Verdict.ABORTED, result.reason
    assert result.verdict.exit_code == ExitCode.ABORTED
    checked = [e for e in read_events(result.events_path) if e["kind"] == "clean-checked"]
    assert [c["clean"] for c in checked] == [True]


def test_two_runs_in_one_process_do_not_share_state(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    body = (
        HEADER
        + """
method:
  - {do: fake.touch, target: "@TARGET@", duration: 0.1}
"""
    )
    seen: list[str] = []
    results = []
    for d in (a, b):
        f = d / "exp.yaml"
        f.write_text(body.replace("@TARGET@", str(d)))
        reg = registry()
        bus = EventBus()
        bus.subscribe(lambda e: seen.append(e.run_id) if isinstance(e, FaultInjected) else None)
        runner = Runner(
            load_experiment(str(f), registry=reg),
            registry=reg,
            bus=bus,
            options=RunOptions(run_dir=d / "run", handle_signals=False, state=env_state()),
        )
        results.append(runner.run())
    assert [r.verdict for r in results] == [Verdict.PASSED, Verdict.PASSED]
    assert seen == [results[0].run_id, results[1].run_id]


def test_unknown_operation_and_bad_arguments_are_invalid_before_running(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        HEADER.replace("@TARGET@", str(tmp_path))
        + """
method:
  - {do: fake.explode, target: x}
  - {do: fake.touch, target: x, with: {stubborn: "yes", nope: 1}}
  - {do: fake.touch, target: x, duration: -3s}
  - {do: fake.touch, target: x, duration: 9999h}
"""
    )
    with pytest.raises(InvalidInput) as info:
        load_experiment(str(f), registry=registry())
    text = str(info.value)
    assert "method[0].do" in text and "no operation 'explode'" in text
    assert "method[1].with.stubborn" in text and "expected bool" in text
    assert "method[1].with.nope" in text
    assert "method[2].duration" in text
    assert "method[3].duration" in text and "longer than the limit" in text


def test_a_probe_sampled_as_an_sli_is_judged_per_window(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text(
        """
title: t
description: d
sli:
  - name: no-markers
    interval: 0.02s
    probe: {do: fake.count, target: "@TARGET@", tolerance: 0}
windows: {baseline: 2s, after: 2s}
slo:
  - {name: clean-dir, sli: availability, objective: 0.9, source: no-markers}
method:
  - {do: fake.touch, target: "@TARGET@", duration: 2s}
""".replace("@TARGET@", str(target))
    )
    reg = registry()
    result, _ = run_experiment(
        load_experiment(str(f), registry=reg),
        registry=reg,
        options=RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state()),
        bus=EventBus(),
        run_id="probe-sli",
        session=SessionOptions(state=env_state()),
    )
    slo = {(e["window"], e["verdict"]) for e in result.journal["chaoslab"]["slo"]}
    assert slo == {("baseline", "pass"), ("during", "fail"), ("after", "pass")}
    assert result.verdict is Verdict.DEVIATED
    assert list(target.iterdir()) == []


def test_an_objective_on_an_undefined_source_is_invalid(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        "title: t\ndescription: d\nmethod: []\n"
        "slo:\n  - {name: a, sli: availability, objective: 0.9, source: nowhere}\n"
        "  - {name: b, sli: availability, objective: 0.9}\n"
    )
    with pytest.raises(InvalidInput) as info:
        load_experiment(str(f), registry=registry())
    text = str(info.value)
    assert "slo[0].source" in text and "'nowhere'" in text
    assert "slo[1]" in text and "'load'" in text


def test_a_fixed_lease_that_expired_before_the_revert_is_reported_never_a_silent_pass(
    tmp_path: Path,
) -> None:
    # The fake driver's leases are not renewed by heartbeats: 0.1 s + the 5 s margin, and
    # the method outlives it. The run must say the fault was not held throughout.
    result, _target = run(
        tmp_path,
        """
title: t
description: d
lease: 0.1s
method:
  - {do: fake.touch, target: "@TARGET@"}
  - {type: action, name: long, provider: {type: process, path: sleep, arguments: "5.5"}}
""",
    )
    assert result.verdict is Verdict.INCONCLUSIVE, result.reason
    assert "ended early by its lease" in result.reason
    lapsed = [e for e in read_events(result.events_path) if e["kind"] == "lease-lapsed"]
    assert len(lapsed) == 1 and "expired" in lapsed[0]["reason"]
