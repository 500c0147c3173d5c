"""The kubernetes driver against kmock's KubernetesEmulator, through the real client.

Each fault: inject → observable on the server → revert → check_clean; revert twice;
revert from a new process given only the record; the scale/cordon lease fires with no
runner. The emulator ignores label selectors, which lets us prove the driver never deletes
a pod whose labels do not match. See k8semu.py for what the emulator does not emulate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from chaoslab.drivers._proc import kill_watchdogs, watchdog_processes
from chaoslab.drivers.base import DriverContext, RevertRecord
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.watchdog import outcome_path
from chaoslab.errors import DriverError, InvalidInput, LedgerError, TargetNotFound
from chaoslab.safety.claims import ClaimingLedger
from chaoslab.safety.ledger import Ledger
from chaoslab.safety.owner import Owner
from tests.conftest import require, run_cli, wait_for_event, wait_until
from tests.e2e.test_identity_locks import experiment, holding, journal_reason, start
from tests.statepaths import env_state

HAVE = all(importlib.util.find_spec(m) is not None for m in ("kmock", "kubernetes"))
pytestmark = pytest.mark.timeout(120)

if HAVE:
    from chaoslab.drivers.kubernetes import KubernetesDriver
    from tests.integration.k8semu import CONTEXT, DEAD_CONTEXT, K8sEmulator, ReplicaController

ROOT = Path(__file__).resolve().parents[2]
WEB = {"app": "web"}


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[K8sEmulator]:
    require(HAVE, "kmock and kubernetes: pip install kmock 'chaoslab[kubernetes]'")
    with K8sEmulator(tmp_path) as server:
        yield server


@pytest.fixture
def driver() -> KubernetesDriver:
    return KubernetesDriver()


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[DriverContext]:
    state = tmp_path / "state"
    yield DriverContext(run_id="run-k8s", state_dir=state, seed=7, lab_dir=env_state().lab)
    # A test that failed before its revert must not leave a lease watchdog behind.
    for proc in watchdog_processes():
        try:
            argv = proc.cmdline()
        except psutil.Error:  # it ended (a zombie until reaped) since it was listed
            continue
        if str(state) in argv and "--fault-id" in argv:
            kill_watchdogs(argv[argv.index("--fault-id") + 1])


def _op(driver: KubernetesDriver, name: str) -> Any:
    op = driver.operation(name)
    assert op is not None
    return op


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _ready(driver: KubernetesDriver, ctx: DriverContext, emu: K8sEmulator, target: str) -> int:
    return int(driver.probe(ctx, _op(driver, "ready_pods"), emu.conn_args(), target))


def _revert_in_new_process(record: RevertRecord, tmp_path: Path) -> dict[str, Any]:
    """Revert and check from a fresh interpreter that has nothing but the record."""
    rec = tmp_path / "record.json"
    rec.write_text(record.to_json())
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from chaoslab.drivers.base import DriverContext, RevertRecord
        from chaoslab.drivers.kubernetes import KubernetesDriver
        record = RevertRecord.from_dict(json.loads(Path(sys.argv[1]).read_text()))
        from chaoslab.paths import StatePaths
        ctx = DriverContext(run_id="recover", state_dir=Path(sys.argv[2]), lab_dir=StatePaths.from_environment().lab)
        d = KubernetesDriver()
        result = d.revert(ctx, record)
        clean = d.check_clean(ctx, record)
        print(json.dumps({"reverted": result.reverted, "clean": clean.clean,
                          "residue": list(clean.residue)}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(rec), str(tmp_path / "other-state")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# --- delete_pods --------------------------------------------------------------------------


def test_delete_pods_revert_waits_for_ready_replacements(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    for i in range(3):
        emu.create_pod("shop", f"web-{i}", WEB)
    target = "k8s:shop/app=web"
    op = _op(driver, "delete_pods")
    record = driver.prepare(ctx, op, {**emu.conn_args(), "count": 1, "grace_period": "0s"}, target, None)
    assert len(record.data["victims"]) == 1
    assert record.data["baseline_ready"] == 3
    victim = record.data["victims"][0]["name"]

    with ReplicaController(emu, "shop", WEB, replicas=3, delay_s=0.5) as controller:
        record = driver.inject(ctx, record)
        assert record.data["deleted"] == [victim]
        assert victim not in emu.pods("shop")
        # observable before the controller heals it
        assert not driver.check_clean(ctx, record).clean

        result = driver.revert(ctx, record)
        assert result.reverted, result.detail
        assert result.time_to_recover_s is not None
        assert 0.3 <= result.time_to_recover_s < 10, result.time_to_recover_s
        assert len(controller.created) == 1

    assert _ready(driver, ctx, emu, target) == 3
    assert driver.check_clean(ctx, record).clean
    again = driver.revert(ctx, record)  # idempotent: already recovered
    assert again.reverted
    assert again.time_to_recover_s is None or again.time_to_recover_s >= 0


def test_delete_pods_never_deletes_a_pod_without_the_label(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_pod("shop", "web-1", WEB)
    emu.create_pod("shop", "web-2", WEB)
    emu.create_pod("shop", "db-1", {"app": "db"})
    emu.create_pod("shop", "web-canary", {"app": "web", "canary": "yes"})

    # The emulator is sloppy: it returns the db pod for app=web.
    from kubernetes import client

    with emu.api() as api:
        names = [
            p.metadata.name if p.metadata else ""
            for p in client.CoreV1Api(api).list_namespaced_pod("shop", label_selector="app=web").items
        ]
    assert "db-1" in names

    op = _op(driver, "delete_pods")
    args = {**emu.conn_args(), "all": True, "recover_timeout": "0.2s"}
    record = driver.prepare(ctx, op, args, "k8s:shop/app=web,!canary", None)
    assert sorted(v["name"] for v in record.data["victims"]) == ["web-1", "web-2"]
    driver.inject(ctx, record)
    assert sorted(emu.pods("shop")) == ["db-1", "web-canary"]
    # the selector is sent to the server as well (correct against a real API server)
    lists = [r for r in emu.requests() if r.params.get("labelSelector")]
    assert any(r.params["labelSelector"] == "app=web,!canary" for r in lists)


def test_delete_pods_field_selector_and_percentage(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    for i in range(4):
        emu.create_pod("shop", f"web-a{i}", WEB, node="node-a")
    for i in range(2):
        emu.create_pod("shop", f"web-b{i}", WEB, node="node-b")
    op = _op(driver, "delete_pods")
    args = {**emu.conn_args(), "percent": 50, "field_selector": "spec.nodeName=node-a"}
    record = driver.prepare(ctx, op, args, "k8s:shop/app=web", None)
    victims = [v["name"] for v in record.data["victims"]]
    assert len(victims) == 2 and all(v.startswith("web-a") for v in victims)
    driver.inject(ctx, record)
    assert {"web-b0", "web-b1"} <= set(emu.pods("shop"))
    assert len(emu.pods("shop")) == 4


def test_delete_pods_not_recovered_is_reported_not_hidden(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_pod("shop", "web-1", WEB)
    emu.create_pod("shop", "web-2", WEB)
    op = _op(driver, "delete_pods")
    args = {**emu.conn_args(), "recover_timeout": "0.5s"}
    record = driver.inject(ctx, driver.prepare(ctx, op, args, "k8s:shop/app=web", None))
    started = time.monotonic()
    result = driver.revert(ctx, record)  # no controller: nothing heals
    assert time.monotonic() - started >= 0.5
    assert not result.reverted
    report = driver.check_clean(ctx, record)
    assert not report.clean
    assert any("1 Ready pods match, 2 were Ready" in r for r in report.residue)


def test_delete_pods_revert_from_a_new_process(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext, tmp_path: Path
) -> None:
    emu.create_pod("shop", "web-1", WEB)
    emu.create_pod("shop", "web-2", WEB)
    op = _op(driver, "delete_pods")
    record = driver.inject(ctx, driver.prepare(ctx, op, emu.conn_args(), "k8s:shop/app=web", None))
    with ReplicaController(emu, "shop", WEB, replicas=2, delay_s=0.3):
        out = _revert_in_new_process(record, tmp_path)
    assert out == {"reverted": True, "clean": True, "residue": []}


# --- scale --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deployment", "statefulset"])
def test_scale_restores_exact_previous_replicas(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext, kind: str
) -> None:
    emu.create_workload(kind, "shop", "web", replicas=3)
    op = _op(driver, "scale")
    record = driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 0}, f"k8s:shop/{kind}/web", 60)
    assert record.data["previous_replicas"] == 3
    assert emu.workload(kind, "shop", "web")["spec"]["replicas"] == 3  # prepare touched nothing

    record = driver.inject(ctx, record)
    pid = record.data["watchdog"]["pid"]
    assert emu.workload(kind, "shop", "web")["spec"]["replicas"] == 0
    assert _alive(pid)
    dirty = driver.check_clean(ctx, record)
    assert not dirty.clean and any("has 0 replicas, was 3" in r for r in dirty.residue)

    assert driver.revert(ctx, record).reverted
    assert emu.workload(kind, "shop", "web")["spec"]["replicas"] == 3
    assert not _alive(pid)
    assert driver.check_clean(ctx, record).clean
    assert driver.revert(ctx, record).reverted  # twice
    assert driver.check_clean(ctx, record).clean


def test_scale_lease_reverts_with_no_runner(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_workload("deployment", "shop", "api", replicas=4)
    op = _op(driver, "scale")
    record = driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 1}, "k8s:shop/deployment/api", 1.5)
    record = driver.inject(ctx, record)
    assert emu.workload("deployment", "shop", "api")["spec"]["replicas"] == 1
    # nobody calls revert: the detached watchdog must restore 4 at lease end
    wait_until(
        lambda: emu.workload("deployment", "shop", "api")["spec"]["replicas"] == 4,
        timeout_s=15,
        interval_s=0.05,
        what="the watchdog to restore 4 replicas",
    )
    wait_until(
        lambda: not _alive(record.data["watchdog"]["pid"]),
        timeout_s=5,
        interval_s=0.05,
        what="the watchdog to exit",
    )
    assert driver.check_clean(ctx, record).clean
    outcome = json.loads(outcome_path(ctx.state_dir, record.fault_id).read_text())
    assert outcome["reverted"] is True and outcome["clean"] is True, outcome


def test_scale_revert_from_a_new_process(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext, tmp_path: Path
) -> None:
    emu.create_workload("statefulset", "shop", "db", replicas=2)
    op = _op(driver, "scale")
    record = driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 5}, "k8s:shop/sts/db", 60)
    record = driver.inject(ctx, record)
    assert emu.workload("statefulset", "shop", "db")["spec"]["replicas"] == 5
    out = _revert_in_new_process(record, tmp_path)
    assert out == {"reverted": True, "clean": True, "residue": []}
    assert emu.workload("statefulset", "shop", "db")["spec"]["replicas"] == 2
    wait_until(
        lambda: not _alive(record.data["watchdog"]["pid"]),
        timeout_s=5,
        interval_s=0.05,
        what="the watchdog to exit",
    )


def test_scale_refuses_when_changed_since_prepare(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_workload("deployment", "shop", "web", replicas=3)
    op = _op(driver, "scale")
    record = driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 0}, "k8s:shop/deployment/web", 60)
    from kubernetes import client

    with emu.api() as api:
        client.AppsV1Api(api).patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 6}})
    with pytest.raises(DriverError, match="changed from 3 to 6") as caught:
        driver.inject(ctx, record)
    assert caught.value.not_applied  # nothing reached the cluster: closed as "not applied"
    assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 6
    assert not watchdog_processes(record.fault_id)  # no watchdog left armed


# --- locks on what a fault really hits: uids ------------------------------------------------


def _shop_web(emu: K8sEmulator, replicas: int = 2) -> tuple[dict[str, Any], dict[str, Any]]:
    """Deployment shop/web, its ReplicaSet and its pods, owner references as Kubernetes sets them."""
    deployment = emu.create_workload("deployment", "shop", "web", replicas=replicas)
    rs = emu.create_replicaset("shop", "web-5d4f8", owner=deployment)
    for i in range(replicas):
        emu.create_pod("shop", f"web-5d4f8-{i}", WEB, owner=rs)
    return deployment, rs


def test_one_deployment_named_two_ways_by_two_runs_is_one_lock(emu: K8sEmulator, tmp_path: Path) -> None:
    """Run A scales shop/web by name and holds it. Run B deletes its pods through a label
    selector, run C scales it as ``deploy/${w}``: both hit A's deployment, so both are
    refused (exit 5) on its uid, and nothing of theirs reaches the cluster."""
    deployment, _rs = _shop_web(emu)
    uid = deployment["metadata"]["uid"]
    conn = emu.conn_args()
    release = tmp_path / "release"

    def step(do: str, target: str, duration: str = "", **args: Any) -> str:
        held = {"duration": duration} if duration else {}
        return json.dumps({"do": do, "target": target, "with": {**args, **conn}, **held})

    by_name = holding(tmp_path, "a", step("kubernetes.scale", "k8s:shop/deployment/web", replicas=1), release)
    by_selector = experiment(
        tmp_path, "b", step("kubernetes.delete_pods", "k8s:shop/app=web", recover_timeout="1s")
    )
    by_var = experiment(
        tmp_path,
        "c",
        step("kubernetes.scale", "k8s:shop/deploy/${w}", "1s", replicas=0),
        "configuration: {w: web}\n",
    )
    first = start("run", "--run-dir", str(tmp_path / "ra"), str(by_name), cwd=tmp_path)
    try:
        wait_for_event(tmp_path / "ra" / "events.ndjson", "fault-injected", timeout_s=60)
        assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 1
        for name, exp in (("rb", by_selector), ("rc", by_var)):
            second = run_cli("run", "--run-dir", str(tmp_path / name), str(exp), cwd=tmp_path)
            assert "Traceback" not in second.stdout + second.stderr
            assert second.returncode == 5, second.stdout + second.stderr
            reason = journal_reason(tmp_path / name)
            assert "locked by" in reason and f"k8s:deployment:{uid}" in reason, reason
            assert "fault-injected" not in (tmp_path / name / "events.ndjson").read_text()
        assert sorted(emu.pods("shop")) == ["web-5d4f8-0", "web-5d4f8-1"]  # no pod was deleted
        assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 1  # C changed nothing
    finally:
        release.touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 2


def test_a_workload_recreated_under_its_name_is_another_identity(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    """The first fault's lock and revert concern the deployment it planned on; the one
    that took its name later is another lock, and the revert leaves it alone."""
    emu.create_workload("deployment", "shop", "web", replicas=3)
    op = _op(driver, "scale")
    first = driver.inject(
        ctx, driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 0}, "k8s:shop/deployment/web", 60)
    )
    emu.delete_workload("deployment", "shop", "web")
    again = emu.create_workload("deployment", "shop", "web", replicas=5)
    second = driver.prepare(ctx, op, {**emu.conn_args(), "replicas": 1}, "k8s:shop/deploy/web", 60)
    assert driver.identities(first) == (f"k8s:deployment:{first.data['uid']}",)
    assert driver.identities(second) == (f"k8s:deployment:{again['metadata']['uid']}",)

    result = driver.revert(ctx, first)  # nothing to restore: its deployment is gone
    assert result.reverted and "no longer exists" in result.detail, result.detail
    assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 5, "the new one untouched"
    assert driver.check_clean(ctx, first).clean
    assert not watchdog_processes(first.fault_id)


def test_an_open_entry_keyed_by_name_by_an_older_chaoslab_blocks_the_uid(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    """An entry written before the keys were uids (keys by name, no ``server`` in its
    data) is read, and re-keyed by the driver, so it still blocks the deployment."""
    deployment, _rs = _shop_web(emu)
    key = f"k8s:deployment:{deployment['metadata']['uid']}"
    scale = driver.prepare(
        ctx, _op(driver, "scale"), {**emu.conn_args(), "replicas": 1}, "k8s:shop/deployment/web", 60
    )
    old_data = {k: v for k, v in scale.data.items() if k not in ("server", "unresolved")}
    old = msgspec.structs.replace(scale, run_id="run-old", keys=("k8s:shop/deployment/web",), data=old_data)
    Ledger(env_state().ledger).open_entry(old, owner=Owner.current("run-old"))

    pods = driver.prepare(ctx, _op(driver, "delete_pods"), emu.conn_args(), "k8s:shop/app=web", None)
    new = msgspec.structs.replace(pods, run_id="run-new", keys=driver.identities(pods))
    assert key in new.keys
    registry = DriverRegistry(extra={"kubernetes": driver}, load_installed=False)
    with ClaimingLedger(
        "run-new",
        directory=env_state().ledger,
        locks_directory=env_state().locks,
        identities=lambda r: registry.get(r.driver).identities(r),
    ) as ledger:
        with pytest.raises(LedgerError, match=f"hits {key}"):
            ledger.claim(new)
    # Without the drivers' identities only the stamped name key is compared: no collision.
    Ledger(env_state().ledger).check_keys_clear(new.keys, "run-new")
    assert driver.check_clean(ctx, old).clean  # the old record decodes and is checked as before


# --- an API server that does not answer ------------------------------------------------------


def test_a_fault_planned_while_the_api_server_is_unreachable_is_not_applied(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    """Nobody listens where the context points: prepare resolves nothing (and touches
    nothing), the fault locks its cluster and name, and inject says "not applied" --
    never a fault left for recover to chase; recover of such a record contacts nobody."""
    emu.create_workload("deployment", "shop", "web", replicas=3)
    dead = {"kubeconfig": str(emu.kubeconfig), "context": DEAD_CONTEXT}
    for op, args, target in (
        ("scale", {"replicas": 0}, "k8s:shop/deployment/web"),
        ("cordon", {}, "k8s:node/node-1"),
        ("delete_pods", {}, "k8s:shop/app=web"),
    ):
        record = driver.prepare(ctx, _op(driver, op), {**dead, **args}, target, 60)
        assert "cannot reach the Kubernetes API" in record.data["unresolved"]
        (key,) = driver.identities(record)
        assert key.startswith("k8s:http://127.0.0.1:") and "/" in key.removeprefix("k8s:http://"), key
        with pytest.raises(DriverError, match="could not be reached when the fault was planned") as caught:
            driver.inject(ctx, record)
        assert caught.value.not_applied
        assert not watchdog_processes(record.fault_id)
        assert driver.revert(ctx, record).reverted
        assert driver.check_clean(ctx, record).clean
    assert emu.workload("deployment", "shop", "web")["spec"]["replicas"] == 3


def test_request_timeout_bounds_each_request(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    """A hung API server: each call gives up after request_timeout, not after the
    client's default retries re-sent it three more times (that took >= 4 x 1 s)."""
    emu.create_workload("deployment", "shop", "web", replicas=3)
    op = _op(driver, "available_replicas")
    with emu.frozen():
        started = time.monotonic()
        with pytest.raises(DriverError, match="cannot reach the Kubernetes API"):
            driver.probe(ctx, op, {**emu.conn_args(), "request_timeout": "1s"}, "k8s:shop/deploy/web")
        took = time.monotonic() - started
    assert took < 3.5, took


