"""Kubernetes driver: delete pods, scale workloads, cordon nodes; probe readiness.

Uses the official ``kubernetes`` client, imported lazily (``pip install
'chaoslab[kubernetes]'``). Every call builds its own ``ApiClient`` from a kubeconfig (the
context of your choice) or from the in-cluster service account, and closes it: no global
client configuration is touched, so two runs in one process never see each other.

Targets (the ``k8s:`` prefix is optional; which form applies depends on the operation)::

    k8s:NAMESPACE/LABEL_SELECTOR         delete_pods, ready_pods
        e.g. k8s:shop/app=web   k8s:shop/app.kubernetes.io/name=web,tier!=db
             k8s:shop/env in (prod,staging),!canary
    k8s:NAMESPACE/deployment/NAME        scale, available_replicas (also deploy/...)
    k8s:NAMESPACE/statefulset/NAME       scale, available_replicas (also sts/...)
    k8s:node/NAME                        cordon

The label selector uses Kubernetes syntax (``=``, ``==``, ``!=``, ``in (...)``,
``notin (...)``, ``key``, ``!key``, ``>``/``<`` on integers) and must not be empty: an
empty selector would mean "every pod in the namespace". A field selector is an argument
(``field_selector: "status.phase=Running,spec.nodeName=node-1"``).

Pods are picked with the shared selection arguments (``chaoslab.drivers.selection``):
``count`` (default 1), ``percent`` (rounded up, at least one) or ``all``, at random with
``seed`` (default: the run's seed); the pick is recorded in the revert record.

Selectors are sent to the API server AND re-checked on what comes back. A real API server
filters; a sloppy server, a proxy or a test emulator (kmock) may return everything, and a
pod without the label must never be deleted. The official client has no selector parser,
hence the small hand-written one below (it follows ``k8s.io/apimachinery/pkg/labels``).

Faults and how they end:

- ``delete_pods`` (lease NONE): the deletion cannot be undone; its revert waits until as
  many matching pods are Ready as were Ready before (none of the deleted ones among them)
  and reports ``time_to_recover_s``. Deletion carries a ``uid`` precondition, so a
  same-named replacement created meanwhile (StatefulSets) is never deleted by mistake.
- ``scale`` records the exact previous ``spec.replicas``; revert restores it. The patch
  carries the ``resourceVersion`` read when planning, so a real API server refuses it
  (409) if the workload changed in between and the recorded value would be stale.
- ``cordon`` sets ``spec.unschedulable``; revert uncordons only if the node was not
  already cordoned before the fault.

Lock keys (``identities``) are the uids ``prepare`` resolved, never the target's text:
``k8s:pod:<uid>`` for each pod ``delete_pods`` picked plus ``k8s:<kind>:<uid>`` of the
workload that owns it (a pod's ReplicaSet is followed to its Deployment), the workload
of ``scale`` (``k8s:deployment:<uid>``, ``k8s:statefulset:<uid>``), ``k8s:node:<uid>``.
So a deployment scaled by name in one run and its pods picked by a label selector (or
the same name through a ``${var}``) in another is one lock, and one deleted and
recreated under its name is another identity: ``scale``/``cordon`` revert and check only
the object of the recorded uid (another object that took its name is left alone) and
send that uid with every patch, which a real API server refuses for any other object.
An object a lenient server returns without a uid is named by the API server URL and
its name (``identity``).

Lease of ``scale`` and ``cordon`` -- be clear about where it lives: the shared lease
watchdog (``chaoslab.drivers.watchdog``), a detached process **on the runner's machine**,
not in the cluster. At lease end it reverts from the record alone, through this driver's
``revert``. It survives a SIGKILLed runner, but not the runner's machine going down or
losing its route to the API server; a lease enforced inside the cluster would need an
in-cluster agent, which this driver does not install. A normal revert, from any process
on that machine, retires the watchdog only once the restored state is verified (the
skeleton's rule, ``chaoslab.drivers.lifecycle``): a failed revert keeps the lease. A
watchdog racing a revert restores the same recorded value, so both are harmless.
A change the API server refuses (4xx) was not made: the fault is "not applied". So is a
fault planned while the API server could not be reached (nobody listens, no answer
within ``request_timeout``): it resolved nothing, locks only its cluster and name, and
its revert contacts nobody. ``request_timeout`` bounds each request: a read that timed
out is not sent again (the client's default retries made it 4 x ``request_timeout``).
A kubeconfig given as a relative path is recorded absolute, in the record's args too.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    parse_duration,
)
from chaoslab.drivers.lifecycle import (
    Ask,
    FaultDriver,
    Heal,
    HealingData,
    HealingFault,
    LeasedData,
    LeasedFault,
    not_applied,
)
from chaoslab.drivers.selection import SELECTION_PARAMS, Picked, Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import validated
from chaoslab.errors import DriverError, Problem, TargetNotFound, UnsafeTarget

NAME = "kubernetes"
INSTALL_HINT = "pip install 'chaoslab[kubernetes]'"
_POLL_S = 0.2  # recovery polling: time_to_recover is precise to about this
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# --- label and field selectors ------------------------------------------------------------

_NAME_PART = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_KEY = rf"(?:{_PREFIX}/)?{_NAME_PART}"
_VALUE = rf"(?:{_NAME_PART})?"
_EQ = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<val>{_VALUE})$")
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)$")
_EXISTS = re.compile(rf"^(?P<neg>!)?\s*(?P<key>{_KEY})$")
_CMP = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>[<>])\s*(?P<val>-?\d+)$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One clause of a label selector. ``op`` is one of = != in notin exists !exists > <."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":  # Kubernetes: an absent label satisfies != and notin
                return not present or value not in self.values
            case "exists":
                return present
            case "!exists":
                return not present
            case ">" | "<":
                try:
                    number = int(value or "")
                except ValueError:
                    return False
                bound = int(self.values[0])
                return number > bound if self.op == ">" else number < bound
        return False  # pragma: no cover - ops are fixed by the parser


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` → ``["a in (x,y)", "b"]``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Parse a Kubernetes label selector; raises ValueError naming the bad clause."""
    if not text.strip():
        raise ValueError("empty label selector (it would select every pod in the namespace)")
    reqs: list[Requirement] = []
    for clause in _split_top_level(text):
        if m := _EQ.match(clause):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(key=m["key"], op=op, values=(m["val"],)))
        elif m := _SET.match(clause):
            values = tuple(v.strip() for v in m["vals"].split(","))
            bad = [v for v in values if not _VALUE_RE.match(v)]
            if bad or not m["vals"].strip():
                raise ValueError(f"bad value list in {clause!r}")
            reqs.append(Requirement(key=m["key"], op=m["op"], values=values))
        elif m := _CMP.match(clause):
            reqs.append(Requirement(key=m["key"], op=m["op"], values=(m["val"],)))
        elif m := _EXISTS.match(clause):
            reqs.append(Requirement(key=m["key"], op="!exists" if m["neg"] else "exists"))
        else:
            raise ValueError(f"not a label selector clause: {clause!r}")
    return tuple(reqs)


