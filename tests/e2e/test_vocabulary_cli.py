"""The fault vocabulary and blast radius as a user meets them: validate, plan, run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.conftest import chaoslab


@contextmanager
def sleepers(n: int) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    marker = f"h17-{uuid.uuid4().hex[:10]}"
    procs = [
        subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(120)  # {marker}"])
        for _ in range(n)
    ]
    try:
        yield marker, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _exp(tmp_path: Path, step: str) -> Path:
    f = tmp_path / "exp.yaml"
    f.write_text(f"title: t\ndescription: d\nmethod:\n  - {step}\n")
    return f


def test_plan_and_run_with_one_seed_pick_the_same_targets_and_name_them(tmp_path: Path) -> None:
    with sleepers(5) as (marker, procs):
        f = _exp(tmp_path, f"{{do: suspend, target: 'pattern:{marker}', with: {{count: 2}}, duration: 1s}}")
        plans = []
        for _ in range(2):
            proc = chaoslab("plan", "--seed", "7", "--output", "json", str(f), cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            plans.append(json.loads(proc.stdout)["method"][0])
        assert plans[0]["picked"] == plans[1]["picked"] and len(plans[0]["picked"]) == 2
        assert plans[0]["driver"] == "process.suspend"
        text = chaoslab("plan", "--seed", "7", str(f), cwd=tmp_path)
        assert "picked 2: " + ", ".join(plans[0]["picked"]) in text.stdout
        assert f"→ suspend on pattern:{marker} = process.suspend on pattern:{marker}" in text.stdout
        assert plans[0]["do"] == "suspend" and plans[0]["written_target"] == f"pattern:{marker}"
        run = chaoslab("run", "--seed", "7", "--run-dir", str(tmp_path / "run"), str(f), cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "picked 2: " + ", ".join(plans[0]["picked"]) in run.stdout  # the console names them
        journal = json.loads(next((tmp_path / "run").rglob("journal.json")).read_text())
        injected = [e for e in journal["chaoslab"]["faults"] if e["kind"] == "fault-injected"]
        assert injected[0]["picked"] == plans[0]["picked"]  # the journal too, same as the plan
        assert all(psutil.Process(p.pid).status() != psutil.STATUS_STOPPED for p in procs)


def test_max_refuses_and_fewer_than_asked_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with sleepers(4) as (marker, procs):
        f = _exp(tmp_path, f"{{do: suspend, target: 'pattern:{marker}', with: {{max: 3}}, duration: 1s}}")
        proc = chaoslab("plan", str(f), cwd=tmp_path)
        assert proc.returncode == 5 and "matches 4 targets, more than max 3" in proc.stdout + proc.stderr
        run = chaoslab("run", "--run-dir", str(tmp_path / "r1"), str(f), cwd=tmp_path)
        assert run.returncode != 0
        assert all(psutil.Process(p.pid).status() != psutil.STATUS_STOPPED for p in procs)  # nothing touched
        f = _exp(tmp_path, f"{{do: suspend, target: 'pattern:{marker}', with: {{count: 6}}, duration: 1s}}")
        proc = chaoslab("plan", str(f), cwd=tmp_path)
        assert proc.returncode == 5 and "count 6 asked, only 4 match" in proc.stdout + proc.stderr
        f = _exp(
            tmp_path,
            f"{{do: suspend, target: 'pattern:{marker}', with: {{count: 6, allow_fewer: true}}, duration: 1s}}",
        )
        proc = chaoslab("plan", "--output", "json", str(f), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)["method"][0]["picked"]) == 4


def test_legacy_spelling_validates_with_a_warning_naming_the_new_one(tmp_path: Path) -> None:
    f = _exp(tmp_path, "{do: docker.pause, target: 'name:web'}")
    proc = chaoslab("validate", str(f), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "'docker.pause' is now 'do: suspend' with target 'docker:name:web'" in proc.stderr
    proc = chaoslab("validate", "--output", "json", str(f), cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["warnings"]


def test_an_operation_a_platform_cannot_do_is_invalid_with_the_platforms_that_can(tmp_path: Path) -> None:
    f = _exp(tmp_path, "{do: net.loss, target: 'docker:web', with: {percent: 5}}")
    proc = chaoslab("validate", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    assert "method[0].target" in proc.stderr and "net.loss cannot run on platform 'docker'" in proc.stderr
    assert "local (host, netns:, lab:); ssh (ssh:)" in proc.stderr
