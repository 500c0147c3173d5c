"""Contract cases of the kubernetes driver, against kmock's Kubernetes emulator.

No real cluster runs on the test machine: ``tests/integration/k8semu`` serves kmock's
stateful emulator on 127.0.0.1 and writes a kubeconfig for it, so the driver and these
observers both go through the official ``kubernetes`` client and a real kubeconfig.
"Visible on the target" is what the API server holds: fewer Ready pods of the label,
the deployment's ``spec.replicas``, the node's ``spec.unschedulable``.

``delete_pods`` has no lease: the emulator runs no controllers, so the helpers'
``ReplicaController`` plays the ReplicaSet controller and recreates a Ready pod 1.5 s
after one goes missing. The pods belong to deployment ``web`` through its ReplicaSet
(owner references and the ``pod-template-hash`` label, as Kubernetes sets them). ``scale`` and ``cordon`` are leased by the driver's watchdog,
a detached process on this machine that talks to the same emulator.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target
from tests.integration.k8semu import K8sEmulator, ReplicaController

# 3 s, not less: the watchdog is a fresh Python process that must load the driver and the
# kubernetes client (about 1 s to import) before the lease ends.
LEASE_S = 3.0
NAMESPACE = "contract"
LABELS = {"app": "web"}
REPLICAS = 2
RECREATE_AFTER_S = 1.5  # the stand-in controller's delay: how long a deleted pod stays gone
DEPLOYMENT = "web"
DEPLOYMENT_REPLICAS = 3
NODE = "node-1"
TEMPLATE_HASH = "5d4f8"  # the pods' ReplicaSet: web-5d4f8


def _emulator_available() -> tuple[bool, str]:
    for module, package in (("kubernetes", "chaoslab[kubernetes]"), ("kmock", "kmock")):
        if importlib.util.find_spec(module) is None:
            return False, f"{module} (pip install '{package}')"
    return True, ""


def _raw(resp: Any) -> dict[str, Any]:
    try:
        raw: dict[str, Any] = json.loads(resp.data)
    finally:
        resp.release_conn()
    return raw


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """The emulator, and its objects as the kubernetes client reads them (raw JSON);
    ``controller``: the stand-in ReplicaSet controller of the pods, when there are any."""

    emu: K8sEmulator
    controller: ReplicaController | None = None

    def pods(self) -> list[dict[str, Any]]:
        return list(self.emu.pods(NAMESPACE).values())

    def deployment(self) -> dict[str, Any]:
        from kubernetes import client

        with self.emu.api() as api:
            apps: Any = client.AppsV1Api(api)
            return _raw(apps.read_namespaced_deployment(DEPLOYMENT, NAMESPACE, _preload_content=False))

    def node(self) -> dict[str, Any]:
        from kubernetes import client

        with self.emu.api() as api:
            core: Any = client.CoreV1Api(api)
            return _raw(core.read_node(NODE, _preload_content=False))


@contextlib.contextmanager
def _replicated_pods(tmp_path: Path) -> Iterator[Target]:
    with K8sEmulator(tmp_path) as emu:
        deployment = emu.create_workload("deployment", NAMESPACE, DEPLOYMENT, REPLICAS)
        rs = emu.create_replicaset(NAMESPACE, f"{DEPLOYMENT}-{TEMPLATE_HASH}", owner=deployment)
        pod_labels = {**LABELS, "pod-template-hash": TEMPLATE_HASH}
        for i in range(REPLICAS):
            emu.create_pod(NAMESPACE, f"{DEPLOYMENT}-{TEMPLATE_HASH}-{i}", pod_labels, owner=rs)
        labels = ",".join(f"{k}={v}" for k, v in LABELS.items())
        with ReplicaController(
            emu, NAMESPACE, pod_labels, REPLICAS, delay_s=RECREATE_AFTER_S, max_s=90, owner=rs
        ) as controller:
            yield Target(
                selector=f"k8s:{NAMESPACE}/{labels}",
                handle=Cluster(emu=emu, controller=controller),
                args=emu.conn_args(),
            )


@contextlib.contextmanager
def _deployment(tmp_path: Path) -> Iterator[Target]:
    with K8sEmulator(tmp_path) as emu:
        emu.create_workload("deployment", NAMESPACE, DEPLOYMENT, DEPLOYMENT_REPLICAS)
        yield Target(
            selector=f"k8s:{NAMESPACE}/deployment/{DEPLOYMENT}",
            handle=Cluster(emu=emu),
            args=emu.conn_args(),
        )


@contextlib.contextmanager
def _node(tmp_path: Path) -> Iterator[Target]:
    with K8sEmulator(tmp_path) as emu:
        emu.create_node(NODE)
        yield Target(selector=f"k8s:node/{NODE}", handle=Cluster(emu=emu), args=emu.conn_args())


# --- observers ------------------------------------------------------------------------------


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pods_missing(target: Target, record: RevertRecord) -> bool:
    # Labels are checked here: the emulator ignores label selectors.
    labelled = [
        p for p in target.handle.pods() if LABELS.items() <= (p["metadata"].get("labels") or {}).items()
    ]
    return sum(1 for p in labelled if _ready(p)) < REPLICAS


def _scaled(target: Target, record: RevertRecord) -> bool:
    deployment = target.handle.deployment()
    return int(deployment["spec"]["replicas"]) != DEPLOYMENT_REPLICAS


def _cordoned(target: Target, record: RevertRecord) -> bool:
    node = target.handle.node()
    return bool((node.get("spec") or {}).get("unschedulable"))


CASES = [
    FaultCase(
        id="kubernetes.delete_pods",
        driver="kubernetes",
        op="delete_pods",
        args={"recover_timeout": "20s"},
        make_target=_replicated_pods,
        observe=_pods_missing,
        lease_s=None,
        heal_s=10.0,
        available=_emulator_available,
    ),
    FaultCase(
        id="kubernetes.scale",
        driver="kubernetes",
        op="scale",
        args={"replicas": 1},
        make_target=_deployment,
        observe=_scaled,
        lease_s=LEASE_S,
        available=_emulator_available,
    ),
    FaultCase(
        id="kubernetes.cordon",
        driver="kubernetes",
        op="cordon",
        make_target=_node,
        observe=_cordoned,
        lease_s=LEASE_S,
        available=_emulator_available,
    ),
]