def labels_match(reqs: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in reqs)


# Pod fields the API server accepts in field selectors, and where they live in the object.
_POD_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "spec.hostNetwork": ("spec", "hostNetwork"),
    "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"),
    "status.nominatedNodeName": ("status", "nominatedNodeName"),
}
_FIELD_CLAUSE = re.compile(r"^(?P<key>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<val>[^,=!]*)$")


def parse_field_selector(text: str) -> tuple[tuple[str, bool, str], ...]:
    """``a=b,c!=d`` → ((a, True, b), (c, False, d)). Only fields pods support."""
    out = []
    for clause in (c.strip() for c in text.split(",")):
        m = _FIELD_CLAUSE.match(clause)
        if not m:
            raise ValueError(f"not a field selector clause: {clause!r}")
        if m["key"] not in _POD_FIELDS:
            raise ValueError(
                f"pods cannot be selected by field {m['key']!r} (known: {', '.join(_POD_FIELDS)})"
            )
        out.append((m["key"], m["op"] != "!=", m["val"].strip()))
    return tuple(out)


def _field_value(pod: Mapping[str, Any], key: str) -> str:
    node: Any = pod
    for part in _POD_FIELDS[key]:
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def fields_match(clauses: Sequence[tuple[str, bool, str]], pod: Mapping[str, Any]) -> bool:
    return all((_field_value(pod, k) == v) == equal for k, equal, v in clauses)


# --- targets --------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$")
_WORKLOAD_KINDS = {
    "deployment": "deployment",
    "deploy": "deployment",
    "deployments": "deployment",
    "statefulset": "statefulset",
    "sts": "statefulset",
    "statefulsets": "statefulset",
}


@dataclass(frozen=True, kw_only=True)
class PodTarget:
    namespace: str
    selector: str
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True, kw_only=True)
class WorkloadTarget:
    namespace: str
    kind: str  # "deployment" | "statefulset"
    name: str


@dataclass(frozen=True, kw_only=True)
class NodeTarget:
    name: str


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    """A workload by kind (lower case: ``deployment``, ``statefulset``...), name and uid."""

    kind: str
    name: str
    uid: str


def identity(kind: str, uid: str | None, *, server: str | None, namespace: str | None, name: str) -> str:
    """The lock key of one Kubernetes object: ``k8s:<kind>:<uid>``.

    The API server gives every object a uid when it is created and never reuses it, in
    any cluster: the key names the object itself, not the text that found it. One
    deployment named by name, through a ``${var}``, or as the owner of the pods a label
    selector picks is one key; one deleted and recreated under the same name is another.
    An object a lenient server returns without a uid is named by its cluster (the API
    server URL) and its name; a record of an older chaoslab with neither gives the key
    that chaoslab wrote (``k8s:NAMESPACE/KIND/NAME``, ``k8s:node/NAME``).
    """
    if uid:
        return f"k8s:{kind}:{uid}"
    where = f"{namespace}/{kind}/{name}" if namespace else f"{kind}/{name}"
    return f"k8s:{server}/{where}" if server else f"k8s:{where}"


def _strip_prefix(target: str) -> str:
    return target[4:] if target.startswith("k8s:") else target


