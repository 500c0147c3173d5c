"""The Chaos Monkey uses any kill-like fault of the vocabulary on any platform."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import compile_document
from chaoslab.errors import InvalidInput
from chaoslab.model.reader import load_document
from chaoslab.scheduler.monkey import kill_experiment, leashed_line
from chaoslab.scheduler.scenario import load_scenario

SLOT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def _scenario(tmp_path: Path, monkey: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nmonkey:\n"
        + monkey
        + "  select: {chaos: opt-in}\n  mean_time_between_kills: 10m\n  min_gap: 1m\n"
    )
    return path


@pytest.mark.parametrize(
    ("fault", "victim", "driver", "operation", "probe"),
    [
        ("kill", "pattern:worker", "process", "kill", "process.count"),
        ("kill", "docker:web-1", "docker", "kill", None),
        ("restart", "docker:label=app=web", "docker", "restart", None),
        ("kill", "ssh:eu-1", "ssh", "kill", None),
        ("kill", "pod:shop/app=web", "kubernetes", "delete_pods", "kubernetes.ready_pods"),
    ],
)
def test_each_platforms_kill_compiles_to_its_driver(
    tmp_path: Path, fault: str, victim: str, driver: str, operation: str, probe: str | None
) -> None:
    extra = {
        "kubernetes": "  with: {kubeconfig: /nonexistent/kubeconfig}\n",
        "ssh": "  with: {pattern: worker, inventory: /nonexistent/inventory.yaml}\n",  # which process
    }.get(driver, "")
    path = _scenario(
        tmp_path,
        f"  fault: {fault}\n  signal: SIGTERM\n{extra}"
        f'  targets: [{{target: "{victim}", labels: {{chaos: opt-in}}}}]\n',
    )
    sc = load_scenario(path)
    assert sc.monkey is not None and sc.monkey.fault == fault
    doc = kill_experiment(sc.monkey, sc.name, victim, SLOT)
    exp_path = tmp_path / "kill.json"
    exp_path.write_text(json.dumps(doc))
    exp = compile_document(load_document(str(exp_path)), registry=DriverRegistry())
    (step,) = exp.method
    assert (step.driver, step.operation) == (driver, operation)
    if driver == "kubernetes":
        assert "signal" not in step.args  # a pod is deleted, not signalled
        assert step.args["recover_timeout"] == "30s"
    elif driver == "ssh":
        assert step.args["signal"] == "TERM" and step.args["heal_timeout"] == "30s"
    elif fault == "kill":
        assert step.args["signal"] == "SIGTERM"
    probes = exp.hypothesis.probes if exp.hypothesis else ()
    assert [f"{p.driver}.{p.operation}" for p in probes] == ([probe] if probe else [])
    assert fault in leashed_line(sc.monkey, victim) or "SIGTERM" in leashed_line(sc.monkey, victim)


def test_a_fault_that_is_not_kill_like_or_not_on_the_platform_is_refused(tmp_path: Path) -> None:
    path = _scenario(
        tmp_path, '  fault: stress.cpu\n  targets: [{target: "pattern:x", labels: {chaos: opt-in}}]\n'
    )
    with pytest.raises(InvalidInput) as info:
        load_scenario(path)
    assert any(p.path == "monkey.fault" and "kill-like" in p.message for p in info.value.problems)
    path = _scenario(
        tmp_path, '  fault: restart\n  targets: [{target: "pattern:x", labels: {chaos: opt-in}}]\n'
    )
    with pytest.raises(InvalidInput) as info:
        load_scenario(path)
    (problem,) = info.value.problems
    assert problem.path == "monkey.targets[0].target" and "docker (docker:)" in str(problem.hint)
