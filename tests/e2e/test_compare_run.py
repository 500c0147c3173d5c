"""A comparative experiment against the lab, as a user runs it: the run, the console,
the journal (the guard's test and timing), and the HTML report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "lab-slow-replicas-vs-baseline.yaml"


def chaoslab(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def test_slow_replica_is_worse_than_the_baseline(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    run_dir = tmp_path / "run"
    proc = chaoslab("run", "--run-dir", str(run_dir), str(EXPERIMENT), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "SLO latency-vs-baseline [during] fail" in out
    assert "latency ≤ 1.2× baseline" in out
    assert "(non-critical)" in out
    assert "guard: mixture SPRT on the bad-request rate" in out and "false-abort risk 0.01" in out
    assert "guard: no bad request among" in out  # onset → detect → clean, on every run
    journal = json.loads((run_dir / "journal.json").read_text())
    cl = journal["chaoslab"]
    assert cl["verdict"] == "deviated" and "latency-vs-baseline [during]" in cl["reason"]
    during = next(r for r in cl["slo"] if (r["objective"], r["window"]) == ("latency-vs-baseline", "during"))
    assert during["detail"]["method"] == "mann-whitney + hodges-lehmann"
    assert during["lower"] > 1.2 and during["detail"]["p_value"] < 0.05
    assert not any(r["window"] == "baseline" for r in cl["slo"] if r["objective"].endswith("-vs-baseline"))
    assert cl["guard_test"]["risk"] == 0.01
    assert cl["guard_timing"]["tripped"] is False and cl["guard_timing"]["requests"] > 1000
    report = chaoslab(
        "report", "--html", str(tmp_path / "r.html"), str(run_dir / "journal.json"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert "latency ≤ 1.2× baseline" in page and "×" in page
    assert "(non-critical)" in page
    assert "guard: mixture SPRT on the bad-request rate" in page and "false-abort risk 0.01" in page
    assert "first bad request → clean" in page and "no bad request among" in page