def parse_pod_target(target: str) -> PodTarget:
    ns, sep, selector = _strip_prefix(target).partition("/")
    if not sep or not _DNS_LABEL.match(ns):
        raise ValueError(f"expected k8s:NAMESPACE/LABEL_SELECTOR, got {target!r}")
    return PodTarget(namespace=ns, selector=selector.strip(), requirements=parse_label_selector(selector))


def parse_workload_target(target: str) -> WorkloadTarget:
    parts = _strip_prefix(target).split("/")
    if (
        len(parts) != 3
        or not _DNS_LABEL.match(parts[0])
        or parts[1].lower() not in _WORKLOAD_KINDS
        or not _DNS_SUBDOMAIN.match(parts[2])
    ):
        raise ValueError(
            f"expected k8s:NAMESPACE/deployment/NAME or k8s:NAMESPACE/statefulset/NAME, got {target!r}"
        )
    return WorkloadTarget(namespace=parts[0], kind=_WORKLOAD_KINDS[parts[1].lower()], name=parts[2])


def parse_node_target(target: str) -> NodeTarget:
    kind, sep, name = _strip_prefix(target).partition("/")
    if not sep or kind not in ("node", "nodes") or not _DNS_SUBDOMAIN.match(name):
        raise ValueError(f"expected k8s:node/NAME, got {target!r}")
    return NodeTarget(name=name)


# --- connection -------------------------------------------------------------------------------


class ApiUnreachable(DriverError):
    """No answer from the API server at all (nobody listens, a timeout, TLS failed)."""


