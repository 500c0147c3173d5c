"""``chaoslab gate`` on invalid input: nothing runs, and every promised output is still
there (JUnit, summary, gate.json; one JSON result on stdout with --output json)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_invalid_suite_writes_gate_json_and_prints_one_json_result(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: broken\ndescription: x\nmethod:\n  - do: proxy.nosuchop\n    target: lab:x\n")
    out = tmp_path / "gate"
    proc = run_cli(
        "gate", str(broken), "--name", "ci", "--output-dir", str(out), "--output", "json", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    printed = json.loads(proc.stdout)  # exactly one JSON document on stdout
    written = json.loads((out / "gate.json").read_text())
    assert printed == written
    assert printed["result"] == "invalid-input" and printed["exit_code"] == 2
    assert printed["suite"] == "ci" and printed["experiments"] == []
    assert any("nosuchop" in p for p in printed["problems"])
    assert (out / "junit.xml").exists() and (out / "summary.md").exists()
    assert not (out / "runs").exists()


def test_neither_experiments_nor_suite_is_a_result_too(tmp_path: Path) -> None:
    out = tmp_path / "gate"
    proc = run_cli("gate", "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    doc = json.loads((out / "gate.json").read_text())
    assert doc["result"] == "invalid-input"
    assert "exactly one" in doc["problems"][0]
    assert proc.stdout == ""  # text mode: the problems go to stderr
    assert "exactly one" in proc.stderr
