"""``chaoslab export cronjob SCENARIO``: run a scenario from a Kubernetes CronJob.

Writes three documents: a ConfigMap holding the scenario and its experiment files, a
PersistentVolumeClaim for chaoslab's state, and a ``batch/v1`` CronJob that runs
``chaoslab schedule run --once`` on the scenario's cron schedule (in its time zone,
``spec.timeZone``) with:

- ``concurrencyPolicy`` from the scenario's ``concurrency`` (``forbid`` → ``Forbid``, the
  default: a slot never overlaps the previous one; ``allow`` → ``Allow``; ``replace`` →
  ``Replace``: Kubernetes stops the running pod, whose run reverts on SIGTERM within
  ``terminationGracePeriodSeconds``), enforced a second time by the store (a slot of a
  busy ``forbid`` scenario is recorded skipped "busy"), and ``startingDeadlineSeconds``
  = the misfire grace (``skip``: the on-time tolerance);
- durable state: ``CHAOSLAB_HOME`` (``/var/lib/chaoslab``: the ledger of injected
  faults, locks, run directories) on the PersistentVolumeClaim, not an ``emptyDir``. A
  pod that dies mid-run (OOM-killed, node lost) leaves its claim in the store and its
  faults in the ledger on the volume; the next pod adopts the claim once the dead
  scheduler's lease has run out, reverts that run's faults from the ledger
  (``recover``, forced for that run: its pod is gone) and records the slot. The claim is
  ``ReadWriteOnce``, which fits ``Forbid``/``Replace`` (one pod at a time); with
  ``allow`` use a ReadWriteMany storage class (``--storage-class``), or ``--state-claim``
  to mount a claim you manage;
- the ConfigMap mounted read-only at ``/etc/chaoslab/scenario`` (experiment paths are
  rewritten to files beside the scenario: ConfigMap keys cannot hold directories);
- ``CHAOSLAB_STORE`` from a Secret (key ``url``, e.g. ``postgresql://…``): every pod
  shares one PostgreSQL store, so a slot still runs exactly once when Kubernetes starts
  a job twice (it may, by its own documentation) or a human runs the same scenario;
- ``restartPolicy: Never`` and ``backoffLimit: 0``: a failed run is recorded in the
  store, not retried by Kubernetes behind the scheduler's back.

Only cron triggers (and intervals that are a whole number of minutes dividing an hour
or a day) can be expressed as a CronJob schedule; jitter is applied inside the pod (the
pod waits until the slot's jittered time). Daylight saving time: the pod decides which
slot is due by chaoslab's rules (``triggers``), so a pod Kubernetes starts for a repeated
wall time finds nothing due, and a slot Kubernetes did not start (a wall time in the
spring gap) is recorded missed by the next pod.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from chaoslab.scheduler.monkey import MonkeyTrigger
from chaoslab.scheduler.scenario import Scenario
from chaoslab.scheduler.triggers import CronTrigger, IntervalTrigger

MOUNT = "/etc/chaoslab/scenario"
STATE = "/var/lib/chaoslab"
ON_TIME_S = 60
STOP_GRACE_S = 60  # `schedule run`'s stop grace: a SIGTERMed run's time to revert
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
POLICIES = {"forbid": "Forbid", "allow": "Allow", "replace": "Replace"}


class ExportError(ValueError):
    """The scenario cannot be expressed as a CronJob."""


def cron_schedule(scenario: Scenario) -> str:
    t = scenario.trigger
    if isinstance(t, CronTrigger):
        return t.expression
    if isinstance(t, IntervalTrigger):
        if t.anchor.timestamp() % 60 == 0 and t.every_s % 60 == 0:
            minutes = t.every_s // 60
            if minutes < 60 and 60 % minutes == 0:
                return f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
            if minutes % 60 == 0 and 24 % (minutes // 60) == 0:
                return f"0 */{minutes // 60} * * *" if minutes > 60 else "0 * * * *"
        raise ExportError(
            f"interval {t.every_s}s cannot be written as a cron schedule;"
            f" use a cron trigger to export {scenario.name}"
        )
    if isinstance(t, MonkeyTrigger):
        raise ExportError("a monkey scenario needs the daemon (`chaoslab schedule daemon`), not a CronJob")
    raise ExportError(f"cannot export trigger {t.describe()}")


def _library_refs(experiment: Path) -> list[tuple[str, str, str]]:
    """(kind, name, file text) of every library entry the experiment refers to (``ref:``)."""
    from chaoslab.errors import InvalidInput
    from chaoslab.model.library import find
    from chaoslab.model.reader import load_document, read_text

    try:
        data = load_document(experiment).data
    except InvalidInput:
        return []
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("ref"), str):
                names.add(node["ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    out = []
    for name in sorted(names):
        entry = find(name, str(experiment))
        if entry is not None:
            kind = Path(entry.file).parent.name
            out.append(
                (
                    kind if kind in ("probes", "actions") else "probes",
                    name,
                    read_text(entry.file, what="library file"),
                )
            )
    return out


def _key(name: str) -> str:
    return re.sub(r"[^-._a-zA-Z0-9]", "_", name)


def manifests(
    scenario: Scenario,
    *,
    image: str = "chaoslab:latest",
    namespace: str | None = None,
    secret: str = "chaoslab-store",
    secret_key: str = "url",
    name: str | None = None,
    state_size: str = "1Gi",
    storage_class: str | None = None,
    state_claim: str | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap, the state PersistentVolumeClaim (unless ``state_claim`` names an
    existing one) and the CronJob for ``scenario``."""
    schedule = cron_schedule(scenario)
    if not QUANTITY.fullmatch(state_size):
        raise ExportError(f"--state-size {state_size!r} is not a Kubernetes quantity (e.g. 1Gi, 500Mi)")
    base = name or f"chaoslab-{scenario.name}"
    base = re.sub(r"[^a-z0-9-]", "-", base.lower())[:52].strip("-")  # CronJob names: ≤ 52 chars
    from chaoslab.model.reader import load_document, plain, read_text

    raw = plain(load_document(scenario.path, what="scenario").data)
    files: dict[str, str] = {}
    steps = raw.get("steps") or []
    for i, (step, parsed) in enumerate(zip(steps, scenario.steps, strict=True)):
        key = _key(f"step-{i}-{parsed.experiment.name}")
        files[key] = read_text(parsed.experiment, what="experiment")
        if isinstance(step, dict):
            step["experiment"] = key
        else:
            steps[i] = {"experiment": key}
    for i, gate in enumerate(raw.get("gates") or []):
        if isinstance(gate, dict) and gate.get("type") == "error-budget":
            slo = gate.get("slo")
            names = [slo] if isinstance(slo, str) else list(slo or [])
            keys = []
            for j, rel in enumerate(names):
                key = _key(f"gate-{i}-{j}-{rel.rsplit('/', 1)[-1]}")
                files[key] = read_text(scenario.path.parent / rel, what="SLO file")
                keys.append(key)
            gate["slo"] = keys
    files["scenario.yaml"] = yaml.safe_dump(raw, sort_keys=False)
    # Paths inside the mount: most keys sit at the top; library entries (``ref:``) go to
    # probes/ and actions/ beside the experiments, where the loader looks for them.
    paths = {key: key for key in files}
    for parsed in scenario.steps:
        for kind, entry_name, text in _library_refs(parsed.experiment):
            key = _key(f"lib-{kind}-{entry_name}.yaml")
            files[key] = text
            paths[key] = f"{kind}/{entry_name}.yaml"
    meta: dict[str, Any] = {
        "name": base,
        "labels": {"app.kubernetes.io/name": "chaoslab", "chaoslab.io/scenario": scenario.name},
    }
    if namespace:
        meta["namespace"] = namespace
    deadline = int(scenario.misfire.grace_s) if scenario.misfire.policy == "run-once" else ON_TIME_S
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(meta), "data": files}
    claim = state_claim or f"{base}-state"
    container = {
        "name": "chaoslab",
        "image": image,
        "command": ["chaoslab"],
        "args": ["schedule", "run", "--once", "--scenarios", f"{MOUNT}/scenario.yaml"],
        "env": [
            {"name": "CHAOSLAB_STORE", "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}},
            {"name": "CHAOSLAB_HOME", "value": STATE},
        ],
        "volumeMounts": [
            {"name": "scenario", "mountPath": MOUNT, "readOnly": True},
            {"name": "state", "mountPath": STATE},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": dict(meta),
        "spec": {
            "schedule": schedule,
            "timeZone": scenario.tz.key,
            "concurrencyPolicy": POLICIES[scenario.concurrency],
            "startingDeadlineSeconds": max(10, deadline),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(meta["labels"])},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": dict(meta["labels"])},
                        "spec": {
                            "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": STOP_GRACE_S + 30,
                            "containers": [container],
                            "volumes": [
                                {
                                    "name": "scenario",
                                    "configMap": {
                                        "name": base,
                                        "items": [{"key": k, "path": p} for k, p in sorted(paths.items())],
                                    },
                                },
                                {"name": "state", "persistentVolumeClaim": {"claimName": claim}},
                            ],
                        },
                    },
                },
            },
        },
    }
    if state_claim:
        return [configmap, cronjob]
    pvc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {**meta, "name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": state_size}}},
    }
    if storage_class:
        pvc["spec"]["storageClassName"] = storage_class
    return [configmap, pvc, cronjob]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the mounted files) as literal blocks, so the manifest reads well."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, explicit_start=True, allow_unicode=True, width=100
    )