def test_a_relative_kubeconfig_is_recorded_absolute(
    emu: K8sEmulator,
    driver: KubernetesDriver,
    ctx: DriverContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu.create_node("node-1")
    monkeypatch.chdir(emu.kubeconfig.parent)
    record = driver.prepare(
        ctx, _op(driver, "cordon"), {"kubeconfig": "kubeconfig", "context": CONTEXT}, "k8s:node/node-1", 60
    )
    assert record.args["kubeconfig"] == record.data["conn"]["kubeconfig"] == str(emu.kubeconfig)


# --- cordon -------------------------------------------------------------------------------


def test_cordon_and_uncordon(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext, tmp_path: Path
) -> None:
    emu.create_node("node-1")
    op = _op(driver, "cordon")
    record = driver.prepare(ctx, op, emu.conn_args(), "k8s:node/node-1", 60)
    assert record.data["was_unschedulable"] is False
    assert driver.identities(record) == (f"k8s:node:{emu.node('node-1')['metadata']['uid']}",)
    record = driver.inject(ctx, record)
    assert emu.node("node-1")["spec"].get("unschedulable") is True
    assert any("cordoned" in r for r in driver.check_clean(ctx, record).residue)

    assert driver.revert(ctx, record).reverted
    assert not emu.node("node-1")["spec"].get("unschedulable")
    assert driver.check_clean(ctx, record).clean
    assert driver.revert(ctx, record).reverted
    assert not _alive(record.data["watchdog"]["pid"])

    # and once more, reverted from a new process with only the record
    record2 = driver.inject(ctx, driver.prepare(ctx, op, emu.conn_args(), "k8s:node/node-1", 60))
    assert emu.node("node-1")["spec"].get("unschedulable") is True
    assert _revert_in_new_process(record2, tmp_path) == {"reverted": True, "clean": True, "residue": []}
    assert not emu.node("node-1")["spec"].get("unschedulable")


def test_cordon_of_an_already_cordoned_node_leaves_it_cordoned(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_node("node-2", unschedulable=True)
    op = _op(driver, "cordon")
    record = driver.inject(ctx, driver.prepare(ctx, op, emu.conn_args(), "k8s:node/node-2", 60))
    assert record.data.get("watchdog") is None  # nothing to end, nothing leased
    assert driver.revert(ctx, record).reverted
    assert emu.node("node-2")["spec"].get("unschedulable") is True
    assert driver.check_clean(ctx, record).clean


# --- probes -------------------------------------------------------------------------------


def test_probes(emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext) -> None:
    emu.create_pod("shop", "web-1", WEB)
    emu.create_pod("shop", "web-2", WEB, ready=False)
    emu.create_pod("shop", "db-1", {"app": "db"})
    emu.create_pod("other", "web-x", WEB)
    assert _ready(driver, ctx, emu, "k8s:shop/app=web") == 1
    assert _ready(driver, ctx, emu, "shop/app in (web,db)") == 2
    emu.create_workload("deployment", "shop", "web", replicas=3)
    op = _op(driver, "available_replicas")
    assert driver.probe(ctx, op, emu.conn_args(), "k8s:shop/deploy/web") == 3


# --- nothing touched on bad input ---------------------------------------------------------


def test_bad_or_empty_targets_fail_before_anything(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext
) -> None:
    emu.create_pod("shop", "web-1", WEB)
    emu.create_pod("shop", "db-1", {"app": "db"})
    delete, scale, cordon = (_op(driver, n) for n in ("delete_pods", "scale", "cordon"))
    conn = emu.conn_args()
    seen = len(emu.requests())

    # matched nothing (though the sloppy server returned two pods)
    with pytest.raises(TargetNotFound, match="2 returned by the server, 0 truly matching"):
        driver.prepare(ctx, delete, conn, "k8s:shop/app=nope", None)
    with pytest.raises(TargetNotFound):
        driver.prepare(ctx, delete, {**conn, "field_selector": "status.phase=Pending"}, "shop/app=web", None)
    with pytest.raises(TargetNotFound):
        driver.prepare(ctx, scale, {**conn, "replicas": 1}, "k8s:shop/deployment/missing", 10)
    with pytest.raises(TargetNotFound):
        driver.prepare(ctx, cordon, conn, "k8s:node/missing", 10)

    # malformed input: InvalidInput, with every problem named
    for target in ("k8s:shop/", "k8s:shop/app=web=x", "k8s:shop/a b", "k8s:Shop_NS/app=web", "app=web"):
        with pytest.raises(InvalidInput):
            driver.prepare(ctx, delete, conn, target, None)
    with pytest.raises(InvalidInput, match="only one of count, percent, all"):
        driver.prepare(ctx, delete, {**conn, "count": 2, "all": True}, "k8s:shop/app=web", None)
    with pytest.raises(InvalidInput, match="percent"):
        driver.prepare(ctx, delete, {**conn, "percent": 150}, "k8s:shop/app=web", None)
    with pytest.raises(InvalidInput, match="cannot be selected by field"):
        driver.prepare(ctx, delete, {**conn, "field_selector": "spec.image=x"}, "k8s:shop/app=web", None)
    with pytest.raises(InvalidInput, match="deployment/NAME"):
        driver.prepare(ctx, scale, {**conn, "replicas": 1}, "k8s:shop/app=web", 10)
    with pytest.raises(InvalidInput, match="replicas"):
        driver.prepare(ctx, scale, conn, "k8s:shop/deployment/web", 10)

    methods = {str(r.method.value) for r in emu.requests()[seen:]}
    assert methods == {"GET"}  # reads only: nothing was written, deleted or patched
    assert sorted(emu.pods("shop")) == ["db-1", "web-1"]


def test_connection_uses_the_context_asked_for(
    emu: K8sEmulator, driver: KubernetesDriver, ctx: DriverContext, tmp_path: Path
) -> None:
    emu.create_pod("shop", "web-1", WEB)
    probe = _op(driver, "ready_pods")
    assert (
        driver.probe(ctx, probe, {"kubeconfig": str(emu.kubeconfig), "context": CONTEXT}, "shop/app=web") == 1
    )
    # the kubeconfig's current-context points at a closed port
    with pytest.raises(DriverError, match="cannot reach the Kubernetes API"):
        driver.probe(ctx, probe, {"kubeconfig": str(emu.kubeconfig)}, "shop/app=web")
    with pytest.raises(DriverError, match="cannot load kubeconfig"):
        driver.probe(ctx, probe, {"kubeconfig": str(emu.kubeconfig), "context": "nope"}, "shop/app=web")
    with pytest.raises(DriverError, match="no kubeconfig"):
        driver.probe(ctx, probe, {"kubeconfig": str(tmp_path / "absent")}, "shop/app=web")


def test_missing_client_gives_an_install_hint(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["kubernetes"] = None  # as if the extra were not installed
        from pathlib import Path
        from chaoslab.drivers.base import DriverContext
        from chaoslab.drivers.kubernetes import KubernetesDriver
        from chaoslab.errors import DriverError
        d = KubernetesDriver()
        try:
            d.probe(DriverContext(run_id="x", state_dir=Path("."), lab_dir=__import__("chaoslab.paths").paths.StatePaths.from_environment().lab), d.operation("ready_pods"),
                    {"kubeconfig": sys.argv[1]}, "shop/app=web")
        except DriverError as exc:
            print(exc)
        """
    )
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\n")
    out = subprocess.run([sys.executable, "-c", script, str(cfg)], capture_output=True, text=True, timeout=60)
    assert "pip install 'chaoslab[kubernetes]'" in out.stdout, out.stderr


# --- Chaos Toolkit's chaostoolkit-kubernetes against the same emulator ---------------------


def test_chaostoolkit_kubernetes_actions_work_against_the_emulator(emu: K8sEmulator, tmp_path: Path) -> None:
    require(importlib.util.find_spec("chaosk8s") is not None, "pip install chaostoolkit-kubernetes")
    emu.create_pod("ctk", "web-1", WEB)
    emu.create_pod("ctk", "web-2", WEB)
    # CTK-format activities run through chaoslib's python provider, in a fresh process
    # (chaosk8s configures the kubernetes client globally and never closes it).
    script = textwrap.dedent(
        """
        import json
        from chaoslib.provider.python import run_python_activity
        probe = {"type": "probe", "name": "pods-running",
                 "provider": {"type": "python", "module": "chaosk8s.pod.probes",
                              "func": "pods_in_phase",
                              "arguments": {"label_selector": "app=web", "ns": "ctk",
                                            "phase": "Running"}}}
        action = {"type": "action", "name": "kill-one",
                  "provider": {"type": "python", "module": "chaosk8s.pod.actions",
                               "func": "terminate_pods",
                               "arguments": {"label_selector": "app=web", "ns": "ctk",
                                             "qty": 1, "grace_period": 0}}}
        before = run_python_activity(probe, None, None)
        killed = run_python_activity(action, None, None)
        print(json.dumps({"before": before, "killed": killed}))
        """
    )
    env = {**os.environ, "KUBECONFIG": str(emu.kubeconfig), "KUBERNETES_CONTEXT": CONTEXT}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] is True
    assert len(result["killed"]) == 1
    assert set(emu.pods("ctk")) == {"web-1", "web-2"} - set(result["killed"])


@pytest.mark.parametrize(
    ("status", "refused", "not_applied"),
    [(409, True, True), (403, True, True), (422, True, True), (500, True, False), (409, False, False)],
)
def test_a_change_the_api_server_refuses_is_not_applied(
    status: int, refused: bool, not_applied: bool
) -> None:
    """The translation boundary: a fault's change answered with 4xx was not made; a 5xx
    (or a read) leaves that unknown, so the fault is reverted like any other."""
    require(HAVE, "kmock and kubernetes: pip install kmock 'chaoslab[kubernetes]'")
    from types import SimpleNamespace

    from kubernetes.client.exceptions import ApiException

    from chaoslab.drivers.kubernetes import Kube

    err = Kube._translate(
        SimpleNamespace(target="k8s:shop/deployment/web"),
        ApiException(status=status),
        "patch",
        refused=refused,
    )  # type: ignore[arg-type]
    assert err.not_applied is not_applied
    assert f"HTTP {status}" in str(err)
