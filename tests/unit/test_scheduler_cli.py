"""The scheduler's commands as a user runs them: in a subprocess, exit codes, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "-m", "chaoslab.cli"]

TRIVIAL = {
    "title": "trivial",
    "description": "a process probe",
    "steady-state-hypothesis": {
        "title": "true exits 0",
        "probes": [{"type": "probe", "name": "ok", "tolerance": 0, "provider": {"type": "process", "path": "true"}}],
    },
    "method": [{"type": "action", "name": "nap", "provider": {"type": "process", "path": "sleep",
                                                              "arguments": "${nap}"}}],
    "configuration": {"nap": "0"},
}  # fmt: skip


def chaoslab(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*CMD, *args], capture_output=True, text=True, env=env, input=stdin, timeout=timeout, cwd=REPO
    )
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def setup(tmp_path: Path, scenario: str, nap: str = "0") -> dict[str, str]:
    (tmp_path / "trivial.json").write_text(json.dumps(dict(TRIVIAL, configuration={"nap": nap})))
    (tmp_path / "scenarios").mkdir(exist_ok=True)
    (tmp_path / "scenarios" / "s.yaml").write_text(scenario)
    env = dict(os.environ)
    env["CHAOSLAB_STORE"] = f"sqlite:///{tmp_path / 'store.db'}"
    env["CHAOSLAB_SCENARIOS"] = str(tmp_path / "scenarios")
    return env


def test_list_and_next_show_the_shipped_scenarios() -> None:
    env = dict(os.environ)
    proc = chaoslab("schedule", "list", "-s", "scenarios", "--output", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    names = {r["name"]: r for r in json.loads(proc.stdout)}
    assert names["lab-weekday-gameday"]["misfire"] == "run-once (grace 30m)"
    assert names["lab-monkey"]["kind"] == "monkey (leashed)"
    assert names["lab-weekday-gameday"]["concurrency"] == "forbid"  # the default
    nxt = chaoslab("schedule", "next", "-s", "scenarios", "-n", "2", "--output", "json", env=env)
    assert nxt.returncode == 0 and len(json.loads(nxt.stdout)) == 4


def test_an_invalid_scenario_says_where_and_exits_2(tmp_path: Path) -> None:
    env = setup(tmp_path, "name: s\ntrigger: {cron: 'every day'}\nsteps: [trivial.json]\n")
    proc = chaoslab("schedule", "list", env=env)
    assert proc.returncode == 2
    assert "s.yaml:2 at trigger.cron" in proc.stderr


def test_run_once_runs_the_due_slot_once_and_history_shows_it(tmp_path: Path) -> None:
    env = setup(tmp_path, "name: minutely\ntrigger: {interval: 1m}\nsteps: [../trivial.json]\n")
    first = chaoslab("schedule", "run", "--once", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert first.returncode == 0, first.stderr
    assert "minutely  finished passed" in first.stdout
    again = chaoslab("schedule", "run", "--once", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert again.returncode == 0
    hist = chaoslab("schedule", "history", "--output", "json", env=env)
    rows = json.loads(hist.stdout)
    slots = [r["slot"] for r in rows]
    assert len(slots) == len(set(slots)) >= 1  # a second pass never reruns a slot
    assert all(r["status"] == "finished" and r["verdict"] == "passed" for r in rows)
    assert rows[-1]["steps"][0]["verdict"] == "passed"
    text = chaoslab("schedule", "history", env=env)
    assert "minutely  finished passed" in text.stdout


def test_gameday_shows_steps_confirms_each_and_writes_a_summary(tmp_path: Path) -> None:
    env = setup(
        tmp_path,
        """name: drill
description: A two-step drill.
trigger: {cron: "0 11 * * mon-fri"}
steps:
  - {experiment: ../trivial.json, name: first}
  - {experiment: ../trivial.json, name: second}
