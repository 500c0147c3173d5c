"""``chaoslab export cronjob SCENARIO``: run a scenario from a Kubernetes CronJob.

Writes two documents: a ConfigMap holding the scenario and its experiment files, and a
``batch/v1`` CronJob that runs ``chaoslab schedule run --once`` on the scenario's cron
schedule (in its time zone, ``spec.timeZone``) with:

- ``concurrencyPolicy: Forbid`` (a slot never overlaps the previous one) and
  ``startingDeadlineSeconds`` = the misfire grace (``skip``: the on-time tolerance);
- the ConfigMap mounted read-only at ``/etc/chaoslab/scenario`` (experiment paths are
  rewritten to files beside the scenario: ConfigMap keys cannot hold directories);
- ``CHAOSLAB_STORE`` from a Secret (key ``url``, e.g. ``postgresql://…``): every pod
  shares one PostgreSQL store, so a slot still runs exactly once when Kubernetes starts
  a job twice (it may, by its own documentation) or a human runs the same scenario;
- ``restartPolicy: Never`` and ``backoffLimit: 0``: a failed run is recorded in the
  store, not retried by Kubernetes behind the scheduler's back.

Only cron triggers (and intervals that are a whole number of minutes dividing an hour
or a day) can be expressed as a CronJob schedule; jitter is applied inside the pod (the
pod waits until the slot's jittered time).
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
ON_TIME_S = 60


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
) -> list[dict[str, Any]]:
    """The ConfigMap and the CronJob for ``scenario``."""
    schedule = cron_schedule(scenario)
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
    container = {
        "name": "chaoslab",
        "image": image,
        "command": ["chaoslab"],
        "args": ["schedule", "run", "--once", "--scenarios", f"{MOUNT}/scenario.yaml"],
        "env": [
            {"name": "CHAOSLAB_STORE", "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}},
            {"name": "CHAOSLAB_HOME", "value": "/var/lib/chaoslab"},
        ],
        "volumeMounts": [
            {"name": "scenario", "mountPath": MOUNT, "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/chaoslab"},
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
            "concurrencyPolicy": "Forbid",
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
                            "containers": [container],
                            "volumes": [
                                {
                                    "name": "scenario",
                                    "configMap": {
                                        "name": base,
                                        "items": [{"key": k, "path": p} for k, p in sorted(paths.items())],
                                    },
                                },
                                {"name": "state", "emptyDir": {}},
                            ],
                        },
                    },
                },
            },
        },
    }
    return [configmap, cronjob]


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
