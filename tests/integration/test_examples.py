"""Every shipped example for docker, ssh and kubernetes runs green against the real
services the suite starts (dockerd, an sshd fleet, the Kubernetes emulator), through the
CLI as a user runs it, and ``plan --seed`` names what ``run --seed`` then hits."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "experiments"
pytestmark = pytest.mark.timeout(240)


def chaoslab(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def plan_then_run(example: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``plan --seed 11`` then ``run --seed 11``: the run passes and hits what the plan named."""
    path = str(EXAMPLES / example)
    assert chaoslab("validate", path, cwd=tmp_path, env=env).returncode == 0
    planned = chaoslab("plan", "--seed", "11", "--output", "json", path, cwd=tmp_path, env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    picked = [step.get("picked") for step in json.loads(planned.stdout)["method"] if "driver" in step]
    run = chaoslab("run", "--seed", "11", "--run-dir", str(tmp_path / "run"), path, cwd=tmp_path, env=env)
    journal = json.loads(next((tmp_path / "run").rglob("journal.json")).read_text())
    assert run.returncode == 0, run.stdout + run.stderr
    assert journal["chaoslab"]["verdict"] == "passed"
    injected = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
    assert [e["picked"] for e in injected] == picked  # the run hit what the plan named
    for names in picked:
        assert names and all(n in run.stdout for n in names)  # and the console said so
    return journal


# --- docker ----------------------------------------------------------------------------------

HAVE_DOCKER = importlib.util.find_spec("docker") is not None


@pytest.fixture(scope="module")
def docker_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.dockerlab import docker_lab

    with docker_lab(tmp_path_factory.mktemp("dockerd") / "dockerd.log") as lab:
        yield lab


def test_docker_example_kills_one_container_and_docker_restarts_it(
    docker_session: Any, tmp_path: Path
) -> None:
    require(HAVE_DOCKER and bool(docker_session.image), f"Docker Engine: {docker_session.problem}")
    try:
        for i in range(3):
            docker_session.run(
                name=f"chaoslab-example-web-{docker_session.session}-{i}",
                command=["sleep", "3600"],
                labels={"example": "chaoslab-web"},
                restart="always",
            )
        journal = plan_then_run("docker-kill-web.yaml", tmp_path)
        (fault,) = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
        assert fault["driver"] == "docker" and fault["operation"] == "kill"
        assert len(fault["picked"]) == 1  # one target by default, as on every platform
        restarts = {c.name: c.attrs["RestartCount"] for c in docker_session.containers()}
        assert sorted(restarts.values()) == [0, 0, 1]
    finally:
        docker_session.cleanup()


# --- kubernetes --------------------------------------------------------------------------------

HAVE_K8S = all(importlib.util.find_spec(m) is not None for m in ("kmock", "kubernetes"))


def test_kubernetes_example_deletes_one_pod_and_waits_for_its_replacement(tmp_path: Path) -> None:
    require(HAVE_K8S, "kmock and kubernetes: pip install kmock 'chaoslab[kubernetes]'")
    from tests.integration.k8semu import CONTEXT, K8sEmulator, ReplicaController

    web = {"app": "web"}
    (tmp_path / "emu").mkdir()
    with K8sEmulator(tmp_path / "emu") as emu:
        for i in range(3):
            emu.create_pod("shop", f"web-{i}", web)
        # the example reads $KUBECONFIG's current context, as a user's cluster would be
        config = yaml.safe_load(emu.kubeconfig.read_text())
        config["current-context"] = CONTEXT
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        with ReplicaController(emu, "shop", web, replicas=3, delay_s=0.5, max_s=180) as controller:
            journal = plan_then_run("kubernetes-delete-pod.yaml", tmp_path, {"KUBECONFIG": str(kubeconfig)})
        (fault,) = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
        assert (fault["driver"], fault["operation"]) == ("kubernetes", "delete_pods")
        (victim,) = fault["picked"]
        assert victim.removeprefix("pod shop/") not in emu.pods("shop")  # deleted ...
        assert len(controller.created) == 1 and len(emu.pods("shop")) == 3  # ... and replaced


# --- ssh -----------------------------------------------------------------------------------------


def test_ssh_example_stresses_one_eu_host_of_the_fleet(tmp_path: Path) -> None:
    from tests.integration.sshfleet import fleet, sshd_available

    require(sshd_available(), "OpenSSH server (apt-get install openssh-server) and root")
    with fleet(tmp_path / "fleet", 3) as f:
        inventory = f.inventory(tmp_path / "inventory.yaml", tags={"h0": ["eu"], "h1": ["eu"], "h2": ["us"]})
        journal = plan_then_run("ssh-cpu-stress.yaml", tmp_path, {"CHAOSLAB_SSH_INVENTORY": str(inventory)})
    (fault,) = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
    assert (fault["driver"], fault["operation"]) == ("ssh", "stress_cpu")
    (host,) = fault["picked"]  # one host by default, as on every platform
    assert host in ("host h0", "host h1")
    assert fault["record"]["args"]["pick"] == 1


def test_docker_name_globs_and_max_on_a_real_engine(docker_session: Any, tmp_path: Path) -> None:
    """A name pattern picks among containers; max refuses before anything is touched."""
    require(HAVE_DOCKER and bool(docker_session.image), f"Docker Engine: {docker_session.problem}")
    from chaoslab.drivers import vocabulary
    from chaoslab.drivers.base import DriverContext, with_defaults
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.errors import TargetNotFound, UnsafeTarget

    registry = DriverRegistry()

    def prepare(target: str, args: dict[str, Any]) -> Any:
        resolved, problems = vocabulary.resolve(
            "suspend", target, args, driver_op=lambda d, o: registry.get(d).operation(o)
        )
        assert resolved is not None, problems
        driver = registry.get(resolved.driver)
        op = driver.operation(resolved.driver_operation)
        ctx = DriverContext(run_id="glob", state_dir=tmp_path / "state", seed=3, lab_dir=env_state().lab)
        return driver.prepare(ctx, op, with_defaults(op, resolved.args), resolved.target, 10)

    prefix = f"chaoslab-glob-{docker_session.session}"
    try:
        for i in range(3):
            docker_session.run(name=f"{prefix}-{i}", command=["sleep", "3600"])
        docker_session.run(name=f"{prefix}-other", command=["sleep", "3600"])
        record = prepare(f"docker:{prefix}-[0-9]", {"all": True})
        assert sorted(c["name"] for c in record.data["containers"]) == [f"{prefix}-{i}" for i in range(3)]
        assert len(prepare(f"docker:name={prefix}-*", {}).data["containers"]) == 1  # one by default
        with pytest.raises(UnsafeTarget, match="matches 4 targets, more than max 3"):
            prepare(f"docker:{prefix}-*", {"max": 3})
        with pytest.raises(TargetNotFound, match="count 5 asked, only 4 match"):
            prepare(f"docker:{prefix}-*", {"count": 5})
        assert all(not c.attrs["State"]["Paused"] for c in docker_session.containers())  # untouched
    finally:
        docker_session.cleanup()


# --- the Chaos Monkey's kill on other platforms, run for real --------------------------------------


def _monkey_run(victim: str, tmp_path: Path, args: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """The experiment the monkey's scheduler runs for one slot, run as it runs it."""
    from datetime import UTC, datetime

    from chaoslab.scheduler.monkey import MonkeySpec, MonkeyTarget, kill_experiment

    spec = MonkeySpec(
        targets=(MonkeyTarget(target=victim, labels={"chaos": "opt-in"}),),
        select={"chaos": "opt-in"},
        mean_s=600,
        min_gap_s=60,
        heal_timeout_s=30.0,
        args=args,
    )
    exp = tmp_path / "monkey-kill.json"
    exp.write_text(json.dumps(kill_experiment(spec, "monkey", victim, datetime(2026, 12, 7, 10, tzinfo=UTC))))
    run = chaoslab("run", "--run-dir", str(tmp_path / "monkey-run"), str(exp), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    journal = json.loads(next((tmp_path / "monkey-run").rglob("journal.json")).read_text())
    (fault,) = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
    return fault


def test_the_monkey_kills_a_docker_container(docker_session: Any, tmp_path: Path) -> None:
    require(HAVE_DOCKER and bool(docker_session.image), f"Docker Engine: {docker_session.problem}")
    name = f"chaoslab-monkey-{docker_session.session}"
    try:
        docker_session.run(name=name, command=["sleep", "3600"], restart="always")
        fault = _monkey_run(f"docker:{name}", tmp_path, {})
        assert (fault["driver"], fault["operation"], fault["picked"]) == (
            "docker",
            "kill",
            [f"container {name}"],
        )
        (container,) = docker_session.containers()
        assert container.attrs["RestartCount"] == 1 and container.attrs["State"]["Running"]
    finally:
        docker_session.cleanup()


def test_the_monkey_deletes_a_kubernetes_pod(tmp_path: Path) -> None:
    require(HAVE_K8S, "kmock and kubernetes: pip install kmock 'chaoslab[kubernetes]'")
    from tests.integration.k8semu import K8sEmulator, ReplicaController

    (tmp_path / "emu").mkdir()
    with K8sEmulator(tmp_path / "emu") as emu:
        for i in range(2):
            emu.create_pod("shop", f"web-{i}", {"app": "web"})
        with ReplicaController(emu, "shop", {"app": "web"}, replicas=2, delay_s=0.3, max_s=120) as controller:
            fault = _monkey_run("pod:shop/app=web", tmp_path, emu.conn_args())
        assert (fault["driver"], fault["operation"]) == ("kubernetes", "delete_pods")
        assert len(fault["picked"]) == 1 and len(controller.created) == 1