class Conn(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach the API server; stored in the record so any process connects alike."""

    kubeconfig: str | None
    context: str | None
    in_cluster: bool
    timeout_s: float

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Conn:
        """Explicit kubeconfig, else $KUBECONFIG, else ~/.kube/config, else in-cluster."""
        timeout_s = parse_duration(args.get("request_timeout", "10s"))
        context = args.get("context")
        if args.get("in_cluster"):
            return cls(kubeconfig=None, context=None, in_cluster=True, timeout_s=timeout_s)
        raw = args.get("kubeconfig") or os.environ.get("KUBECONFIG") or "~/.kube/config"
        paths = [os.path.abspath(os.path.expanduser(p)) for p in str(raw).split(os.pathsep) if p]
        if any(os.path.exists(p) for p in paths):
            return cls(
                kubeconfig=os.pathsep.join(paths), context=context, in_cluster=False, timeout_s=timeout_s
            )
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not args.get("kubeconfig"):
            return cls(kubeconfig=None, context=None, in_cluster=True, timeout_s=timeout_s)
        raise DriverError(f"no kubeconfig at {raw} and not running inside a cluster", driver=NAME)


class Kube:
    """One ``ApiClient`` for one driver call; closed on exit. Returns raw JSON objects.

    Raw JSON rather than the client's models: the driver reads a handful of fields, and
    model validation would reject objects a lenient server returns incomplete.
    """

    def __init__(self, conn: Conn, target: str = "") -> None:
        self.conn = conn
        self.target = target
        try:
            from kubernetes import client
            from kubernetes import config as _config
            from kubernetes.client.exceptions import ApiException
        except ImportError as exc:
            raise DriverError(
                f"the kubernetes client is not installed ({INSTALL_HINT})", driver=NAME
            ) from exc
        self._api_exception: type[Exception] = ApiException
        config: Any = _config  # the config loaders are untyped
        cfg = client.Configuration()
        try:
            if conn.in_cluster:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(
                    config_file=conn.kubeconfig,
                    context=conn.context,
                    client_configuration=cfg,
                    persist_config=False,
                )
        except (config.ConfigException, OSError, ValueError, KeyError) as exc:
            where = "in-cluster config" if conn.in_cluster else f"kubeconfig {conn.kubeconfig}"
            ctx = f" context {conn.context!r}" if conn.context else ""
            raise DriverError(f"cannot load {where}{ctx}: {exc}", driver=NAME) from exc
        # request_timeout bounds each request: urllib3's default (3 retries) re-sent a
        # read that timed out, so a hung API server held every read 4 x request_timeout.
        # A refused connection is still tried again (it fails fast).
        from urllib3.util.retry import Retry

        cfg.retries = Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0)
        # The cluster as this client reaches it: names an object that carries no uid.
        self.server = str(cfg.host or "").rstrip("/").lower()
        self._client: Any = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self._client)
        self.apps = client.AppsV1Api(self._client)

    def close(self) -> None:
        self._client.close()

    def call(
        self, fn: Callable[..., Any], *args: Any, refused: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """Call an API method; 404 → TargetNotFound, anything else → DriverError.

        ``refused``: the call makes a fault's change, so an error status the server
        answered (4xx: it refused the request) means the change was not made -- the
        error is "not applied". A transport error leaves that unknown."""
        import urllib3

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.conn.timeout_s, **kwargs)
        except self._api_exception as exc:
            raise self._translate(exc, fn.__name__, refused=refused) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnreachable(
                f"cannot reach the Kubernetes API ({fn.__name__}): {exc}", driver=NAME, target=self.target
            ) from exc
        try:
            data = resp.data
        finally:
            resp.release_conn()
        loaded = json.loads(data) if data else {}
        return loaded if isinstance(loaded, dict) else {}

    def _translate(self, exc: Any, what: str, *, refused: bool = False) -> DriverError:
        status = int(getattr(exc, "status", 0) or 0)
        na = refused and 400 <= status < 500
        message = str(getattr(exc, "reason", "") or "")
        try:
            message = json.loads(exc.body).get("message") or message
        except (TypeError, ValueError, AttributeError):
            pass
        text = f"{what}: HTTP {status} {message}".strip()
        if status == 404:
            return TargetNotFound(text, driver=NAME, target=self.target, not_applied=na)
        if status == 409:
            text += " (the object changed concurrently)"
        elif status in (401, 403):
            text += " (check credentials and RBAC)"
        return DriverError(text, driver=NAME, target=self.target, not_applied=na)

    # -- reads --------------------------------------------------------------------------------

    def pods(self, ns: str, selector: str, field_selector: str | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"label_selector": selector}
        if field_selector:
            kwargs["field_selector"] = field_selector
        items = self.call(self.core.list_namespaced_pod, ns, **kwargs).get("items") or []
        return [p for p in items if isinstance(p, dict)]

    def readable(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        """A read that may be refused: None when the object is gone (404) or this
        identity may not read it (403, RBAC); any other error raises as ``call`` does."""
        try:
            return self.call(fn, *args)
        except DriverError as exc:
            cause = exc.__cause__
            if getattr(cause, "status", None) in (403, 404):
                return None
            raise

    def controller(self, obj: Mapping[str, Any]) -> Workload | None:
        """The workload that owns ``obj`` through its controller references: a pod's
        ReplicaSet is followed to its Deployment (when readable), a StatefulSet's pod
        names the StatefulSet itself. None for a bare object."""
        owner = _controller_ref(obj)
        if owner is None:
            return None
        if owner.kind == "replicaset":
            namespace = str(_meta(obj).get("namespace") or "")
            rs = self.readable(self.apps.read_namespaced_replica_set, owner.name, namespace)
            if rs is not None and _meta(rs).get("uid") in (None, owner.uid):
                return _controller_ref(rs) or owner
        return owner

    def workload(self, w: WorkloadTarget) -> dict[str, Any]:
        if w.kind == "deployment":
            return self.call(self.apps.read_namespaced_deployment, w.name, w.namespace)
        return self.call(self.apps.read_namespaced_stateful_set, w.name, w.namespace)

    def patch_workload(
        self, w: WorkloadTarget, body: dict[str, Any], *, refused: bool = False
    ) -> dict[str, Any]:
        if w.kind == "deployment":
            return self.call(
                self.apps.patch_namespaced_deployment, w.name, w.namespace, body, refused=refused
            )
        return self.call(self.apps.patch_namespaced_stateful_set, w.name, w.namespace, body, refused=refused)


@contextmanager
def _kube(conn: Conn, target: str = "") -> Iterator[Kube]:
    kube = Kube(conn, target)
    try:
        yield kube
    finally:
        kube.close()


# --- pod helpers ------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _controller_ref(obj: Mapping[str, Any]) -> Workload | None:
    for ref in _meta(obj).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid") and ref.get("kind"):
            return Workload(
                kind=str(ref["kind"]).lower(), name=str(ref.get("name") or ""), uid=str(ref["uid"])
            )
    return None


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _meta(pod).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _ready_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for cond in conditions or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Ready condition True and not being deleted (a terminating pod leaves the Service)."""
    cond = _ready_condition(pod)
    return bool(cond and cond.get("status") == "True" and not _meta(pod).get("deletionTimestamp"))


def _matching(
    pods: Sequence[dict[str, Any]], target: PodTarget, fields: Sequence[tuple[str, bool, str]]
) -> list[dict[str, Any]]:
    """The pods that truly match, whatever the server chose to return."""
    return [
        p
        for p in pods
        if _meta(p).get("namespace", target.namespace) == target.namespace
        and labels_match(target.requirements, _labels(p))
        and fields_match(fields, p)
    ]


def _runner_pod() -> tuple[str, str] | None:
    """(namespace, name) of the pod this runner lives in, when it runs in a cluster."""
    try:
        ns = _SA_NAMESPACE.read_text().strip()
    except OSError:
        return None
    name = os.environ.get("HOSTNAME", "")
    return (ns, name) if ns and name else None


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- the faults, written on the skeleton (chaoslab.drivers.lifecycle) -------------------------


class Victim(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    uid: str | None = None


class DeleteData(HealingData, frozen=True, kw_only=True):
    # The JSON key records have always used (a ledger entry written before stays readable).
    timeout_s: float = msgspec.field(name="recover_timeout_s")
    namespace: str
    selector: str
    field_selector: str | None
    victims: tuple[Victim, ...]
    pick: dict[str, Any]
    baseline_ready: int  # Ready matching pods before the fault: what recovery means
    grace_period_s: int | None
    conn: Conn
    deleted_at: float | None = None
    deleted: tuple[str, ...] = ()
    # What the deletions really hit besides the pods (their owning workloads), and the
    # cluster the keys of uid-less objects name; both absent from older records.
    workloads: tuple[Workload, ...] = ()
    server: str | None = None
    unresolved: str | None = None  # the API server could not be reached when planning


class ScaleData(LeasedData, frozen=True, kw_only=True):
    namespace: str
    kind: str
    name: str
    uid: str | None = None
    previous_replicas: int
    replicas: int
    resource_version: str | None
    conn: Conn
    server: str | None = None
    unresolved: str | None = None  # the API server could not be reached when planning

    def workload(self) -> WorkloadTarget:
        return WorkloadTarget(namespace=self.namespace, kind=self.kind, name=self.name)


class CordonData(LeasedData, frozen=True, kw_only=True):
    node: str
    uid: str | None = None
    was_unschedulable: bool
    resource_version: str | None
    conn: Conn
    server: str | None = None
    unresolved: str | None = None  # the API server could not be reached when planning


def _absolute_args(ask: Ask, conn: Conn) -> Mapping[str, Any]:
    """The args as written, with ``kubeconfig`` as ``plan`` resolved it (absolute)."""
    if ask.args.get("kubeconfig") and conn.kubeconfig:
        return {**ask.args, "kubeconfig": conn.kubeconfig}
    return ask.args


def _unreached(data: DeleteData | ScaleData | CordonData, target: str) -> None:
    """A fault planned while the API server could not be reached resolved nothing, so
    it locks its cluster and name only and is never applied: "not applied", with why."""
    if data.unresolved:
        raise not_applied(
            f"the Kubernetes API could not be reached when the fault was planned ({data.unresolved});"
            " nothing was changed",
            driver=NAME,
            target=target,
        )


_NOTHING = "the API server was not reached when the fault was planned: nothing was applied"


def _changed(what: str, target: str) -> DriverError:
    return not_applied(
        f"{what} since the fault was planned; not applying it (the revert record would be wrong)",
        driver=NAME,
        target=target,
    )


class DeletePods(HealingFault[DeleteData]):
    """Delete pods; the revert waits until as many matching pods are Ready as before."""

    operation = "delete_pods"
    data_type = DeleteData
    poll_s = _POLL_S

    def plan(self, ctx: DriverContext, ask: Ask) -> DeleteData:
        a, target = ask.full, str(ask.target)
        conn = Conn.from_args(a)
        pt = parse_pod_target(target)
        field_selector = a.get("field_selector")
        fields = parse_field_selector(field_selector) if field_selector else ()
        grace = a.get("grace_period")
        planned = DeleteData(
            namespace=pt.namespace,
            selector=pt.selector,
            field_selector=field_selector,
            victims=(),
            pick={},
            baseline_ready=0,
            grace_period_s=None if grace is None else int(round(parse_duration(grace))),
            timeout_s=parse_duration(a["recover_timeout"]),
            conn=conn,
        )
        with _kube(conn, target) as kube:
            try:
                pods = kube.pods(pt.namespace, pt.selector, field_selector)
            except ApiUnreachable as exc:
                return msgspec.structs.replace(planned, server=kube.server, unresolved=str(exc))
            picked, matching = self._pick(ctx, a, pt, pods, fields, target)
            # What each deletion really hits: the pod, and the workload that owns it.
            owners = [kube.controller(p) for p in picked.items]
            server = kube.server
        return msgspec.structs.replace(
            planned,
            victims=tuple(
                Victim(name=str(_meta(p).get("name")), uid=_meta(p).get("uid")) for p in picked.items
            ),
            pick=picked.to_dict(),
            baseline_ready=sum(1 for p in matching if is_ready(p)),
            workloads=tuple(dict.fromkeys(o for o in owners if o is not None)),
            server=server,
        )

    def _pick(
        self,
        ctx: DriverContext,
        a: Mapping[str, Any],
        pt: PodTarget,
        pods: list[dict[str, Any]],
        fields: Sequence[tuple[str, bool, str]],
        target: str,
    ) -> tuple[Picked[dict[str, Any]], list[dict[str, Any]]]:
        """(the picked pods, every truly matching pod); raises when none can be picked."""
        field_selector = a.get("field_selector")
        matching = _matching(pods, pt, fields)
        candidates = [p for p in matching if not _meta(p).get("deletionTimestamp")]
        if not candidates:
            raise TargetNotFound(
                f"no running pod matches {pt.selector!r}"
                + (f" and {field_selector!r}" if field_selector else "")
                + f" in namespace {pt.namespace!r} ({len(pods)} returned by the server,"
                f" {len(matching)} truly matching)",
                driver=NAME,
                target=target,
            )
        me = _runner_pod()
        if me is not None:
            candidates = [p for p in candidates if (pt.namespace, _meta(p).get("name")) != me]
            if not candidates:
                raise UnsafeTarget(f"the only matching pod is the runner's own ({me[1]})", driver=NAME)
        candidates.sort(key=lambda p: str(_meta(p).get("name")))
        picked = pick(
            candidates, Selection.from_args(a), resolve_seed(a, ctx), key=lambda p: str(_meta(p).get("name"))
        )
        return picked, matching

    def recorded_args(self, ask: Ask, data: DeleteData) -> Mapping[str, Any]:
        return _absolute_args(ask, data.conn)

    def identities(self, record: RevertRecord, data: DeleteData) -> tuple[str, ...]:
        """The deleted pods and the workloads that own them, by uid."""
        if data.unresolved:
            return (identity("pods", None, server=data.server, namespace=data.namespace, name=data.selector),)
        pods = (
            identity("pod", v.uid, server=data.server, namespace=data.namespace, name=v.name)
            for v in data.victims
        )
        owners = (
            identity(w.kind, w.uid, server=data.server, namespace=None, name=w.name) for w in data.workloads
        )
        return (*pods, *owners)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: DeleteData) -> None:
        _unreached(data, record.target)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: DeleteData) -> DeleteData:
        deleted: list[str] = []
        options: dict[str, Any] = {}
        if data.grace_period_s is not None:
            options["gracePeriodSeconds"] = data.grace_period_s
        deleted_at = time.time()
        with _kube(data.conn, record.target) as kube:
            for victim in data.victims:
                body = dict(options)
                if victim.uid:
                    # never delete a same-named replacement created since prepare
                    body["preconditions"] = {"uid": victim.uid}
                try:
                    kube.call(kube.core.delete_namespaced_pod, victim.name, data.namespace, body=body)
                except TargetNotFound:
                    continue  # already gone: the outcome we wanted
                deleted.append(victim.name)
        return msgspec.structs.replace(data, deleted_at=deleted_at, deleted=tuple(deleted))

    def since(self, record: RevertRecord, data: DeleteData) -> float:
        return data.deleted_at or record.created_at

    def heal(self, ctx: DriverContext, record: RevertRecord, data: DeleteData) -> Heal:
        if data.unresolved:
            return Heal(healed=True, detail=_NOTHING)
        with _kube(data.conn, record.target) as kube:
            residue, ready = _recovery(kube, record.target, data)
        if residue:
            return Heal(healed=False, detail="; ".join(residue))
        ttr = _ttr_from_conditions(ready, data.baseline_ready, self.since(record, data))
        return Heal(
            healed=True,
            recovered_at=None if ttr is None else self.since(record, data) + ttr,
            detail=f"{len(ready)} Ready pods match again",
        )

    def time_to_recover(
        self, record: RevertRecord, data: DeleteData, heal: Heal, *, first_look: bool
    ) -> float | None:
        if first_look:  # recovered before we looked: from the pods' own clocks (1 s resolution)
            return super().time_to_recover(record, data, heal, first_look=first_look)
        return max(0.0, time.time() - self.since(record, data))  # observed


