"""A real run's journal, read by Chaos Toolkit's own tools: its ``experiment`` section is
a valid Chaos Toolkit experiment (chaostoolkit-lib's validator) and ``chaos report``
(chaostoolkit-reporting, pandoc from Debian) renders it — for an experiment written in
chaoslab's concise format and for one written in Chaos Toolkit's format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require, run_cli

BIN = Path(sys.executable).parent

# A Chaos Toolkit-format experiment against the lab: CTK's three provider types, a
# rollback, and chaoslab's lab/load keys beside them (they go under "chaoslab").
CTK_LAB = {
    "title": "CTK-format lab run for chaos report",
    "description": "Chaos Toolkit's format, run by chaoslab against the lab.",
    "tags": ["ctk", "lab"],
    "lab": True,
    "load": {"target": "lab:lb", "rate": 50},
    "windows": {"baseline": 2, "after": 1},
    "steady-state-hypothesis": {
        "title": "the shell works",
        "probes": [
            {
                "type": "probe",
                "name": "true-exits-0",
                "tolerance": 0,
                "provider": {"type": "process", "path": "true"},
            }
        ],
    },
    "method": [
        {
            "type": "action",
            "name": "pause-a-second",
            "provider": {"type": "process", "path": "sleep", "arguments": "1"},
        },
        {
            "type": "probe",
            "name": "root-exists",
            "provider": {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": "/"}},
        },
    ],
    "rollbacks": [
        {"type": "action", "name": "nothing-to-undo", "provider": {"type": "process", "path": "true"}}
    ],
}


def _run(experiment: str, tmp_path: Path) -> dict[str, Any]:
    if experiment == "ctk":
        path = tmp_path / "ctk-lab.json"
        path.write_text(json.dumps(CTK_LAB), "utf-8")
    else:
        path = ROOT / "experiments" / experiment
    proc = run_cli(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(path),
        cwd=tmp_path,
        timeout=180,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verdict"] in ("passed", "deviated"), proc.stderr
    journal: dict[str, Any] = json.loads(Path(result["journal"]).read_text("utf-8"))
    return journal


def _chaos_report(journal_path: Path, out: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    chaos = BIN / "chaos"
    require(chaos.exists(), "the chaos CLI (chaostoolkit, a dev dependency)")
    require(shutil.which("pandoc") is not None, "pandoc (Debian package pandoc)")
    return subprocess.run(
        [str(chaos), "--no-version-check", "report", f"--export-format={fmt}", str(journal_path), str(out)],
        cwd=out.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _assert_valid_ctk(experiment: dict[str, Any]) -> None:
    from chaoslib.activity import ensure_activity_is_valid
    from chaoslib.experiment import ensure_experiment_is_valid

    ensure_experiment_is_valid(json.loads(json.dumps(experiment)))
    hypothesis = experiment.get("steady-state-hypothesis") or {}
    for activity in [*hypothesis.get("probes", []), *experiment["method"], *experiment.get("rollbacks", [])]:
        ensure_activity_is_valid(activity)
        assert activity["type"] in ("probe", "action")
        assert activity["provider"]["type"] in ("python", "process", "http")


@pytest.mark.parametrize(
    ("experiment", "kind"),
    [("lab-slow-replica.yaml", "concise"), ("ctk", "ctk")],
)
def test_chaos_report_renders_a_real_journal(experiment: str, kind: str, tmp_path: Path) -> None:
    pytest.importorskip("chaosreport", reason="pip install chaostoolkit-reporting")
    journal = _run(experiment, tmp_path)
    exp = journal["experiment"]
    _assert_valid_ctk(exp)
    for run in journal["run"]:  # what chaos report reads of every run entry
        assert run["activity"]["type"] in ("probe", "action")
        assert run["activity"]["provider"]["type"] in ("python", "process", "http")
    if kind == "concise":
        step = exp["method"][0]
        assert step["provider"]["module"] == "chaoslab.drivers.ctk"
        assert step["chaoslab"]["do"] == "proxy.latency" and step["chaoslab"]["target"] == "lab:replica-1"
        assert exp["chaoslab"]["slo"][1]["name"] == "p99-latency"  # kept as written
    else:
        assert [a["name"] for a in exp["method"]] == ["pause-a-second", "root-exists"]
        assert exp["rollbacks"][0]["name"] == "nothing-to-undo"
        assert exp["chaoslab"]["lab"] is True and exp["chaoslab"]["load"]["rate"] == 50
        assert [r["activity"]["name"] for r in journal["run"]] == ["pause-a-second", "root-exists"]
    journal_path = tmp_path / "run" / "journal.json"
    for fmt, name in (("markdown", "report.md"), ("html5", "report.html")):
        out = tmp_path / name
        proc = _chaos_report(journal_path, out, fmt)
        assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        text = out.read_text("utf-8")
        assert exp["title"] in text
        assert all(a["name"] in text for a in exp["method"])
    # chaoslab's own report still reads its fields from the same journal.
    proc = run_cli("report", str(journal_path), "--markdown", str(tmp_path / "pm.md"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert exp["title"] in (tmp_path / "pm.md").read_text("utf-8")
