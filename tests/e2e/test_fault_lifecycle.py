"""The life of a fault as a user meets it: records hold absolute identities, so a
``recover`` run from anywhere reverts what the dead run left, and says so truthfully."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chaoslab.safety.ledger import Ledger
from tests.conftest import require, run_cli, wait_for_event
from tests.contract.targets import adopting_orphans
from tests.statepaths import env_state

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
            wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected")
        finally:
            run.kill()
            run.communicate(timeout=30)
        (entry,) = Ledger(env_state().ledger).open_entries()
        assert entry.record.data["path"] == str((here / "fill").resolve())
        fills = list((here / "fill").iterdir())
        assert len(fills) == 1 and fills[0].name.startswith("chaoslab-fill-")

        recovered = run_cli("recover", "--output", "json", cwd=elsewhere)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        report = json.loads(recovered.stdout)
        assert [o["status"] for o in report["outcomes"]] == ["closed"]
        assert list((here / "fill").iterdir()) == [], "recover removed the fill it said it removed"
        assert Ledger(env_state().ledger).open_entries() == []


def test_a_docker_probe_that_cannot_reach_dockerd_is_an_infrastructure_error(tmp_path: Path) -> None:
    exp = tmp_path / "probe.yaml"
    exp.write_text(
        "title: t\ndescription: d\nsteady-state-hypothesis:\n  title: web runs\n  probes:\n"
        "    - {name: web-running, do: docker.running, target: 'name:web', tolerance: true}\n"
        "method:\n  - {type: action, name: noop, provider: {type: process, path: 'true'}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(tmp_path / "r"), str(exp)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 5, done.stdout + done.stderr
    assert "could not run" in done.stdout + done.stderr


def test_recover_stops_the_lab_a_sigkilled_run_started(tmp_path: Path) -> None:
    from chaoslab.lab.control import status

    exp = tmp_path / "lab.yaml"
    exp.write_text(
        "title: t\ndescription: d\nlab: true\nmethod:\n  - {do: process.suspend, target: 'lab:replica-1', duration: 60s}\n"
    )
    with adopting_orphans():
        run = start("run", "--run-dir", str(tmp_path / "r"), str(exp), cwd=tmp_path)
        try:
            wait_for_event(tmp_path / "r" / "events.ndjson", "fault-injected", timeout_s=60)
        finally:
            run.kill()
            run.communicate(timeout=30)
        assert status(env_state().home).get("running"), "the dead run's lab is still up"
        recovered = run_cli("recover", "--output", "json", cwd=tmp_path)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        notes = json.loads(recovered.stdout)["notes"]
        assert any("stopped the lab" in n for n in notes), notes
        assert not status(env_state().home).get("running")


def test_a_fault_that_never_reached_its_host_closes_as_not_applied(tmp_path: Path) -> None:
    import importlib.util
    import socket

    require(importlib.util.find_spec("paramiko") is not None, "paramiko (the ssh extra)")
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "key").write_text("")
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        f"known_hosts: {tmp_path / 'known_hosts'}\nconnect_attempts: 1\nconnect_timeout: 2s\nhosts:\n"
        f"  dead: {{address: 127.0.0.1, port: {port}, user: root, key_file: {tmp_path / 'key'}}}\n"
    )
    exp = tmp_path / "ssh.yaml"
    exp.write_text(
        "title: t\ndescription: d\nmethod:\n  - {do: ssh.stress_cpu, target: 'ssh:dead', with: "
        f"{{inventory: '{inv}', workers: 1, backend: shell}}, duration: 2s}}\n"
    )
    done = run_cli("run", "--run-dir", str(tmp_path / "r"), str(exp), cwd=tmp_path)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 5, done.stdout + done.stderr  # infrastructure, never 6 NOT-CLEAN
    assert Ledger(env_state().ledger).open_entries() == []  # nothing for recover to chase
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "r" / "events.ndjson").read_text().splitlines()]
    assert "fault-not-applied" in kinds and "fault-injected" not in kinds