class Scale(LeasedFault[ScaleData]):
    """Scale a workload; the revert restores the exact previous replicas."""

    operation = "scale"
    data_type = ScaleData

    def plan(self, ctx: DriverContext, ask: Ask) -> ScaleData:
        conn = Conn.from_args(ask.full)
        w = parse_workload_target(str(ask.target))
        with _kube(conn, str(ask.target)) as kube:
            server: str = kube.server
            unresolved: str | None = None
            try:
                obj = kube.workload(w)
            except ApiUnreachable as exc:
                obj, unresolved = {}, str(exc)
        return ScaleData(
            namespace=w.namespace,
            kind=w.kind,
            name=w.name,
            uid=_meta(obj).get("uid"),
            # an absent spec.replicas means 1 for both kinds
            previous_replicas=int((obj.get("spec") or {}).get("replicas", 1)),
            replicas=int(ask.full["replicas"]),
            resource_version=_meta(obj).get("resourceVersion"),
            conn=conn,
            server=server,
            unresolved=unresolved,
        )

    def recorded_args(self, ask: Ask, data: ScaleData) -> Mapping[str, Any]:
        return _absolute_args(ask, data.conn)

    def identities(self, record: RevertRecord, data: ScaleData) -> tuple[str, ...]:
        """The workload by uid (``k8s:deployment:<uid>``), whatever named it."""
        return (
            identity(
                data.kind.lower(), data.uid, server=data.server, namespace=data.namespace, name=data.name
            ),
        )

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: ScaleData) -> None:
        _unreached(data, record.target)
        with _kube(data.conn, record.target) as kube:
            try:
                obj = _same(kube.workload(data.workload()), data.uid, record.target)
            except TargetNotFound as exc:
                raise _changed(str(exc), record.target) from exc
            current = int((obj.get("spec") or {}).get("replicas", 1))
        if current != data.previous_replicas:
            raise _changed(f"replicas changed from {data.previous_replicas} to {current}", record.target)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: ScaleData) -> ScaleData:
        # optimistic concurrency on a real API server: 409 if changed since prepare
        body = _patch({"replicas": data.replicas}, data.uid, data.resource_version)
        with _kube(data.conn, record.target) as kube:
            kube.patch_workload(data.workload(), body, refused=True)  # a refusal: not applied
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: ScaleData) -> str:
        if data.unresolved:
            return _NOTHING
        w = data.workload()
        with _kube(data.conn, record.target) as kube:
            try:
                _same(kube.workload(w), data.uid, record.target)
                kube.patch_workload(w, _patch({"replicas": data.previous_replicas}, data.uid))
            except TargetNotFound as exc:
                return f"{w.kind} {w.namespace}/{w.name} no longer exists ({exc}); nothing to restore"
        return f"{w.kind} {w.namespace}/{w.name} restored to {data.previous_replicas} replicas"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: ScaleData) -> list[str]:
        if data.unresolved:
            return []
        w = data.workload()
        with _kube(data.conn, record.target) as kube:
            try:
                obj = _same(kube.workload(w), data.uid, record.target)
            except TargetNotFound:
                return []  # gone (or another object under its name): nothing of the fault left
            replicas = int((obj.get("spec") or {}).get("replicas", 1))
        if replicas != data.previous_replicas:
            return [f"{w.kind} {w.name} has {replicas} replicas, was {data.previous_replicas}"]
        return []


