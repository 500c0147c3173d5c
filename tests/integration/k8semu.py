"""A Kubernetes-like API server for the kubernetes driver's tests: kmock's KubernetesEmulator.

No real cluster can run on the test machine. ``kmock.KubernetesEmulator`` is a stateful
in-memory object store served over HTTP on 127.0.0.1; tests reach it through the real
``kubernetes`` client and a real kubeconfig file, exactly as the driver reaches a cluster.

What the emulator does NOT do, and how the tests cope:

- it ignores ``labelSelector``/``fieldSelector`` (returns every object of the namespace):
  the driver re-checks labels client-side, and a test proves an unlabelled pod survives;
- it runs no controllers: ``ReplicaController`` plays the ReplicaSet controller in a
  thread (creates Ready replacement pods for deleted ones); owner references (a pod's
  ReplicaSet, the ReplicaSet's Deployment) are set by the helpers (``owner=``);
- it keeps no ``uid``/``resourceVersion``/``creationTimestamp``: the helpers set them;
- it applies every PATCH as a JSON merge (``None`` removes a key) and deletes at once,
  whatever the grace period.

The emulator's aiohttp server runs in its own event loop on a daemon thread; ``close()``
stops it and joins the thread, leaving no socket open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "emu"
DEAD_CONTEXT = "dead"  # points at a closed port: proves the driver uses the context asked for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class K8sEmulator:
    """kmock's KubernetesEmulator on 127.0.0.1:PORT, plus a kubeconfig pointing at it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.port = 0
        self.emulator: Any = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("kmock emulator did not start within 20 s")
        if self._error is not None:
            raise RuntimeError(f"kmock emulator failed to start: {self._error!r}")
        self.kubeconfig = self._write_kubeconfig()

    # --- server lifecycle -------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        import kmock

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        emulator = kmock.KubernetesEmulator()
        # Declared up front: the emulator answers 404 on LIST of a resource it has never
        # stored an object of, where a real API server returns an empty list.
        for res in (
            "v1/pods",
            "v1/nodes",
            "apps/v1/deployments",
            "apps/v1/statefulsets",
            "apps/v1/replicasets",
        ):
            emulator.resources[res] = kmock.ResourceInfo()
        async with emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def __enter__(self) -> K8sEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def frozen(self, max_s: float = 120.0) -> Iterator[None]:
        """The API server stops answering, as a hung control plane: its event loop is
        held (at most ``max_s``), so the kernel still accepts connections and no request
        gets an answer until the block exits. Nothing in this process may call the
        emulator meanwhile (it would wait as every client does)."""
        assert self._loop is not None
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            held.set()
            release.wait(max_s)

        self._loop.call_soon_threadsafe(hold)
        if not held.wait(20):
            release.set()
            raise RuntimeError("the emulator's loop did not take the hold within 20 s")
        try:
            yield
        finally:
            release.set()

    def requests(self) -> list[Any]:
        """Every request the emulator has served so far (kmock ``Request`` objects)."""
        return list(self.emulator)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_kubeconfig(self) -> Path:
        path = self.workdir / "kubeconfig"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "emu", "cluster": {"server": self.url}},
                {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{_closed_port()}"}},
            ],
            "users": [{"name": "tester", "user": {"token": "not-checked-by-the-emulator"}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": "emu", "user": "tester"}},
                {"name": DEAD_CONTEXT, "context": {"cluster": "dead", "user": "tester"}},
            ],
            # The default context is the dead one: a driver that ignored ``context``
            # would fail loudly instead of passing by accident.
            "current-context": DEAD_CONTEXT,
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def conn_args(self) -> dict[str, Any]:
        """Connection arguments for the driver's operations."""
        return {"kubeconfig": str(self.kubeconfig), "context": CONTEXT}

    # --- a real client for seeding and checking ------------------------------------------

    @contextlib.contextmanager
    def api(self) -> Iterator[Any]:
        from kubernetes import client
        from kubernetes import config as _config

        config: Any = _config  # untyped loaders
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig),
            context=CONTEXT,
            client_configuration=cfg,
            persist_config=False,
        )
        with client.ApiClient(cfg) as api:
            yield api

    def create_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        *,
        ready: bool = True,
        phase: str = "Running",
        node: str = "node-1",
        owner: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A pod; ``owner``: the object (as created) its controller reference names."""
        from kubernetes import client

        body = pod_manifest(namespace, name, labels, ready=ready, phase=phase, node=node)
        if owner is not None:
            body["metadata"]["ownerReferences"] = [owner_reference(owner)]
        with self.api() as api:
            core: Any = client.CoreV1Api(api)  # the stubs want models; the API takes JSON
            core.create_namespaced_pod(namespace, body)
        return body

    def pods(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every pod the server holds in ``namespace`` (no selector), by name."""
        from kubernetes import client

        with self.api() as api:
            core: Any = client.CoreV1Api(api)
            resp = core.list_namespaced_pod(namespace, _preload_content=False)
            try:
                items = json.loads(resp.data)["items"]
            finally:
                resp.release_conn()
        return {p["metadata"]["name"]: p for p in items}

    def create_workload(self, kind: str, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """A deployment or statefulset with a fresh uid; returns it as created."""
        from kubernetes import client

        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment" if kind == "deployment" else "StatefulSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
            "status": {"replicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas},
        }
        with self.api() as api:
            apps: Any = client.AppsV1Api(api)
            if kind == "deployment":
                apps.create_namespaced_deployment(namespace, body)
            else:
                apps.create_namespaced_stateful_set(namespace, body)
        return body

    def create_replicaset(self, namespace: str, name: str, owner: Mapping[str, Any]) -> dict[str, Any]:
        """A ReplicaSet controlled by ``owner`` (a deployment as created), as Kubernetes
        makes one per deployment revision; returns it as created."""
        from kubernetes import client

        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "ownerReferences": [owner_reference(owner)],
            },
            "spec": {"selector": owner["spec"]["selector"], "template": owner["spec"]["template"]},
        }
        with self.api() as api:
            apps: Any = client.AppsV1Api(api)
            apps.create_namespaced_replica_set(namespace, body)
        return body

    def delete_workload(self, kind: str, namespace: str, name: str) -> None:
        from kubernetes import client

        with self.api() as api:
            apps: Any = client.AppsV1Api(api)
            delete = (
                apps.delete_namespaced_deployment
                if kind == "deployment"
                else apps.delete_namespaced_stateful_set
            )
            delete(name, namespace, _preload_content=False).release_conn()

    def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        plural = "deployments" if kind == "deployment" else "statefulsets"
        return dict(self.emulator.objects[f"apps/v1/{plural}", namespace, name].raw)

    def create_node(self, name: str, *, unschedulable: bool = False) -> None:
        from kubernetes import client

        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            "spec": {"unschedulable": True} if unschedulable else {},
        }
        with self.api() as api:
            core: Any = client.CoreV1Api(api)
            core.create_node(body)

    def node(self, name: str) -> dict[str, Any]:
        return dict(self.emulator.objects["v1/nodes", None, name].raw)


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference to ``owner`` (an object as created), as controllers set it."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_manifest(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    *,
    ready: bool = True,
    phase: str = "Running",
    node: str = "node-1",
) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "creationTimestamp": now,
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}
            ],
        },
    }


