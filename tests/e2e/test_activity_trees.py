"""Activities leave no process behind — not even a ``setsid`` grandchild or a
double-forked daemon (``tests/e2e/escapees.py``): a process or python activity's whole
tree ends at its deadline, on SIGINT to the run, and when it ends normally, and a CI step
whose output an orphan holds open still returns promptly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chaoslab.engine.child import chaoslab_command, run_child
from chaoslab.engine.proctree import shepherd_command
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
ESCAPEES = Path(__file__).with_name("escapees.py")
RETURN_S = 30.0  # an orphan holding the run's output would hold it for days


class Escape:
    """Where the escapees of one test record themselves, and their ``sleep`` marker."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "escapees"
        self.dir.mkdir()
        self.marker = str(random.randint(700_000, 799_999))  # a sleep length no other test uses

    def recorded(self) -> list[tuple[int, float, int, int]]:
        """(pid, create time, session id, the spawning script's session id) of each escapee."""
        pids = self.dir / "pids"
        rows = [line.split() for line in (pids.read_text().splitlines() if pids.exists() else [])]
        return [(int(p), float(t), int(s), int(o)) for p, t, s, o in (r for r in rows if len(r) == 4)]

    def alive(self) -> list[psutil.Process]:
        """The escapees still running: recorded pid + create time, or running our marker."""
        found: dict[int, psutil.Process] = {}
        for pid, created, _, _ in self.recorded():
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = p
            except psutil.Error:
                continue
        for p in psutil.process_iter(["cmdline", "status"]):
            if p.info["cmdline"] == ["sleep", self.marker] and p.info["status"] != psutil.STATUS_ZOMBIE:
                found[p.pid] = p
        return list(found.values())

    def escaped(self) -> bool:
        """Both escapees ran, each in a session of its own (a process group could not hold them)."""
        found = self.recorded()
        return len(found) == 2 and all(sid != session for _, _, sid, session in found)


@pytest.fixture
def escape(tmp_path: Path) -> Iterator[Escape]:
    esc = Escape(tmp_path)
    yield esc
    for p in esc.alive():  # never leave one behind, whatever the test found
        p.kill()


def experiment(tmp: Path, esc: Escape, kind: str, *, hang_s: float, timeout_s: float | None) -> Path:
    timeout = f"timeout: {timeout_s}, " if timeout_s is not None else ""
    if kind == "process":
        args = f"[{ESCAPEES}, {esc.dir}, '{esc.marker}', '{hang_s}']"
        provider = f"{{type: process, path: {sys.executable}, arguments: {args}}}"
    else:
        args = f"{{directory: {esc.dir}, marker: '{esc.marker}', hang_s: {hang_s}}}"
        provider = f"{{type: python, module: tests.e2e.escapees, func: escape, arguments: {args}}}"
    exp = tmp / "exp.yaml"
    exp.write_text(
        f"title: t\ndescription: d\nmethod:\n  - {{type: action, name: escape, {timeout}provider: {provider}}}\n"
    )
    return exp