class Cordon(LeasedFault[CordonData]):
    """Mark a node unschedulable; the revert uncordons it unless it was cordoned before."""

    operation = "cordon"
    data_type = CordonData

    def plan(self, ctx: DriverContext, ask: Ask) -> CordonData:
        conn = Conn.from_args(ask.full)
        nt = parse_node_target(str(ask.target))
        with _kube(conn, str(ask.target)) as kube:
            server: str = kube.server
            unresolved: str | None = None
            try:
                node = kube.call(kube.core.read_node, nt.name)
            except ApiUnreachable as exc:
                node, unresolved = {}, str(exc)
        return CordonData(
            node=nt.name,
            uid=_meta(node).get("uid"),
            was_unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
            resource_version=_meta(node).get("resourceVersion"),
            conn=conn,
            server=server,
            unresolved=unresolved,
        )

    def recorded_args(self, ask: Ask, data: CordonData) -> Mapping[str, Any]:
        return _absolute_args(ask, data.conn)

    def identities(self, record: RevertRecord, data: CordonData) -> tuple[str, ...]:
        """The node by uid (``k8s:node:<uid>``)."""
        return (identity("node", data.uid, server=data.server, namespace=None, name=data.node),)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: CordonData) -> None:
        _unreached(data, record.target)
        try:
            now = _unschedulable(data, record.target)
        except TargetNotFound as exc:
            raise _changed(str(exc), record.target) from exc
        if now != data.was_unschedulable:
            raise _changed(f"node {data.node} changed cordon state", record.target)

    def needs_watchdog(self, record: RevertRecord, data: CordonData) -> bool:
        return not data.was_unschedulable  # already cordoned: nothing to apply, nothing to lease

    def apply(self, ctx: DriverContext, record: RevertRecord, data: CordonData) -> CordonData:
        if data.was_unschedulable:
            return data
        body = _patch({"unschedulable": True}, data.uid, data.resource_version)
        with _kube(data.conn, record.target) as kube:
            kube.call(kube.core.patch_node, data.node, body, refused=True)  # a refusal: not applied
        return data

    def undo(self, ctx: DriverContext, record: RevertRecord, data: CordonData) -> str:
        if data.unresolved:
            return _NOTHING
        if data.was_unschedulable:
            return f"node {data.node} was cordoned before the fault; left cordoned"
        with _kube(data.conn, record.target) as kube:
            try:
                _same(kube.call(kube.core.read_node, data.node), data.uid, record.target)
                # null removes the field, as `kubectl uncordon` does
                kube.call(kube.core.patch_node, data.node, _patch({"unschedulable": None}, data.uid))
            except TargetNotFound as exc:
                return f"node {data.node} no longer exists ({exc}); nothing to restore"
        return f"node {data.node} uncordoned"

    def residue(self, ctx: DriverContext, record: RevertRecord, data: CordonData) -> list[str]:
        if data.unresolved:
            return []
        try:
            now = _unschedulable(data, record.target)
        except TargetNotFound:
            return []
        if now != data.was_unschedulable:
            state = "cordoned" if now else "schedulable"
            return [f"node {data.node} is {state}, unlike before the fault"]
        return []


