"""``chaoslab gate`` as a pipeline runs it, against the lab.

Each experiment is a few seconds of 100 requests/s through the lab's balancer with
latency added on replica-1 by the fault proxy:

- ``mild``      20 ms, objective p95 ≤ 500 ms            → passed
- ``slower``    200 ms, objective p95 ≤ 500 ms           → passed, but p95 rose ~10×
- ``harsh``     300 ms, objective p95 ≤ 100 ms           → deviated

Scenarios: a missing baseline (pass, reported as "no baseline", baseline written), a
regression against that stored baseline, a key failure, ``--require-baseline`` with no
baseline, and an invalid suite. Each checks the exit code and the JUnit file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoslab.gate import GateExit
from chaoslab.lab import control
from chaoslab.paths import lab_dir
from tests.conftest import wait_for_event

BOOT = (
    "from chaoslab.cli import main; from chaoslab.gate.cli import register; "
    "'gate' in main.commands or register(main); main(prog_name='chaoslab')"
)

EXPERIMENT = """
title: {title}
description: latency on replica-1
lab: true
load: {{target: "lab:lb", path: /, rate: 100, timeout: 2s}}
windows: {{baseline: 1s, after: 1s}}
slo:
  - {{name: availability, sli: availability, objective: 0.9}}
  - {{name: p95-latency, sli: latency, percentile: 95, threshold: {threshold}}}
method:
  - name: slow-replica-1
    do: proxy.latency
    target: lab:replica-1
    with: {{latency: {latency}}}
    duration: 1500ms
