"""Chaos Toolkit controls in the engine: chaostoolkit-lib's selection rule, one run's
controls never seen by another run in the same process, validation with field paths, and
an interrupting control ending a run whose fault is still reverted."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from chaoslib import control as ctk_control
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.controls import context_controls, written
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.engine.signals import signal_name
from chaoslab.errors import InvalidInput
from chaoslab.verdict import Verdict
from tests.fakedriver import FakeDriver
from tests.statepaths import env_state

NAMES = st.sampled_from(["a", "b", "c"])


@st.composite
def control(draw: st.DrawFn, *, allow_ref: bool) -> dict[str, Any]:
    if allow_ref and draw(st.booleans()):
        return {"ref": draw(NAMES)}
    c: dict[str, Any] = {"name": draw(NAMES), "provider": {"type": "python", "module": "m"}}
    automatic = draw(st.sampled_from([None, True, False]))
    if automatic is not None:
        c["automatic"] = automatic
    return c


@settings(max_examples=200, deadline=None)
@given(
    level=st.sampled_from(["experiment", "hypothesis", "method", "rollback", "activity"]),
    top=st.lists(control(allow_ref=False), max_size=3),
    local=st.lists(control(allow_ref=True), max_size=3),
)
def test_the_controls_of_a_level_are_chaostoolkit_libs(
    level: str, top: list[dict[str, Any]], local: list[dict[str, Any]]
) -> None:
    assert ctk_control.get_global_controls() == []  # chaoslab never fills chaoslib's globals
    experiment: dict[str, Any] = {"title": "t", "controls": top} if top else {"title": "t"}
    context: dict[str, Any] = {"controls": local} if local else {}
    if level in ("experiment", "method", "rollback"):
        context = experiment
    expected = ctk_control.get_context_controls(level, copy.deepcopy(experiment), copy.deepcopy(context))
    assert context_controls(level, experiment, context) == expected


def test_written_reports_what_a_hook_added_or_changed() -> None:
    assert written({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": 3, "c": 4}
    assert written([{"x": 1}, {"y": 2}], [{"x": 1}, {"y": 2, "z": 3}]) == {"1": {"z": 3}}
    assert written(None, None) == {}


def registry() -> DriverRegistry:
    return DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)


def run(tmp: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path, list[dict[str, Any]]]:
    target = tmp / "target"
    target.mkdir(parents=True, exist_ok=True)
    state = tmp / "state"
    monkeypatch.setenv("CTK_STATE", str(state))
    f = tmp / "exp.yaml"
    f.write_text(textwrap.dedent(body).replace("@TARGET@", str(target)))
    reg = registry()
    exp = load_experiment(str(f), registry=reg)
    result = Runner(
        exp, registry=reg, options=RunOptions(run_dir=tmp / "run", handle_signals=False, state=env_state())
    ).run()
    trace_file = state / "trace.ndjson"
    trace = [json.loads(line) for line in trace_file.read_text().splitlines()] if trace_file.exists() else []
    return result, target, trace


CONTROLLED = """
title: t
description: d
controls:
  - name: tracer
    provider: {type: python, module: tests.e2e.ctkcontrols, arguments: ARGS}
method:
  - {do: fake.touch, target: "@TARGET@", duration: 0.2}
  - {type: action, name: next, provider: {type: python, module: tests.e2e.ctkfuncs, func: echo, arguments: {value: 1}}}