def _unschedulable(data: CordonData, target: str) -> bool:
    """Whether the node the fault planned on is cordoned (TargetNotFound: it is gone,
    or another node took its name)."""
    with _kube(data.conn, target) as kube:
        node = _same(kube.call(kube.core.read_node, data.node), data.uid, target)
    return bool((node.get("spec") or {}).get("unschedulable"))


def _same(obj: dict[str, Any], uid: str | None, target: str) -> dict[str, Any]:
    """``obj`` if it is the object the fault was planned on (same uid); TargetNotFound
    when another object now has its name (deleted and recreated): that one is another
    identity, never touched by this fault's revert."""
    now = _meta(obj).get("uid")
    if uid and now and now != uid:
        meta = _meta(obj)
        name = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
        raise TargetNotFound(
            f"{name} is another object now (uid {now}; the fault's was {uid})", driver=NAME, target=target
        )
    return obj


def _patch(spec: dict[str, Any], uid: str | None, resource_version: str | None = None) -> dict[str, Any]:
    """A merge patch of ``spec`` that only the planned object accepts: the uid is
    immutable, so a real API server refuses (422) a patch carrying another object's uid;
    a ``resource_version`` also refuses (409) one changed since it was read."""
    meta = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
    return {"spec": spec, "metadata": meta} if meta else {"spec": spec}