class ReplicaController:
    """Plays the ReplicaSet controller the emulator lacks, in a bounded thread.

    Keeps ``replicas`` pods labelled ``labels`` in ``namespace``: after ``delay_s`` it
    creates a Ready replacement for every missing one. It judges pods by their labels on
    the client side, since the emulator ignores selectors.
    """

    def __init__(
        self,
        emu: K8sEmulator,
        namespace: str,
        labels: Mapping[str, str],
        replicas: int,
        *,
        delay_s: float = 0.5,
        max_s: float = 30.0,
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        self.emu = emu
        self.owner = owner  # the ReplicaSet its pods name as their controller
        self.namespace = namespace
        self.labels = dict(labels)
        self.replicas = replicas
        self.delay_s = delay_s
        self.max_s = max_s
        self.created: list[str] = []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replica-controller", daemon=True)

    def __enter__(self) -> ReplicaController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The controller is down: no replacement is created until the block exits."""
        self._paused.set()
        try:
            yield
        finally:
            self._paused.clear()

    def _matching(self) -> int:
        return sum(
            1
            for p in self.emu.pods(self.namespace).values()
            if all(p["metadata"].get("labels", {}).get(k) == v for k, v in self.labels.items())
        )

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_s
        missing_since: float | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._paused.is_set():
                missing_since = None  # a controller that comes back counts its delay anew
                self._stop.wait(0.05)
                continue
            missing = self.replicas - self._matching()
            if missing <= 0:
                missing_since = None
            elif missing_since is None:
                missing_since = time.monotonic()
            elif time.monotonic() - missing_since >= self.delay_s:
                for _ in range(missing):
                    name = f"{self.labels.get('app', 'pod')}-{uuid.uuid4().hex[:5]}"
                    self.emu.create_pod(self.namespace, name, self.labels, owner=self.owner)
                    self.created.append(name)
                missing_since = None
            self._stop.wait(0.05)
