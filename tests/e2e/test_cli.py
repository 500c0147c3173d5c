"""The CLI as a user runs it: subprocess, exit code, output, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from chaoslab import __version__
from tests.conftest import chaoslab

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.y*ml")) + sorted((ROOT / "experiments").glob("*.json"))


def test_version_and_help_list_exit_codes(tmp_path: Path) -> None:
    assert chaoslab("--version", cwd=tmp_path).stdout.strip().endswith(__version__)
    help_text = chaoslab("run", "--help", cwd=tmp_path).stdout
    for line in (
        "0   passed",
        "1   deviated",
        "2   invalid input",
        "3   aborted",
        "4   inconclusive",
        "5   error",
        "6   not clean",
        "130 interrupted",
    ):
        assert line in help_text


def test_drivers_lists_every_installed_driver_with_operations(tmp_path: Path) -> None:
    proc = chaoslab("drivers", "--output", "json", cwd=tmp_path)
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    listing = {d["name"]: d for d in doc["drivers"]}
    matrix = {row["operation"]: row for row in doc["operations"]}
    assert set(matrix["kill"]["platforms"]) == {"local", "docker", "ssh", "kubernetes"}
    assert matrix["kill"]["platforms"]["kubernetes"]["driver"] == "kubernetes.delete_pods"
    assert doc["platforms"]["docker"]["schemes"] == ["docker"]
    assert {"process", "proxy", "stress", "net", "docker", "ssh", "kubernetes"} <= set(listing)
    ops = {o["name"]: o for o in listing["process"]["operations"]}
    assert ops["kill"]["kind"] == "fault" and ops["kill"]["lease"] == "none"
    assert ops["suspend"]["lease"] == "target"
    assert ops["count"]["kind"] == "probe"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_shipped_experiments_are_valid(path: Path, tmp_path: Path) -> None:
    proc = chaoslab("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_plan_resolves_targets_and_touches_nothing(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        f = tmp_path / "exp.yaml"
        f.write_text(
            f"title: t\ndescription: d\nmethod:\n"
            f"  - {{do: process.suspend, target: 'pid:{sleeper.pid}', duration: 5s}}\n"
        )
        proc = chaoslab("plan", "--output", "json", str(f), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        plan = json.loads(proc.stdout)
        step = plan["method"][0]
        assert step["driver"] == "process.suspend"
        assert str(sleeper.pid) in json.dumps(step["resolved"])
        assert step["lease"] == "10s on the target"
        assert psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED
        assert not (tmp_path / "chaoslab-runs").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_plan_refuses_a_target_matching_nothing(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        "title: t\ndescription: d\nmethod:\n  - {do: process.kill, target: 'pattern:^no-such-proc-zz$'}\n"
    )
    proc = chaoslab("plan", str(f), cwd=tmp_path)
    assert proc.returncode == 5
    assert "no-such-proc-zz" in proc.stderr


def test_main_job_kill_replica_passes_against_the_lab(tmp_path: Path) -> None:
    proc = chaoslab(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(ROOT / "experiments" / "lab-kill-replica.yaml"),
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["verdict"] == "passed"
    slo = {(r["objective"], r["window"]): r for r in result["slo"]}
    assert slo[("availability", "during")]["verdict"] == "pass"
    assert slo[("availability", "during")]["samples"] > 300
    assert slo[("heal", "during")]["verdict"] == "pass"
    journal = json.loads(Path(result["journal"]).read_text())
    reverted = [f for f in journal["chaoslab"]["faults"] if f["kind"] == "fault-reverted"]
    assert reverted and reverted[0]["time_to_recover_s"] is not None
    assert journal["chaoslab"]["series"][0]["series"]
    # the lab came up for the run and went down after it
    status = chaoslab("lab", "status", "--output", "json", cwd=tmp_path)
    assert json.loads(status.stdout)["running"] is False


def test_slow_replica_deviates_on_p99(tmp_path: Path) -> None:
    proc = chaoslab(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(ROOT / "experiments" / "lab-slow-replica.yaml"),
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert result["verdict"] == "deviated"
    failed = [r for r in result["slo"] if r["verdict"] == "fail"]
    assert [(r["objective"], r["window"]) for r in failed] == [("p99-latency", "during")]
    assert failed[0]["estimate"] > 250