def _recovery(kube: Kube, target: str, data: DeleteData) -> tuple[list[str], list[dict[str, Any]]]:
    """(residue, ready non-victim matching pods) as the cluster shows them now."""
    pt = parse_pod_target(target)
    fields = parse_field_selector(data.field_selector) if data.field_selector else ()
    pods = kube.pods(data.namespace, data.selector, data.field_selector)
    victims = {(v.name, v.uid) for v in data.victims}
    residue = [
        f"deleted pod {_meta(p).get('name')} still present (terminating)"
        for p in pods
        if (_meta(p).get("name"), _meta(p).get("uid")) in victims or (_meta(p).get("name"), None) in victims
    ]
    ready = [
        p
        for p in _matching(pods, pt, fields)
        if is_ready(p) and (_meta(p).get("name"), _meta(p).get("uid")) not in victims
    ]
    if len(ready) < data.baseline_ready:
        residue.append(f"{len(ready)} Ready pods match, {data.baseline_ready} were Ready before the fault")
    return residue, ready


def _ttr_from_conditions(ready: Sequence[dict[str, Any]], baseline: int, since: float) -> float | None:
    if baseline == 0:
        return 0.0
    times = [_parse_time((_ready_condition(p) or {}).get("lastTransitionTime")) for p in ready]
    known = sorted(t for t in times if t is not None)
    if len(known) < baseline:
        return None
    return max(0.0, known[baseline - 1] - since)


# --- the driver ---------------------------------------------------------------------------------

_CONN_PARAMS = (
    Param(name="kubeconfig", type=str, help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config)"),
    Param(name="context", type=str, help="kubeconfig context (default: its current-context)"),
    Param(name="in_cluster", type=bool, help="use the pod's service account", default=False),
    Param(
        name="request_timeout",
        type=(int, float, str),
        help="timeout of each API request",
        default="10s",
        duration=True,
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="delete_pods",
        kind=Kind.FAULT,
        summary="delete pods picked from a label selector; revert waits for Ready replacements",
        lease=LeaseKind.NONE,
        params=(
            *SELECTION_PARAMS,
            Param(name="field_selector", type=str, help="e.g. status.phase=Running"),
            Param(
                name="grace_period",
                type=(int, float, str),
                help="termination grace period (default: the pod's own)",
                duration=True,
            ),
            Param(
                name="recover_timeout",
                type=(int, float, str),
                help="how long revert waits for Ready replacements",
                default="120s",
                duration=True,
            ),
            *_CONN_PARAMS,
        ),
    ),
    Operation(
        name="scale",
        kind=Kind.FAULT,
        summary="scale a deployment or statefulset; revert restores the exact previous replicas",
        params=(
            Param(name="replicas", type=int, help="replicas during the fault", required=True, minimum=0),
            *_CONN_PARAMS,
        ),
    ),
    Operation(
        name="cordon",
        kind=Kind.FAULT,
        summary="mark a node unschedulable; revert uncordons unless it was cordoned before",
        params=_CONN_PARAMS,
    ),
    Operation(
        name="ready_pods",
        kind=Kind.PROBE,
        summary="number of Ready pods matching a label selector (+ field selector)",
        params=(Param(name="field_selector", type=str, help="e.g. spec.nodeName=n1"), *_CONN_PARAMS),
    ),
    Operation(
        name="available_replicas",
        kind=Kind.PROBE,
        summary="status.availableReplicas of a deployment or statefulset",
        params=_CONN_PARAMS,
    ),
)

_TARGET_PARSERS: dict[str, Callable[[str], object]] = {
    "delete_pods": parse_pod_target,
    "ready_pods": parse_pod_target,
    "scale": parse_workload_target,
    "available_replicas": parse_workload_target,
    "cordon": parse_node_target,
}


class KubernetesDriver(FaultDriver):
    """Pods, workloads and nodes through the Kubernetes API. Stateless: all in the record."""

    name = NAME
    faults = (DeletePods, Scale, Cordon)
    summary = "Kubernetes: delete pods, scale workloads, cordon nodes; readiness probes"
    install_hint = INSTALL_HINT

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems: list[Problem] = []
        parser = _TARGET_PARSERS.get(op.name)
        if parser is not None:
            if not target:
                problems.append(Problem(path="target", message=f"{op.name} needs a target"))
            else:
                try:
                    parser(target)
                except ValueError as exc:
                    problems.append(Problem(path="target", message=str(exc)))
        if isinstance(args.get("field_selector"), str):
            try:
                parse_field_selector(args["field_selector"])
            except ValueError as exc:
                problems.append(Problem(path="field_selector", message=str(exc)))
        if op.name == "delete_pods":
            problems += Selection.problems(args)
        return problems

    # -- probes ----------------------------------------------------------------------------------

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        a = validated(self, op, args, target, Kind.PROBE)
        assert target is not None  # validate() rejects a missing target
        conn = Conn.from_args(a)
        if op.name == "ready_pods":
            pt = parse_pod_target(target)
            fields = parse_field_selector(a["field_selector"]) if a.get("field_selector") else ()
            with _kube(conn, target) as kube:
                pods = kube.pods(pt.namespace, pt.selector, a.get("field_selector"))
            return sum(1 for p in _matching(pods, pt, fields) if is_ready(p))
        if op.name == "available_replicas":
            w = parse_workload_target(target)
            with _kube(conn, target) as kube:
                obj = kube.workload(w)
            status = obj.get("status") or {}
            return int(status.get("availableReplicas") or 0)
        raise DriverError(f"has no probe {op.name!r}", driver=self.name, target=target)