"""


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("gate-lab")
    control.up(3, 1.0, base)
    try:
        yield base
    finally:
        control.down(base)
        assert not lab_dir(base).exists()


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("experiments")
    for name, latency, threshold in (
        ("mild", "20ms", "500ms"),
        ("slower", "200ms", "500ms"),
        ("harsh", "300ms", "100ms"),
    ):
        (d / f"{name}.yaml").write_text(EXPERIMENT.format(title=name, latency=latency, threshold=threshold))
    return d


def suite(path: Path, name: str, entries: list[dict[str, Any]], **extra: Any) -> Path:
    path.write_text(json.dumps({"name": name, "experiments": entries, **extra}))
    return path


def gate(lab_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "gate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CHAOSLAB_HOME": str(lab_home)},
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def cases(junit: Path) -> dict[str, ET.Element]:
    root = ET.parse(junit).getroot()
    return {f"{s.get('name')}/{c.get('name')}": c for s in root.iter("testsuite") for c in s.iter("testcase")}


def test_missing_baseline_then_regression_against_it(
    lab_home: Path, experiments: Path, tmp_path: Path
) -> None:
    baseline = tmp_path / "ci-cache" / "baseline.json"
    out = tmp_path / "gate-1"
    spec = suite(
        tmp_path / "suite.json",
        "checkout",
        [
            {"path": str(experiments / "mild.yaml"), "name": "slow-replica", "weight": 2, "key": True},
            {"path": str(experiments / "mild.yaml"), "name": "slow-replica-again"},
        ],
    )
    proc = gate(
        lab_home,
        "--suite",
        str(spec),
        "--baseline",
        str(baseline),
        "--output-dir",
        str(out),
        "--metrics-file",
        str(out / "gate.prom"),
    )
    assert proc.returncode == GateExit.PASS, proc.stderr
    assert "no baseline" in proc.stderr
    got = cases(out / "junit.xml")
    assert set(got) == {
        "checkout/slow-replica",
        "checkout/slow-replica-again",
        "checkout baseline/compared with the last passing gate",
    }
    assert all(len(c) == 1 and c[0].tag == "system-out" for k, c in got.items() if k.startswith("checkout/"))
    skipped = got["checkout baseline/compared with the last passing gate"].find("skipped")
    assert skipped is not None and "no baseline" in (skipped.get("message") or "")
    summary = (out / "summary.md").read_text()
    assert "**pass**" in summary and "no baseline" in summary and "Resilience score 100" in summary
    assert (out / "runs" / "01-slow-replica" / "report.html").is_file()
    assert 'chaoslab_gate_score{suite="checkout"} 100.0' in (out / "gate.prom").read_text()
    stored = json.loads(baseline.read_text())
    assert stored["score"] == 100.0 and "p95-latency[during]" in stored["experiments"]["slow-replica"]["sli"]

    # Same suite name, same entry name, 10× the latency: the SLO still holds, the SLI regressed.
    out2 = tmp_path / "gate-2"
    spec2 = suite(
        tmp_path / "suite2.json",
        "checkout",
        [
            {"path": str(experiments / "slower.yaml"), "name": "slow-replica", "weight": 2, "key": True},
        ],
    )
    proc = gate(lab_home, "--suite", str(spec2), "--baseline", str(baseline), "--output-dir", str(out2))
    assert proc.returncode == GateExit.REGRESSION, proc.stderr
    result = json.loads((out2 / "gate.json").read_text())
    assert result["score"] == 100.0 and result["baseline"]["status"] == "regression"
    assert any("slow-replica: p95-latency[during]" in r for r in result["baseline"]["regressions"])
    got = cases(out2 / "junit.xml")
    assert got["checkout/slow-replica"].find("failure") is None  # the experiment itself passed
    failure = got["checkout baseline/compared with the last passing gate"].find("failure")
    assert failure is not None and "p95-latency[during]" in (failure.text or "")
    # A regression is not a pass: the baseline stays the last passing gate.
    assert json.loads(baseline.read_text())["created"] == stored["created"]


def test_key_failure_fails_the_gate_whatever_the_score(
    lab_home: Path, experiments: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gate"
    spec = suite(
        tmp_path / "suite.json",
        "key-failure",
        [
            {"path": str(experiments / "harsh.yaml"), "name": "harsh", "weight": 1, "key": True},
            {"path": str(experiments / "mild.yaml"), "name": "mild", "weight": 20},
        ],
        thresholds={"pass": 90, "warn": 70},
    )
    proc = gate(lab_home, "--suite", str(spec), "--output-dir", str(out))
    assert proc.returncode == GateExit.FAIL, proc.stderr
    result = json.loads((out / "gate.json").read_text())
    assert result["score"] == pytest.approx(95.2)  # 20/21 would pass on score alone
    assert "key experiment failed: harsh deviated" in result["reason"]
    got = cases(out / "junit.xml")
    failure = got["key-failure/harsh"].find("failure")
    assert failure is not None and failure.get("type") == "deviated"
    message = failure.get("message") or ""
    assert "(key experiment)" in message
    assert "p95-latency [during]: fail — estimate" in message and "ms, bounds [" in message
    assert "samples; target p95 ≤ 100ms" in message
    assert got["key-failure/mild"].find("failure") is None
    # A failing gate never becomes the baseline.
    assert not (lab_home / "gate" / "key-failure" / "baseline.json").exists()


def test_require_baseline_without_one_is_inconclusive(
    lab_home: Path, experiments: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gate"
    proc = gate(
        lab_home,
        str(experiments / "mild.yaml"),
        "--name",
        "fresh",
        "--require-baseline",
        "--output-dir",
        str(out),
        "--junit",
        str(tmp_path / "reports" / "junit.xml"),
    )
    assert proc.returncode == GateExit.INCONCLUSIVE, proc.stderr
    assert "no baseline" in proc.stderr
    got = cases(tmp_path / "reports" / "junit.xml")
    assert got["fresh/mild"].find("failure") is None
    assert got["fresh baseline/compared with the last passing gate"].find("skipped") is not None
    assert not (lab_home / "gate" / "fresh" / "baseline.json").exists()


def test_invalid_suite_runs_nothing_and_still_writes_junit(
    lab_home: Path, experiments: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "title: broken\ndescription: x\nmethod:\n  - do: proxy.nosuchop\n    target: lab:replica-1\n"
    )
    out = tmp_path / "gate"
    spec = suite(
        tmp_path / "suite.json", "invalid", [{"path": str(experiments / "mild.yaml")}, {"path": str(broken)}]
    )
    proc = gate(lab_home, "--suite", str(spec), "--output-dir", str(out))
    assert proc.returncode == GateExit.INVALID_INPUT
    assert "nosuchop" in proc.stderr
    assert not (out / "runs").exists()
    error = cases(out / "junit.xml")["invalid/suite is valid"].find("error")
    assert error is not None and error.get("type") == "invalid-input"
    assert "invalid input" in (out / "summary.md").read_text()


def test_help_documents_exit_codes() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "gate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for code in GateExit:
        assert f"  {int(code)} " in proc.stdout, code


def test_sigterm_reverts_the_running_experiment_and_reports_interrupted(
    lab_home: Path, experiments: Path, tmp_path: Path
) -> None:
    import signal

    out = tmp_path / "gate"
    spec = suite(
        tmp_path / "suite.json",
        "interrupted",
        [
            {"path": str(experiments / "mild.yaml"), "name": "first"},
            {"path": str(experiments / "mild.yaml"), "name": "second"},
        ],
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", BOOT, "gate", "--suite", str(spec), "--output-dir", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHAOSLAB_HOME": str(lab_home)},
    )
    events = out / "runs" / "01-first" / "events.ndjson"
    try:
        wait_for_event(events, "fault-injected", timeout_s=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == GateExit.INTERRUPTED, err
    assert "Traceback" not in err
    journal = json.loads((out / "runs" / "01-first" / "journal.json").read_text())
    kinds = [f["kind"] for f in journal["chaoslab"]["faults"]]
    assert "fault-reverted" in kinds
    assert all(f["clean"] for f in journal["chaoslab"]["faults"] if f["kind"] == "clean-checked")
    got = cases(out / "junit.xml")
    for name in ("first", "second"):
        error = got[f"interrupted/{name}"].find("error")
        assert error is not None and error.get("type") == "interrupted"