"""


def test_two_runs_in_one_process_share_no_controls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _, trace1 = run(tmp_path / "1", CONTROLLED.replace("ARGS", "{tag: one}"), monkeypatch)
    second, _, trace2 = run(tmp_path / "2", CONTROLLED.replace("ARGS", "{tag: two}"), monkeypatch)
    assert first.verdict is second.verdict is Verdict.PASSED
    assert {e["control"] for e in trace1 if "control" in e} == {"one"}
    assert {e["control"] for e in trace2 if "control" in e} == {"two"}
    # what the first run's before_experiment_control stored is not in the second run's context
    assert "h22_shared" not in json.dumps(second.journal["experiment"])


def test_an_interrupting_control_ends_the_run_and_the_fault_is_still_reverted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = CONTROLLED.replace("ARGS", '{interrupt_at: "before_activity_control:next"}')
    result, target, trace = run(tmp_path, body, monkeypatch)
    assert result.verdict is Verdict.INTERRUPTED
    assert "before_activity_control" in result.reason and "control 'tracer'" in result.reason
    assert list(target.iterdir()) == [], "the fault must be reverted"
    assert result.journal["status"] == "interrupted"
    faults = result.journal["chaoslab"]["faults"]
    assert [f["clean"] for f in faults if f["kind"] == "clean-checked"] == [True]
    assert "after_experiment_control" in [e["event"] for e in trace]


def test_an_invalid_control_is_invalid_input_at_its_field_path(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        textwrap.dedent("""
        title: t
        description: d
        controls:
          - {name: ok, provider: {type: python, module: tests.e2e.ctkcontrols}}
          - {name: bad-scope, scope: sometimes, provider: {type: python, module: tests.e2e.ctkcontrols}}
        steady-state-hypothesis:
          title: h
          controls: [{name: refused, provider: {type: python, module: tests.e2e.ctkcontrols,
                      arguments: {invalid: true}}}]
          probes: []
        method:
          - {type: action, name: a, provider: {type: process, path: "true"}, controls: [{ref: nowhere}]}
        rollbacks:
          - {type: action, name: r, provider: {type: process, path: "true"},
             controls: [{name: gone, provider: {type: python, module: no_such_module_zz}}]}
        """)
    )
    with pytest.raises(InvalidInput) as info:
        load_experiment(str(f), registry=registry())
    paths = sorted(p.path for p in info.value.problems)
    assert paths == [
        "controls[1].scope",
        "method[0].controls[0].ref",
        "rollbacks[0].controls[0].provider.module",
        "steady-state-hypothesis.controls[0]",
    ]
    assert all(p.file == str(f) for p in info.value.problems)
    refused = next(p for p in info.value.problems if p.path == "steady-state-hypothesis.controls[0]")
    assert "declared invalid on purpose" in refused.message


def test_sigusr1_is_a_halt_only_when_halt_was_pressed() -> None:
    import signal

    assert signal_name(signal.SIGUSR1, lambda: True) == "HALT"
    assert signal_name(signal.SIGUSR1, lambda: False) == "SIGUSR1"
    assert signal_name(signal.SIGUSR2, lambda: True) == "SIGUSR2"
    assert signal_name(signal.SIGUSR1, None) == "HALT"  # an embedder without halt files


def test_controls_wrap_the_hypothesis_while_it_runs_during_the_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = """
    title: t
    description: d
    runtime: {hypothesis: {strategy: continuously, frequency: 0.05}}
    controls:
      - name: tracer
        provider: {type: python, module: tests.e2e.ctkcontrols, arguments: {tag: during}}
    steady-state-hypothesis:
      title: h
      probes:
        - {type: probe, name: p, tolerance: true, provider: {type: python, module: tests.e2e.ctkfuncs, func: "yes"}}
    method:
      - {do: fake.touch, target: "@TARGET@", duration: 0.4}
    """
    result, target, trace = run(tmp_path, body, monkeypatch)
    assert result.verdict is Verdict.PASSED
    assert list(target.iterdir()) == []
    hypothesis = [e for e in trace if e["event"] == "after_hypothesis_control"]
    # before and after the method, and at least twice while the fault was held
    assert len(hypothesis) >= 4
    assert all(e["state"] == {"met": True, "probes": 1} and e["shared"] for e in hypothesis)
    probes = [e for e in trace if e["event"] == "after_activity_control" and e["name"] == "p"]
    assert len(probes) == len(hypothesis)
    assert len(result.journal["steady_states"]["during"]) == len(hypothesis) - 2
