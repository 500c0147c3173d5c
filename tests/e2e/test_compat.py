"""Chaos Toolkit compatibility: the same experiments under ``chaos run`` and ``chaoslab run``.

Each experiment in ``compat/`` runs in a subprocess under both tools; we compare the
status, the deviation, which activities ran (method and rollbacks) and the steady-state
results. Where chaoslab deliberately differs (README, "Where chaoslab differs from Chaos
Toolkit"), the test asserts chaoslab's documented behaviour instead.

The controls-and-exits cases (``CONTROL_CASES``) also compare every control hook call
(``ctkcontrols`` records its arguments' types, context, state and the shared context),
what the hooks wrote into the journal, and chaostoolkit-addons' safeguards. chaoslab runs
them with a real fault added at the start of the method (a SIGSTOPped sleeper) and must
also revert it, verify it clean and write its journal, however the run ended.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPAT = Path(__file__).parent / "compat"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_tool(
    tool: str,
    experiment: Path,
    tmp: Path,
    extra: list[str],
    env_extra: dict[str, str],
    preset: dict[str, str],
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    state = tmp / f"state-{tool}"
    state.mkdir()
    for name, value in preset.items():
        (state / name).write_text(value)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTK_STATE": str(state), **env_extra}
    journal = tmp / f"journal-{tool}.json"
    if tool == "chaos":
        cmd = [
            str(BIN / "chaos"),
            "--no-version-check",
            "--log-file",
            str(tmp / "chaostoolkit.log"),
            "run",
            "--journal-path",
            str(journal),
            *extra,
            str(experiment),
        ]
    else:
        cmd = [
            str(BIN / "chaoslab"),
            "run",
            "--run-dir",
            str(tmp / "run"),
            "--journal-path",
            str(journal),
            *extra,
            str(experiment),
        ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr + proc.stdout if tool == "chaoslab" else True, proc.stderr
    assert journal.exists(), f"{tool} wrote no journal:\n{proc.stdout}\n{proc.stderr}"
    trace_file = state / "trace.ndjson"
    trace = [json.loads(line) for line in trace_file.read_text().splitlines()] if trace_file.exists() else []
    return proc.returncode, json.loads(journal.read_text()), trace


def summary(journal: dict[str, Any]) -> dict[str, Any]:
    def met(key: str) -> bool | None:
        block = journal["steady_states"].get(key)
        return None if block is None else block["steady_state_met"]

    def probes(key: str) -> list[tuple[str, bool]]:
        block = journal["steady_states"].get(key) or {"probes": []}
        return [(p["activity"]["name"], p.get("tolerance_met")) for p in block["probes"]]

    return {
        "probes_before": probes("before"),
        "probes_after": probes("after"),
        "status": journal["status"],
        "deviated": journal["deviated"],
        "run": [(r["activity"]["name"], r["status"]) for r in journal["run"]],
        "rollbacks": [(r["activity"]["name"], r["status"]) for r in journal["rollbacks"]],
        "before": met("before"),
        "after": met("after"),
    }


CASES = {
    # name: (extra args, env, preset state files, expected chaoslab exit code, differences)
    "basic.json": ([], {}, {}, 0, {}),
    "tolerances.yaml": ([], {}, {}, 0, {}),
    "config_secrets.yaml": (
        ["--var", "overridden=from-var", "--var-file", str(COMPAT / "varfile.yaml")],
        {"COMPAT_FROM_ENV": "from-the-env", "COMPAT_SECRET": "tok-123"},
        {},
        0,
        {},
    ),
    "deviated.yaml": ([], {}, {}, 1, {}),
    # chaoslab differs: a baseline that does not hold is a failed run (exit 4, inconclusive);
    # Chaos Toolkit reports it "completed" and exits 0.
    "baseline_fails.yaml": ([], {}, {"preset": "3"}, 4, {"status": "failed"}),
    "flow.yaml": (["--var", "base_url=@HTTP@"], {}, {}, 0, {}),
    "controls.yaml": ([], {}, {}, 0, {}),
    # chaoslab differs: fail-fast stops the method at the next activity; Chaos Toolkit goes on.
    "continuously.yaml": ([], {}, {}, 1, {"run": [("break-it", "succeeded"), ("wait", "succeeded")]}),
    "during_only.yaml": ([], {}, {}, 0, {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_outcome_as_chaos_toolkit(name: str, tmp_path: Path, http_base: str) -> None:
    extra, env, preset, expected_exit, differences = CASES[name]
    extra = [a.replace("@HTTP@", http_base) for a in extra]
    ctk_tmp, lab_tmp = tmp_path / "ctk", tmp_path / "lab"
    ctk_tmp.mkdir()
    lab_tmp.mkdir()
    _, ctk_journal, ctk_trace = run_tool("chaos", COMPAT / name, ctk_tmp, extra, env, preset)
    code, lab_journal, lab_trace = run_tool("chaoslab", COMPAT / name, lab_tmp, extra, env, preset)

    ctk, lab = summary(ctk_journal), summary(lab_journal)
    expected = {**ctk, **differences}
    assert lab == expected, f"chaoslab {lab}\nchaos    {ctk}"
    assert code == expected_exit
    assert lab_journal["chaoslab"]["exit_code"] == expected_exit
    # Side effects seen by the target (python functions) match too, except documented ones.
    if not differences:
        assert [e["event"] for e in lab_trace] == [e["event"] for e in ctk_trace]


def test_baseline_failure_never_runs_the_method(tmp_path: Path) -> None:
    code, journal, trace = run_tool(
        "chaoslab", COMPAT / "baseline_fails.yaml", tmp_path, [], {}, {"preset": "3"}
    )
    assert code == 4
    assert journal["run"] == []
    assert "method-ran" not in [e["event"] for e in trace]
    assert "baseline" in journal["chaoslab"]["reason"]


def test_chaos_toolkit_is_installed() -> None:
    assert shutil.which("chaos", path=str(BIN)), "chaostoolkit must be installed in the test environment"


# --- controls, safeguards and chaoslib.exit ------------------------------------------------

FAULT = "h22-fault"
STATUS_MID_WAY = {"status_of_interrupted": "failed"}


def _interrupted_status(ctk_run: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """Chaos Toolkit leaves `status` out of an activity that was interrupted (an exit
    signal mid-way, or it raised InterruptExecution/SystemExit); chaoslab records it as
    failed (README, table of differences)."""
    return [(name, "failed" if status is None else status, w) for name, status, w in ctk_run]


# name: (chaoslab exit code, what chaoslab does differently, trace order matters)
CONTROL_CASES: dict[str, tuple[int, dict[str, Any], bool]] = {
    "controls_levels.yaml": (0, {}, True),
    "controls_interrupt.yaml": (130, {}, True),
    "controls_hypothesis_interrupt.yaml": (130, {}, True),
    "controls_systemexit.yaml": (130, {}, True),
    "controls_error.yaml": (0, {}, True),
    "safeguard.yaml": (130, STATUS_MID_WAY, False),
    "exit_gracefully.yaml": (130, STATUS_MID_WAY, False),
    # chaoslab differs: SIGUSR2 still runs the rollbacks (per strategy); Chaos Toolkit skips them.
    "exit_ungracefully.yaml": (
        130,
        {**STATUS_MID_WAY, "rollbacks": [("undo", "succeeded", {})], "trace_extra": ["rolled-back"]},
        False,
    ),
    "provider_interrupts.yaml": (130, STATUS_MID_WAY, True),
    "provider_exits.yaml": (130, STATUS_MID_WAY, True),
    "no_probes.yaml": (0, {}, True),
    # chaoslab differs: a baseline that does not hold is inconclusive (exit 4); CTK exits 1
    # here too (the probe raised, so its status is "failed").
    "baseline_raises.yaml": (4, {}, True),
}


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def with_fault(experiment: Path, pid: int, tmp: Path) -> Path:
    """The same experiment with a real fault first in its method (chaoslab's form)."""
    doc = yaml.safe_load(experiment.read_text())
    fault = {"do": "process.suspend", "target": f"pid:{pid}", "duration": "1s", "name": FAULT}
    doc["method"] = [fault, *doc.get("method", [])]
    out = tmp / experiment.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def control_summary(journal: dict[str, Any]) -> dict[str, Any]:
    def written(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k.startswith("written_")}

    def block(key: str) -> Any:
        b = journal["steady_states"].get(key)
        if b is None:
            return None
        return {
            "met": b["steady_state_met"],
            "probes": [p["activity"]["name"] for p in b["probes"]],
            **written(b),
        }

    safeguards = journal.get("safeguards")
    return {
        "status": journal["status"],
        "deviated": journal["deviated"],
        "run": [
            (r["activity"]["name"], r.get("status"), written(r))
            for r in journal["run"]
            if r["activity"].get("name") != FAULT
        ],
        "rollbacks": [(r["activity"]["name"], r.get("status"), written(r)) for r in journal["rollbacks"]],
        "before": block("before"),
        "after": block("after"),
        "written": written(journal),
        "safeguards": None
        if safeguards is None
        else (safeguards["triggered_by"], safeguards["run"]["status"], safeguards["run"]["output"]),
    }


def without_fault(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in trace:
        if e.get("name") == FAULT:
            continue
        state = e.get("state")
        if isinstance(state, list):
            e = {**e, "state": [s for s in state if s[0] != FAULT]}
        out.append(e)
    return out


def assert_fault_reverted(journal: dict[str, Any], pid: int, *, method_ran: bool) -> None:
    """Every fault injected was reverted and checked clean; the target runs again."""
    faults = journal["chaoslab"]["faults"]
    injected = [f for f in faults if f["kind"] == "fault-injected"]
    assert len(injected) == (1 if method_ran else 0), faults
    assert [f["ok"] for f in faults if f["kind"] == "fault-reverted"] == [True] * len(injected), faults
    assert [f["clean"] for f in faults if f["kind"] == "clean-checked"] == [True] * len(injected), faults
    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED, "the suspended process must be resumed"


@pytest.mark.parametrize("name", sorted(CONTROL_CASES))
def test_controls_and_exits_as_chaos_toolkit(name: str, tmp_path: Path, sleeper: int) -> None:
    expected_exit, differences, ordered = CONTROL_CASES[name]
    ctk_tmp, lab_tmp = tmp_path / "ctk", tmp_path / "lab"
    ctk_tmp.mkdir()
    lab_tmp.mkdir()
    _, ctk_journal, ctk_trace = run_tool("chaos", COMPAT / name, ctk_tmp, [], {}, {})
    variant = with_fault(COMPAT / name, sleeper, lab_tmp)
    code, lab_journal, lab_trace = run_tool("chaoslab", variant, lab_tmp, [], {}, {})

    ctk, lab = control_summary(ctk_journal), control_summary(lab_journal)
    expected = dict(ctk)
    if "status_of_interrupted" in differences:
        expected["run"] = _interrupted_status(ctk["run"])
    if "rollbacks" in differences:
        expected["rollbacks"] = differences["rollbacks"]
    if not ordered:  # background activities start on their own threads: either may be first
        lab["run"], expected["run"] = sorted(lab["run"]), sorted(expected["run"])
    if not ordered:  # background activities start on their own threads: either may be first
        lab["run"], expected["run"] = sorted(lab["run"]), sorted(expected["run"])
    assert lab == expected, f"chaoslab {lab}\nchaos    {ctk}"
    assert code == expected_exit
    assert lab_journal["chaoslab"]["exit_code"] == expected_exit
    method_ran = bool(ctk_journal["run"]) or "before_method_control" in [e["event"] for e in ctk_trace]
    assert_fault_reverted(lab_journal, sleeper, method_ran=method_ran)
    assert (lab_tmp / "run" / "journal.json").exists() and (lab_tmp / "run" / "events.ndjson").exists()

    # Every control hook: same order, same argument types, same context and state, and
    # the shared context (what before_experiment_control stored) seen by every later hook.
    ctk_events = ctk_trace + [{"event": e} for e in differences.get("trace_extra", [])]
    lab_events = without_fault(lab_trace)
    if ordered:
        assert lab_events == ctk_events
    else:  # background activities and safeguards run on their own threads
        key = json.dumps
        assert sorted(map(key, lab_events)) == sorted(map(key, ctk_events))
    hooks = [e for e in lab_events if e["event"].endswith("_control") and "types" in e and "name" in e]
    after_first = [e for e in hooks if e["event"] != "before_experiment_control"]
    if any(e["event"] == "before_experiment_control" for e in hooks):
        assert after_first and all(e["shared"] for e in after_first)
    assert "halt" not in lab_journal["chaoslab"]["reason"]


def test_a_failing_hook_is_reported_and_the_run_carries_on(tmp_path: Path, sleeper: int) -> None:
    variant = with_fault(COMPAT / "controls_error.yaml", sleeper, tmp_path)
    code, journal, _ = run_tool("chaoslab", variant, tmp_path, [], {}, {})
    assert code == 0
    error = (
        "control tracer.before_method_control: RuntimeError: control failure asked at before_method_control"
    )
    assert journal["chaoslab"]["controls_errors"] == [error]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.ndjson").read_text().splitlines()]
    assert [e["hook"] for e in events if e["kind"] == "control-failed"] == ["before_method_control"]


def test_ungraceful_exit_records_the_abandoned_background_activity(tmp_path: Path, sleeper: int) -> None:
    variant = with_fault(COMPAT / "exit_ungracefully.yaml", sleeper, tmp_path)
    code, journal, trace = run_tool("chaoslab", variant, tmp_path, [], {}, {})
    assert code == 130
    background = next(r for r in journal["run"] if r["activity"]["name"] == "in-background")
    assert background["status"] == "failed" and background["chaoslab"] == {"abandoned": True}
    assert "exit_ungracefully" in background["exception"][0]
    assert "sleep_end" not in [e["event"] for e in trace], "an ungraceful exit waits for nothing"
    assert "SIGUSR2" in journal["chaoslab"]["reason"]


def write(tmp: Path, name: str, text: str) -> Path:
    f = tmp / name
    f.write_text(text)
    return f


INVALID_CONTROLS = {
    "top-level": (
        "controls[0]",
        "controls: [{name: bad, provider: {type: python, module: tests.e2e.ctkcontrols, "
        "arguments: {invalid: true}}}]\n",
    ),
    "activity": ("method[0].controls[0]", ""),
    "missing-ref": ("method[0].controls[0].ref", ""),
}


@pytest.mark.parametrize("case", sorted(INVALID_CONTROLS))
def test_an_invalid_control_fails_validation_before_anything_runs(case: str, tmp_path: Path) -> None:
    where, top = INVALID_CONTROLS[case]
    local = ""
    if case == "activity":
        local = (
            ", controls: [{name: bad, provider: {type: python, module: tests.e2e.ctkcontrols, "
            "arguments: {invalid: true}}}]"
        )
    elif case == "missing-ref":
        local = ", controls: [{ref: nowhere}]"
    exp = write(
        tmp_path,
        "invalid.yaml",
        "title: t\ndescription: d\n"
        + top
        + "method:\n  - {type: action, name: act, provider: {type: python, module: tests.e2e.ctkfuncs, "
        "func: record, arguments: {event: act-ran}}"
        + local
        + "}\nrollbacks:\n  - {type: action, name: undo, provider: {type: python, module: tests.e2e.ctkfuncs, "
        "func: record, arguments: {event: rolled-back}}}\n",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTK_STATE": str(tmp_path / "state")}
    ctk = subprocess.run(
        [str(BIN / "chaos"), "--no-version-check", "validate", str(exp)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ctk.returncode == 1  # Chaos Toolkit refuses it too (its exit code for everything)
    for command in (["validate"], ["run", "--run-dir", str(tmp_path / "run")]):
        lab = subprocess.run(
            [str(BIN / "chaoslab"), *command, str(exp)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lab.returncode == 2, lab.stdout + lab.stderr
        assert "invalid.yaml:" in lab.stderr and where in lab.stderr, lab.stderr
        assert "Traceback" not in lab.stderr + lab.stdout
    assert not (tmp_path / "state" / "trace.ndjson").exists(), "nothing may run"
    assert not (tmp_path / "run").exists()


def test_configuration_from_a_missing_environment_key_is_invalid_before_anything_runs(tmp_path: Path) -> None:
    exp = write(
        tmp_path,
        "env.yaml",
        "title: t\ndescription: d\nconfiguration:\n  token: {type: env, key: CHAOSLAB_COMPAT_SURELY_UNSET}\n"
        "method:\n  - {type: action, name: act, provider: {type: python, module: tests.e2e.ctkfuncs, "
        "func: record, arguments: {event: act-ran}}}\n"
        "rollbacks:\n  - {type: action, name: undo, provider: {type: python, module: tests.e2e.ctkfuncs, "
        "func: record, arguments: {event: rolled-back}}}\n",
    )
    env = {k: v for k, v in os.environ.items() if k != "CHAOSLAB_COMPAT_SURELY_UNSET"}
    env.update(PYTHONPATH=str(ROOT), CTK_STATE=str(tmp_path / "state"))
    for tool, command, code in (
        ("chaos", ["--no-version-check", "validate"], 1),
        ("chaos", ["--no-version-check", "run", "--journal-path", str(tmp_path / "j.json")], 1),
        ("chaoslab", ["validate"], 2),
        ("chaoslab", ["run", "--run-dir", str(tmp_path / "run")], 2),
    ):
        proc = subprocess.run(
            [str(BIN / tool), *command, str(exp)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == code, (tool, command, proc.stdout, proc.stderr)
        if tool == "chaoslab":
            assert (
                "CHAOSLAB_COMPAT_SURELY_UNSET" in proc.stderr and "env.yaml at configuration" in proc.stderr
            )
            assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "state" / "trace.ndjson").exists(), (
        "neither tool may run anything, rollbacks included"
    )
    assert not (tmp_path / "run").exists()
    # chaoslab differs (README): given with --var, chaoslab runs it; Chaos Toolkit's run
    # validates without --var and still refuses.
    with_var = ["--var", "token=given"]
    ctk_run = [str(BIN / "chaos"), "--no-version-check", "run", "--journal-path", str(tmp_path / "j.json")]
    ctk = subprocess.run(
        [*ctk_run, *with_var, str(exp)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert ctk.returncode == 1 and not (tmp_path / "j.json").exists()
    lab_run = [str(BIN / "chaoslab"), "run", "--run-dir", str(tmp_path / "run")]
    lab = subprocess.run(
        [*lab_run, *with_var, str(exp)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert lab.returncode == 0, lab.stdout + lab.stderr
    trace = (tmp_path / "state" / "trace.ndjson").read_text().splitlines()
    assert [json.loads(line)["event"] for line in trace] == ["act-ran", "rolled-back"]


def test_a_graceful_exit_is_not_a_halt_in_the_journal_or_the_reports(tmp_path: Path, sleeper: int) -> None:
    variant = with_fault(COMPAT / "exit_gracefully.yaml", sleeper, tmp_path)
    code, journal, _ = run_tool("chaoslab", variant, tmp_path, [], {}, {})
    assert code == 130 and journal["chaoslab"]["verdict"] == "interrupted"
    assert [i["signal"] for i in journal["chaoslab"]["interruptions"]] == ["SIGUSR1"]
    assert journal["chaoslab"]["reason"] == "interrupted by chaoslib.exit.exit_gracefully() (SIGUSR1)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rendered = subprocess.run(
        [str(BIN / "chaoslab"), "report", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "chaoslab halt" not in (tmp_path / "run" / "postmortem.md").read_text()
    assert 'id="halted"' not in (tmp_path / "run" / "report.html").read_text()
