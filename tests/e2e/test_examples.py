"""Every experiment shipped in experiments/ is run by the suite, with the verdict it documents.

The main job and the slow-replica example have richer tests of their own (test_cli.py), and
the comparative example has test_compare_run.py; this module runs the remaining lab
examples and makes sure no shipped example is left out of every test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import require, run_cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    p for p in (ROOT / "experiments").iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
)

# file -> (exit code its description promises, what it needs beyond the lab)
RUN_HERE = {
    "ctk-lab-slo.json": (0, None),
    "lab-cpu-stress.yaml": (0, "stress"),
    "lab-partition-replica.yaml": (0, "iptables"),
}


def _needs(what: str | None, request: pytest.FixtureRequest) -> None:
    if what == "stress":
        require(shutil.which("stress-ng") is not None, "stress-ng (Debian: apt-get install stress-ng)")
        require(os.geteuid() == 0, "root, for the replica's cgroup")
    elif what == "iptables":
        require(shutil.which("iptables") is not None, "iptables (Debian: apt-get install iptables)")
        require(os.geteuid() == 0, "root, for iptables")
        request.getfixturevalue("host_iptables")  # its rules go into the host's own firewall


def test_every_shipped_experiment_is_run_by_some_test() -> None:
    """A new example must come with a test that runs it (here or in a module of its own)."""
    tests_text = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py") if p != Path(__file__).resolve()
    )
    untested = [p.name for p in SHIPPED if p.name not in RUN_HERE and p.name not in tests_text]
    assert not untested, f"shipped experiments no test runs: {untested}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUN_HERE))
def test_shipped_lab_example_gives_its_documented_verdict(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expected, needs = RUN_HERE[name]
    _needs(needs, request)
    proc = run_cli(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(ROOT / "experiments" / name),
        cwd=tmp_path,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == expected, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    journal = json.loads(Path(result["journal"]).read_text(encoding="utf-8"))
    # every fault the example injected was reverted and verified clean
    faults = journal["chaoslab"]["faults"]
    injected = [f for f in faults if f["kind"] == "fault-injected"]
    clean = [f for f in faults if f["kind"] == "clean-checked" and f["clean"] is True]
    assert injected and len(clean) == len(injected), faults
    status = run_cli("lab", "status", "--output", "json", cwd=tmp_path)
    assert json.loads(status.stdout)["running"] is False