""",
    )
    proc = chaoslab("gameday", "run", str(tmp_path / "scenarios" / "s.yaml"), "--confirm",
                    "--runs-dir", str(tmp_path / "runs"), env=env, stdin="y\nq\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1. first: trivial — a process probe" in out and "2. second: trivial" in out
    assert "gate ledger-clear: open" in out
    assert "Run step 1 (first)?" in out and "Run step 2 (second)?" in out
    assert "→ passed (exit 0)" in out
    summary = Path(out.strip().splitlines()[-1].removeprefix("summary: "))
    md = summary.read_text()
    assert "# Game day summary: drill" in md and "| 1 | first | passed | 0 |" in md
    assert "| 2 | second" not in md  # the facilitator quit before it
    assert "Ended early" in md
    hist = json.loads(chaoslab("schedule", "history", "--output", "json", env=env).stdout)
    assert hist[0]["kind"] == "gameday" and hist[0]["status"] == "finished"


def test_daemon_sigterm_interrupts_the_run_reverts_and_exits_cleanly(tmp_path: Path) -> None:
    env = setup(tmp_path, "name: slow\ntrigger: {interval: 1s}\nsteps: [../trivial.json]\n", nap="60")
    daemon = subprocess.Popen(
        [*CMD, "schedule", "daemon", "--max-parallel", "1", "--runs-dir", str(tmp_path / "runs"), "-v"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        wait_until(
            lambda: [
                e
                for e in (tmp_path / "runs").glob("slow/*/0-trivial/events.ndjson")
                if '"name": "nap"' in e.read_text()
            ],
            timeout_s=60,
            interval_s=0.1,
            what="a run mid-method",
        )
        kids = psutil.Process(daemon.pid).children(recursive=True)
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    rows: list[dict[str, Any]] = json.loads(
        chaoslab("schedule", "history", "--output", "json", env=env).stdout
    )
    assert rows and all(r["status"] not in ("claimed", "running") for r in rows)  # nothing left claimed
    interrupted = [r for r in rows if r["status"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["verdict"] == "interrupted"
    journal = json.loads((Path(interrupted[0]["steps"][0]["run_dir"]) / "journal.json").read_text())
    assert journal["chaoslab"]["verdict"] == "interrupted"


def test_history_takes_what_users_type(tmp_path: Path) -> None:
    """README: ``schedule history -s scenarios/x.yaml``; also a name, or ``--scenario``."""
    env = setup(tmp_path, "name: minutely\ntrigger: {interval: 1m}\nsteps: [../trivial.json]\n")
    (tmp_path / "scenarios" / "other.yaml").write_text(
        "name: other\ntrigger: {interval: 1m}\nsteps: [../trivial.json]\n"
    )
    ran = chaoslab("schedule", "run", "--once", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert ran.returncode == 0, ran.stderr
    file = str(tmp_path / "scenarios" / "s.yaml")
    for args in (["-s", file], ["minutely"], ["--scenario", "minutely"], ["--scenario", file]):
        proc = chaoslab("schedule", "history", *args, "--output", "json", env=env)
        assert proc.returncode == 0, (args, proc.stderr)
        assert {r["scenario"] for r in json.loads(proc.stdout)} == {"minutely"}, args
    both = chaoslab("schedule", "history", "-s", str(tmp_path / "scenarios"), "--output", "json", env=env)
    assert {r["scenario"] for r in json.loads(both.stdout)} == {"minutely", "other"}
    none = chaoslab("schedule", "history", "nosuch", env=env)
    assert none.returncode == 0 and none.stdout.strip() == "no history yet for nosuch"
    bad = chaoslab("schedule", "history", "-s", str(tmp_path / "missing.yaml"), env=env)
    assert bad.returncode == 2 and "missing.yaml: no such file or directory" in bad.stderr


def test_run_once_records_every_due_scenario_beyond_max_parallel(tmp_path: Path) -> None:
    env = setup(tmp_path, "name: a0\ntrigger: {interval: 1m}\nsteps: [../trivial.json]\n", nap="1")
    for i in range(1, 5):
        (tmp_path / "scenarios" / f"a{i}.yaml").write_text(
            f"name: a{i}\ntrigger: {{interval: 1m}}\nsteps: [../trivial.json]\n"
        )
    proc = chaoslab("schedule", "run", "--once", "--max-parallel", "4", "--runs-dir", str(tmp_path / "runs"),
                    env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5, proc.stdout  # every due scenario is accounted for
    assert sum("finished passed" in line for line in lines) == 4
    assert sum("skipped — over max-parallel: all 4 workers busy" in line for line in lines) == 1