def start(exp: Path, cwd: Path) -> subprocess.Popen[bytes]:
    # stdout/stderr are pipes, as in a CI step: an orphan holding them blocks communicate().
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(cwd / "r"), str(exp)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(run: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        out, err = run.communicate(timeout=RETURN_S)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        raise AssertionError("the run's output stayed open: an orphan holds it") from None
    return run.returncode, (out + err).decode(errors="replace")


@pytest.mark.parametrize("kind", ["process", "python"])
@pytest.mark.parametrize("ending", ["deadline", "sigint", "normal"])
def test_no_escapee_outlives_its_activity(tmp_path: Path, escape: Escape, kind: str, ending: str) -> None:
    hang_s = 0 if ending == "normal" else 600
    exp = experiment(tmp_path, escape, kind, hang_s=hang_s, timeout_s=4 if ending == "deadline" else None)
    run = start(exp, tmp_path)
    began = time.monotonic()
    if ending == "sigint":
        wait_until(lambda: escape.escaped() and len(escape.alive()) == 2, timeout_s=20, what="both escapees")
        began = time.monotonic()
        run.send_signal(signal.SIGINT)
    code, text = finish(run)
    took = time.monotonic() - began
    assert escape.escaped(), f"the escapees did not run: {escape.recorded()}"
    assert "Traceback" not in text, text
    assert code == (130 if ending == "sigint" else 0), text
    events = (tmp_path / "r" / "events.ndjson").read_text()
    if ending == "deadline":
        assert '"status": "timed-out"' in events
    elif ending == "normal":
        assert '"status": "succeeded"' in events
    assert escape.alive() == [], f"left behind after {ending}: {escape.alive()}"
    assert took < RETURN_S


def test_a_gate_or_scheduler_child_run_ends_its_activities_trees(tmp_path: Path, escape: Escape) -> None:
    """``engine/child.py`` (the CI gate, scheduler slots, game days): stopping a child run
    ends its activities' trees too, escapees included."""
    import threading

    exp = experiment(tmp_path, escape, "python", hang_s=600, timeout_s=None)
    stop = threading.Event()
    out: list[int] = []
    runner = threading.Thread(
        target=lambda: out.append(
            run_child(
                chaoslab_command("run", "--run-dir", str(tmp_path / "r"), str(exp)),
                stop=stop,
                grace_s=30,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).returncode
        ),
        daemon=True,
    )
    runner.start()
    wait_until(lambda: escape.escaped() and len(escape.alive()) == 2, timeout_s=20, what="both escapees")
    stop.set()
    runner.join(RETURN_S)
    assert not runner.is_alive() and out, "the child run did not end"
    assert escape.alive() == []


def test_the_shepherd_passes_the_command_s_status_through(tmp_path: Path) -> None:
    ok = subprocess.run(shepherd_command(["sh", "-c", "echo out; echo err >&2; exit 3"]), capture_output=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (3, b"out\n", b"err\n")
    killed = subprocess.run(shepherd_command(["sh", "-c", "kill -9 $$"]), capture_output=True)
    assert killed.returncode == -signal.SIGKILL


def test_a_child_run_killed_outright_still_leaves_no_escapee(tmp_path: Path, escape: Escape) -> None:
    """A child run SIGKILLed (the gate's or scheduler's grace ran out) never ends its own
    activity trees; its shepherd (``run_child``'s ``--forward``) ends them once it died."""
    exp = experiment(tmp_path, escape, "python", hang_s=600, timeout_s=None)
    cmd = shepherd_command(chaoslab_command("run", "--run-dir", str(tmp_path / "r"), str(exp)), forward=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        wait_until(lambda: escape.escaped() and len(escape.alive()) == 2, timeout_s=20, what="both escapees")
        run.send_signal(signal.SIGQUIT)  # run_child's "kill": SIGKILL to the run itself
        finish(run)
    assert run.returncode == -signal.SIGKILL
    assert escape.alive() == []


def test_an_activity_ending_beside_another_leaves_the_other_s_processes_alone(tmp_path: Path) -> None:
    """A background action's ``sleep`` starts while a second activity runs; that second
    activity ending must not end it (what each activity's thread forked is its own)."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "title: t\ndescription: d\nmethod:\n"
        "  - {type: action, name: a, background: true, provider: {type: process, path: sh,"
        " arguments: ['-c', 'sleep 0.3; sleep 1.5 && echo done']}}\n"
        "  - {type: action, name: b, provider: {type: python, module: tests.e2e.ctkfuncs,"
        " func: sleep_quietly, arguments: {seconds: 1}}}\n"
    )
    code, text = finish(start(exp, tmp_path))
    assert code == 0, text
    journal = json.loads((tmp_path / "r" / "journal.json").read_text())
    a = next(r for r in journal["run"] if r["activity"]["name"] == "a")
    assert a["output"] == {"status": 0, "stdout": "done\n", "stderr": ""}, a
