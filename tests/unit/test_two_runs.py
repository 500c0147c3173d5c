"""Two experiments in one process, at the same time, never see each other.

No module-level state (STYLE.md): each run has its own bus, fold, journal, driver context,
configuration and SLI series file. Run A holds its fault and passes; run B's fault is
stubborn (its revert leaves the marker), so B is NOT CLEAN. Both faults are held at the
same time (checked from the events), and neither run's verdict, events or journal
mention the other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.journal import read_events, verdict_of_log
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.verdict import Verdict
from tests.fakedriver import FakeDriver
from tests.statepaths import env_state

EXPERIMENT = """
title: {title}
description: one of two concurrent runs
configuration:
  whoami: {title}
steady-state-hypothesis:
  title: no marker files
  probes:
    - {{do: fake.count, target: "{target}", tolerance: 0}}
method:
  - {{do: fake.touch, target: "{target}", duration: 1.5, with: {{stubborn: {stubborn}}}}}
"""


def _runner(tmp: Path, title: str, *, stubborn: bool) -> tuple[Runner, Path]:
    target = tmp / title / "target"
    target.mkdir(parents=True)
    f = tmp / title / "exp.yaml"
    f.write_text(EXPERIMENT.format(title=title, target=target, stubborn=str(stubborn).lower()))
    # A registry each, as two sessions would have: no driver state is shared either.
    reg = DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)
    exp = load_experiment(str(f), registry=reg)
    options = RunOptions(run_dir=tmp / title / "run", handle_signals=False, state=env_state())
    return Runner(exp, registry=reg, options=options, run_id=f"run-{title}"), target


def test_two_concurrent_runs_in_one_process_never_see_each_other(tmp_path: Path) -> None:
    a, target_a = _runner(tmp_path, "a", stubborn=False)
    b, target_b = _runner(tmp_path, "b", stubborn=True)
    start = threading.Barrier(2, timeout=30)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def go(name: str, runner: Runner) -> None:
        try:
            start.wait()
            results[name] = runner.run()
        except BaseException as exc:  # reported below, with the other run's result
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)

    assert results["a"].verdict is Verdict.PASSED, results["a"].reason
    assert results["b"].verdict is Verdict.NOT_CLEAN, results["b"].reason
    assert list(target_a.iterdir()) == []
    # Both faults were held at the same time: the runs really overlapped.
    held: dict[str, tuple[float, float]] = {}
    for name in ("a", "b"):
        events = read_events(results[name].events_path)
        assert {e["run_id"] for e in events} == {f"run-{name}"}
        other = "b" if name == "a" else "a"
        text = results[name].events_path.read_text()
        assert f"run-{other}" not in text and str(tmp_path / other) not in text
        injected = next(e["ts"] for e in events if e["kind"] == "fault-injected")
        reverted = next(e["ts"] for e in events if e["kind"] == "fault-reverted")
        held[name] = (injected, reverted)
        # The verdict folded from each log is that run's own.
        assert verdict_of_log(results[name].events_path)[0] is results[name].verdict
        journal = results[name].journal
        assert journal["chaoslab"]["run_id"] == f"run-{name}"
        assert all(f["run_id"] == f"run-{name}" for f in journal["chaoslab"]["faults"])
    assert max(held["a"][0], held["b"][0]) < min(held["a"][1], held["b"][1])
    # Each run's configuration is its own (chaoslab's series key included).
    assert a.configuration["whoami"] == "a" and b.configuration["whoami"] == "b"
    # The stubborn marker is B's to clean up, and only B's.
    for marker in target_b.iterdir():
        marker.unlink()


def test_two_sessions_with_their_own_state_paths_keep_to_them(
    tmp_path: Path, chaoslab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State is passed in: each session's ledger and locks live under the StatePaths it
    was given, and the environment's home (CHAOSLAB_HOME) is never touched."""
    from chaoslab.engine.events import EventBus
    from chaoslab.paths import StatePaths
    from chaoslab.session import SessionOptions, run_experiment

    homes = {name: StatePaths(tmp_path / f"home-{name}") for name in ("a", "b")}
    start = threading.Barrier(2, timeout=30)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def go(name: str) -> None:
        target = tmp_path / name / "target"
        target.mkdir(parents=True)
        f = tmp_path / name / "exp.yaml"
        f.write_text(EXPERIMENT.format(title=name, target=target, stubborn="false"))
        reg = DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)
        try:
            exp = load_experiment(str(f), registry=reg)
            start.wait()
            results[name], _ = run_experiment(
                exp,
                registry=reg,
                options=RunOptions(run_dir=tmp_path / name / "run", handle_signals=False, state=env_state()),
                bus=EventBus(),
                run_id=f"session-{name}",
                session=SessionOptions(state=homes[name]),
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in homes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    for name, state in homes.items():
        assert results[name].verdict is Verdict.PASSED, results[name].reason
        ledger = "".join(p.read_text() for p in state.ledger.rglob("*") if p.is_file())
        assert f"session-{name}" in ledger  # this run's fault was recorded in its own home
        other = "b" if name == "a" else "a"
        assert f"session-{other}" not in ledger
    assert not any(chaoslab_home.iterdir()), "the environment's home must stay untouched"
