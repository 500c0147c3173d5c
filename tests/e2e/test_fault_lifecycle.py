"""The life of a fault as a user meets it: records hold absolute identities, so a
``recover`` run from anywhere reverts what the dead run left, and says so truthfully."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from chaoslab.safety.ledger import Ledger
from tests.conftest import run_cli
from tests.contract.targets import adopting_orphans

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(events: Path, kind: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and f'"kind": "{kind}"' in events.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {kind} in {events}")


def test_relative_disk_path_then_sigkill_then_recover_from_elsewhere(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    (here / "fill").mkdir(parents=True)
    (elsewhere / "fill").mkdir(parents=True)  # the same relative path, another directory
    exp = here / "disk.yaml"
    exp.write_text(
        "title: disk\ndescription: d\nmethod:\n"
        "  - {do: stress.disk, with: {path: fill, mib: 2}, duration: 60s}\n"
    )
    with adopting_orphans():
        run = start("run", "--run-dir", str(tmp_path / "r"), str(exp), cwd=here)
        try:
            wait_for(tmp_path / "r" / "events.ndjson", "fault-injected")
        finally:
            run.kill()
            run.communicate(timeout=30)
        (entry,) = Ledger().open_entries()
        assert entry.record.data["path"] == str((here / "fill").resolve())
        fills = list((here / "fill").iterdir())
        assert len(fills) == 1 and fills[0].name.startswith("chaoslab-fill-")

        recovered = run_cli("recover", "--output", "json", cwd=elsewhere)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        report = json.loads(recovered.stdout)
        assert [o["status"] for o in report["outcomes"]] == ["closed"]
        assert list((here / "fill").iterdir()) == [], "recover removed the fill it said it removed"
        assert Ledger().open_entries() == []
