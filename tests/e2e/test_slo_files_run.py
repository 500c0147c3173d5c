"""SLO files as steady state and as a budget gate, with a real Prometheus scraping the lab."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chaoslab.lab import control
from tests.conftest import require, run_cli, wait_until
from tests.integration import promfixture
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]
SLO_FILE = ROOT / "experiments" / "slos" / "lab-availability.yaml"


@pytest.fixture
def lab_with_prometheus(chaoslab_home: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    require(promfixture.available(), "prometheus and promtool (Debian package prometheus)")
    state = control.up(3, 1.0, env_state().home)
    try:
        ports = [c.port for c in state.components.values() if c.kind == "replica"]
        with promfixture.running_prometheus([f"127.0.0.1:{p}" for p in ports], tmp_path / "prom") as url:
            lb = control.lb_url(state)
            send(lb, "/", 300)  # history for the budget: "no data" is a refusal, rightly
            wait_for_count(url, 'sum(lab_requests_total{code="200",path="/"})', 300)
            # The gate reads increase() over its windows, down to 10 s: that needs two
            # samples of a series inside the window. On a loaded machine the first scrape
            # can come after all 300 requests, leaving one sample: "no data", a refusal.
            wait_for_count(url, 'min(count_over_time(lab_requests_total{path="/"}[10s]))', 2)
            yield url, lb
    finally:
        control.down(env_state().home)


def send(lb: str, path: str, n: int) -> None:
    with httpx.Client(timeout=5) as client:
        for _ in range(n):  # bounded
            client.get(lb.rstrip("/") + path)


def query_value(prometheus: str, query: str) -> float | None:
    """The value of an instant query with one result, or None while there is none."""
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()
    return float(r["data"]["result"][0]["value"][1]) if r["data"]["result"] else None


def wait_for_count(prometheus: str, query: str, at_least: float, timeout_s: float = 30) -> None:
    wait_until(
        lambda: (query_value(prometheus, query) or 0.0) >= at_least,
        timeout_s=timeout_s,
        interval_s=0.5,
        what=f"Prometheus to see {query} >= {at_least}",
    )


def experiment(tmp: Path, prometheus: str) -> Path:
    f = tmp / "exp.yaml"
    f.write_text(
        f"""
title: kill a replica, judged by the lab's SLO file
description: the OpenSLO availability objective is steady state; the run may spend half its budget
lab: true
slo_files: ["{SLO_FILE}"]
prometheus: {prometheus}
allowance: {{budget_share: 0.5}}
load: {{target: "lab:lb", rate: 150}}
windows: {{baseline: 6s, recovery: 2s, after: 6s}}
slo:
  - {{name: availability, sli: availability, objective: 0.99}}
method:
  - {{do: process.kill, target: "lab:replica-2", with: {{timeout: 20s}}, pauses: {{after: 5}}}}
"""
    )
    return f


def chaoslab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = run_cli(*args, cwd=cwd, timeout=180)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_slo_file_is_steady_state_and_budget_gate_passes(
    lab_with_prometheus: tuple[str, str], tmp_path: Path
) -> None:
    prometheus, _ = lab_with_prometheus
    proc = chaoslab(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(experiment(tmp_path, prometheus)),
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert "journal" in result, (result, proc.stderr[-2000:])
    journal = json.loads(Path(result["journal"]).read_text())
    gate = journal["chaoslab"]["budget_gate"]
    assert gate["allowed"] and not gate["refused"]
    assert gate["allowances"][0]["slo"] == "lab-availability"
    objectives = {(r["objective"], r["window"]): r for r in journal["chaoslab"]["slo"]}
    prom = objectives[("lab-availability", "baseline")]
    assert prom["samples"] > 300, prom  # counted by Prometheus from the lab's own metrics
    assert prom["verdict"] == "pass"
    assert ("lab-availability", "during") in objectives
    assert objectives[("lab-availability", "during")]["samples"] > 300
    assert proc.returncode == 0, proc.stderr


def test_exhausted_budget_refuses_the_run_with_numbers(
    lab_with_prometheus: tuple[str, str], tmp_path: Path
) -> None:
    prometheus, lb = lab_with_prometheus
    # Requests the SLO counts as bad (404). First create the series and let Prometheus
    # scrape it: increase() cannot count what a counter held before its first sample.
    query = 'sum(lab_requests_total{code="404"})'
    send(lb, "/missing-page", 10)
    wait_for_count(prometheus, query, 10)
    seen = time.time()
    # One more scrape of every 404 series at that value (a sample newer than `seen`).
    wait_until(
        lambda: (query_value(prometheus, 'min(timestamp(lab_requests_total{code="404"}))') or 0.0) > seen,
        timeout_s=30,
        interval_s=0.2,
        what="one more scrape of the 404 counters",
    )
    send(lb, "/missing-page", 300)
    wait_for_count(prometheus, query, 310)
    exp = experiment(tmp_path, prometheus)
    proc = chaoslab("run", "--run-dir", str(tmp_path / "run"), str(exp), cwd=tmp_path)
    assert proc.returncode == 5
    assert "error budget exhausted" in proc.stderr and "--ignore-budget" in proc.stderr
    assert not (tmp_path / "run" / "events.ndjson").exists(), "a refused run starts nothing"
