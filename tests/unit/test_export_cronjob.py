"""``chaoslab export cronjob``: the manifests validate against the Kubernetes API schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chaoslab.scheduler.export import ExportError, cron_schedule, manifests
from chaoslab.scheduler.scenario import load_scenario, load_scenarios

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"  # CronJob spec.timeZone is GA since 1.27


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_cli_writes_a_configmap_and_a_cronjob_that_validate_strictly(tmp_path: Path) -> None:
    out = tmp_path / "cronjob.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", "export", "cronjob", "scenarios/lab-weekday-gameday.yaml",
         "--image", "registry.example/chaoslab:0.1.0", "--namespace", "chaos", "--out-file", str(out)],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    docs = _docs(out.read_text())
    assert [d["kind"] for d in docs] == ["ConfigMap", "PersistentVolumeClaim", "CronJob"]
    for doc in docs:
        # strict: unknown fields are errors too (a typo'd field would be dropped silently by the API).
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    configmap, pvc, cronjob = docs
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["schedule"] == "30 10 * * mon-fri" and spec["timeZone"] == "Europe/Berlin"
    assert spec["startingDeadlineSeconds"] == 1800  # the misfire grace
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/chaoslab:0.1.0"
    assert container["args"] == [
        "schedule",
        "run",
        "--once",
        "--scenarios",
        "/etc/chaoslab/scenario/scenario.yaml",
    ]
    store_env = next(e for e in container["env"] if e["name"] == "CHAOSLAB_STORE")
    assert store_env["valueFrom"]["secretKeyRef"] == {"name": "chaoslab-store", "key": "url"}
    mounted = next(v for v in pod["volumes"] if v["name"] == "scenario")
    assert mounted["configMap"]["name"] == configmap["metadata"]["name"] == cronjob["metadata"]["name"]
    assert pod["restartPolicy"] == "Never" and spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    # CHAOSLAB_HOME (ledger, locks, run directories) lives on the claim, not in the pod.
    home = next(e["value"] for e in container["env"] if e["name"] == "CHAOSLAB_HOME")
    state_mount = next(m for m in container["volumeMounts"] if m["name"] == "state")
    assert state_mount["mountPath"] == home == "/var/lib/chaoslab"
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    assert "emptyDir" not in json.dumps(pod)
    assert pvc["metadata"]["namespace"] == "chaos"
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    assert pod["terminationGracePeriodSeconds"] >= 60  # a replaced/stopped pod's run has time to revert
    # The mounted scenario is valid on its own, with its experiments beside it.
    mount = tmp_path / "mount"
    mount.mkdir()
    items = {i["key"]: i["path"] for i in mounted["configMap"]["items"]}
    assert set(items) == set(configmap["data"])
    assert items["lib-probes-lab-replicas-up.yaml"] == "probes/lab-replicas-up.yaml"  # ref: in the experiment
    for key, text in configmap["data"].items():
        (mount / items[key]).parent.mkdir(exist_ok=True)
        (mount / items[key]).write_text(text)
    mounted_sc = load_scenario(mount / "scenario.yaml")
    assert [s.experiment.parent for s in mounted_sc.steps] == [mount, mount]
    assert (mount / mounted_sc.steps[0].experiment.name).read_text() == (
        REPO / "experiments" / "lab-kill-replica.yaml"
    ).read_text()
    # ...and its experiments load there, library references included.
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.compile import load_experiment

    cwd = os.getcwd()
    os.chdir(tmp_path)  # not the repository: only the mount may satisfy `ref:`
    try:
        for step in mounted_sc.steps:
            load_experiment(str(step.experiment), registry=DriverRegistry())
    finally:
        os.chdir(cwd)


def test_a_broken_manifest_would_be_caught_by_the_schema() -> None:
    sc = next(s for s in load_scenarios([REPO / "scenarios"]) if s.name == "lab-weekday-gameday")
    cronjob = manifests(sc)[-1]
    cronjob["spec"]["concurrencyPolicy"] = 7  # wrong type
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)


def test_interval_and_monkey_triggers(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("title: t\ndescription: d\nmethod: []\n")
    (tmp_path / "a.yaml").write_text("name: a\ntrigger: {interval: 15m}\nsteps: [e.yaml]\n")
    (tmp_path / "b.yaml").write_text("name: b\ntrigger: {interval: 7m}\nsteps: [e.yaml]\n")
    (tmp_path / "c.yaml").write_text("name: c\ntrigger: {interval: 6h}\nsteps: [e.yaml]\n")
    assert cron_schedule(load_scenario(tmp_path / "a.yaml")) == "*/15 * * * *"
    assert cron_schedule(load_scenario(tmp_path / "c.yaml")) == "0 */6 * * *"
    with pytest.raises(ExportError, match="cannot be written as a cron schedule"):
        cron_schedule(load_scenario(tmp_path / "b.yaml"))
    monkey = next(s for s in load_scenarios([REPO / "scenarios"]) if s.name == "lab-monkey")
    with pytest.raises(ExportError, match="daemon"):
        manifests(monkey)


@pytest.mark.parametrize(
    ("policy", "expected"), [("forbid", "Forbid"), ("allow", "Allow"), ("replace", "Replace")]
)
def test_the_concurrency_policy_and_the_state_claim_are_exported(
    tmp_path: Path, policy: str, expected: str
) -> None:
    (tmp_path / "e.yaml").write_text("title: t\ndescription: d\nmethod: []\n")
    (tmp_path / "s.yaml").write_text(
        f"name: s\ntrigger: {{cron: '*/5 * * * *'}}\nconcurrency: {policy}\nsteps: [e.yaml]\n"
    )
    sc = load_scenario(tmp_path / "s.yaml")
    docs = manifests(sc, storage_class="fast-rwx", state_size="5Gi")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pvc, cronjob = docs[1], docs[2]
    assert cronjob["spec"]["concurrencyPolicy"] == expected
    assert pvc["spec"]["storageClassName"] == "fast-rwx"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # An existing claim: mounted, not written.
    configmap, cronjob = manifests(sc, state_claim="team-chaos-state")
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": "team-chaos-state"}} in pod["volumes"]
    with pytest.raises(ExportError, match="not a Kubernetes quantity"):
        manifests(sc, state_size="lots")
