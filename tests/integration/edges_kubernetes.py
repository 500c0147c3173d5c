"""Edge-column hooks of the kubernetes driver (delete_pods, scale, cordon): see matrix_edges.py.

Each cell has its own API server (kmock's emulator, tests/integration/k8semu.py, started by
the contract target of tests/contract/cases_kubernetes.py), so freezing it is safe under
xdist:

- revert-fails: the API server stops answering (``K8sEmulator.frozen``: its event loop is
  held, connections are accepted and never answered, as a hung control plane). Requests
  time out after 2 s in that cell, so the run's revert and clean check give up in
  seconds; ``scale``/``cordon`` keep their lease, ``delete_pods`` cannot verify its heal.
- target-unreachable: the kubeconfig's ``dead`` context, a port nobody listens on.
- named-two-ways: ``delete_pods`` picks pods of the same deployment through its
  ``pod-template-hash`` label (another pod, the same workload uid; the stand-in
  controller waits while run B tries, so run A's deletion is still unhealed); ``scale`` and
  ``cordon`` name their object ``deploy/web`` / ``nodes/node-1`` through a second
  kubeconfig (another cluster, user and context name for the same API server).
- relpath-recover-elsewhere: ``kubeconfig: kube/config`` relative to the run's directory;
  ``elsewhere/kube/config`` points at a decoy API server holding namesakes of every
  object (other uids), which ``recover`` must never contact.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import Target
from tests.contract.cases_kubernetes import (
    DEPLOYMENT,
    DEPLOYMENT_REPLICAS,
    NAMESPACE,
    NODE,
    TEMPLATE_HASH,
)
from tests.integration.k8semu import CONTEXT, DEAD_CONTEXT, K8sEmulator
from tests.integration.matrix_edges import EdgeHooks, Variant

RELATIVE_KUBECONFIG = "kube/config"


@contextlib.contextmanager
def _api_frozen(target: Target, record: RevertRecord) -> Iterator[None]:
    with target.handle.emu.frozen():
        yield


@contextlib.contextmanager
def _nobody_listens(target: Target, workdir: Path) -> Iterator[Variant]:
    yield Variant(args={"context": DEAD_CONTEXT})


@contextlib.contextmanager
def _by_template_hash(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same deployment's pods, by the label its ReplicaSet gives them. Its stand-in
    controller waits meanwhile, so run A's deletion is still unhealed -- the fault
    still held -- while run B is refused (else it heals in 1.5 s, before B starts)."""
    with target.handle.controller.paused():
        yield Variant(selector=f"k8s:{NAMESPACE}/pod-template-hash={TEMPLATE_HASH}")


def _another_kubeconfig(target: Target, workdir: Path) -> dict[str, Any]:
    """Args reaching the target's API server through a kubeconfig of its own: another
    file, cluster, user and context name (as a colleague's kubeconfig would)."""
    mine = yaml.safe_load(Path(target.args["kubeconfig"]).read_text())
    server = next(c["cluster"]["server"] for c in mine["clusters"] if c["name"] == CONTEXT)
    theirs = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod-eu", "cluster": {"server": server}}],
        "users": [{"name": "sre", "user": {"token": "another-token"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod-eu", "user": "sre"}}],
        "current-context": "prod",
    }
    path = workdir / "colleague.kubeconfig"
    path.write_text(yaml.safe_dump(theirs))
    return {"kubeconfig": str(path), "context": "prod"}


def _named(selector: str) -> Any:
    @contextlib.contextmanager
    def alias(target: Target, workdir: Path) -> Iterator[Variant]:
        yield Variant(selector=selector, args=_another_kubeconfig(target, workdir))

    return alias


@contextlib.contextmanager
def _relative_kubeconfig(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``kube/config`` under the run's directory names the target's cluster; under
    ``elsewhere`` it names a decoy cluster with namesakes, never to be contacted."""
    (here / "kube").mkdir()
    shutil.copy(target.args["kubeconfig"], here / RELATIVE_KUBECONFIG)
    (elsewhere / "decoy").mkdir()
    with K8sEmulator(elsewhere / "decoy") as decoy:
        deployment = decoy.create_workload("deployment", NAMESPACE, DEPLOYMENT, DEPLOYMENT_REPLICAS)
        rs = decoy.create_replicaset(NAMESPACE, f"{DEPLOYMENT}-{TEMPLATE_HASH}", owner=deployment)
        for i in range(2):
            decoy.create_pod(
                NAMESPACE,
                f"{DEPLOYMENT}-{TEMPLATE_HASH}-{i}",
                {"app": "web", "pod-template-hash": TEMPLATE_HASH},
                owner=rs,
            )
        decoy.create_node(NODE)
        (elsewhere / "kube").mkdir()
        shutil.copy(decoy.kubeconfig, elsewhere / RELATIVE_KUBECONFIG)
        seeded = len(decoy.requests())
        yield Variant(args={"kubeconfig": RELATIVE_KUBECONFIG}, relative=(RELATIVE_KUBECONFIG,))
        contacted = decoy.requests()[seeded:]
        assert not contacted, f"the decoy cluster under elsewhere/ was contacted: {contacted}"


# 2 s per request while the API server is frozen: the revert and the check give up in seconds.
_FROZEN_ARGS = {"request_timeout": "2s"}

HOOKS: dict[str, EdgeHooks] = {
    "kubernetes.delete_pods": EdgeHooks(
        break_revert=_api_frozen,
        unreachable=_nobody_listens,
        alias=_by_template_hash,
        relative=_relative_kubeconfig,
        revert_fails_args=_FROZEN_ARGS,
    ),
    "kubernetes.scale": EdgeHooks(
        break_revert=_api_frozen,
        unreachable=_nobody_listens,
        alias=_named(f"k8s:{NAMESPACE}/deploy/{DEPLOYMENT}"),
        relative=_relative_kubeconfig,
        revert_fails_args=_FROZEN_ARGS,
    ),
    "kubernetes.cordon": EdgeHooks(
        break_revert=_api_frozen,
        unreachable=_nobody_listens,
        alias=_named(f"k8s:nodes/{NODE}"),
        relative=_relative_kubeconfig,
        revert_fails_args=_FROZEN_ARGS,
    ),
}
