"""Secrets never leave the process: real runs, real files, every byte checked.

Each test plants distinctive secrets through every source (inline and env CTK secrets, a
``--var-file``, a control that adds one, a configuration key marked secret, URL
credentials in a DSN and an http provider URL), pushes them through a path (success,
failure, exception, invalid input, guard abort, SIGKILL + recover, refusal, gate,
scheduler), then reads every file under the run directory, the chaoslab home and the
reports, and everything printed, for each value and its encodings: zero occurrences.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import psutil
import pytest
import yaml

from tests.conftest import wait_for_event

ROOT = Path(__file__).resolve().parents[2]

INLINE = "Inl1ne-Secr3t-Qz7"
ENV = "Env-Secr3t-Wk4p"
VARFILE = "VarF1le-Secr3t-Hn2"
CONTROL = "Ctrl-Secr3t-Ub6d"
CONFIG = "Cfg-Marked-Secr3t-Le9"
DSN_PW = "Dsn-Passw0rd-Rt5"
HTTP_PW = "Http-Passw0rd-Yc3"
ALL = (INLINE, ENV, VARFILE, CONTROL, CONFIG, DSN_PW, HTTP_PW)
SECRET_ENV = {"H15_ENV": ENV, "H15_CFG": CONFIG, "H15_CONTROL_SOURCE": CONTROL}


def forms(secret: str) -> set[str]:
    raw = secret.encode()
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def leaks(*texts_or_paths: str | Path, secrets: tuple[str, ...] = ALL) -> list[str]:
    """Every occurrence of a secret (any encoding) in the given texts and files (recursively)."""
    found = []
    for item in texts_or_paths:
        if isinstance(item, Path):
            files = [item] if item.is_file() else [p for p in item.rglob("*") if p.is_file()]
            blobs = [(str(f), f.read_bytes().decode("utf-8", "replace")) for f in files]
        else:
            blobs = [("<output>", item)]
        for where, data in blobs:
            for s in secrets:
                found += [f"{where}: {form!r} ({s})" for form in forms(s) if form in data]
    return found


def env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **SECRET_ENV,
        "CHAOSLAB_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def cli(
    *args: str, cwd: Path, environ: Mapping[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env=dict(environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def _py(name: str, func: str, kind: str = "probe", **arguments: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "name": name,
        "provider": {
            "type": "python",
            "module": "tests.e2e.secretfuncs",
            "func": func,
            "arguments": arguments,
        },
    }


def experiment(tmp: Path, *, method: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    """A Chaos Toolkit experiment reading every kind of secret and leaking each one."""
    marker = str(tmp / "broken")
    doc: dict[str, Any] = {
        "title": f"secrets everywhere {INLINE}",
        "description": "plants secrets through every source",
        "secrets": {
            "api": {"inline": INLINE, "env": {"type": "env", "key": "H15_ENV"}},
            "vf": {"token": "overridden by the var file"},
        },
        "configuration": {
            "marked": {"type": "env", "key": "H15_CFG", "secret": True},
            "dsn": f"postgresql://chaos:{DSN_PW}@127.0.0.1:1/chaos",
            "marker": marker,
        },
        "controls": [
            {"name": "adds-a-secret", "provider": {"type": "python", "module": "tests.e2e.secretfuncs"}}
        ],
        "steady-state-hypothesis": {
            "title": "healthy",
            "probes": [
                {
                    **_py("leak-inline", "leak", value="${inline}", marker="${marker}"),
                    "tolerance": {"type": "jsonpath", "path": "$.state", "expect": "healthy"},
                },
            ],
        },
        "method": method
        if method is not None
        else [
            {
                **_py("dump-all", "dump"),
                "provider": {**_py("d", "dump")["provider"], "secrets": ["api", "vf", "ctl"]},
            },
            _py("leak-env", "leak", value="${env}"),
            _py("leak-marked", "leak", value="${marked}"),
            _py("leak-dsn", "leak", value="${dsn}"),
            _py("boom", "boom", kind="action", value="${inline}"),
            {
                "type": "probe",
                "name": "http-with-credentials",
                "provider": {"type": "http", "url": f"http://svc:{HTTP_PW}@127.0.0.1:9/x", "timeout": 1},
            },
            {
                "type": "probe",
                "name": "echo",
                "provider": {"type": "process", "path": "echo", "arguments": "${env}"},
            },
        ],
        "rollbacks": [_py("leak-in-rollback", "leak", kind="action", value="${env}")],
        **top,
    }
    for p in doc["steady-state-hypothesis"]["probes"] + doc["method"]:
        if p.get("provider", {}).get("type") == "python":
            p["provider"].setdefault("secrets", ["api"])
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def var_file(tmp: Path) -> Path:
    path = tmp / "vars.yaml"
    path.write_text(yaml.safe_dump({"secrets": {"vf": {"token": VARFILE}}}))
    return path


REPORTS = (
    "--html",
    "report.html",
    "--markdown",
    "postmortem.md",
    "--junit",
    "junit.xml",
    "--summary",
    "summary.md",
)


def run(
    tmp: Path, exp: Path, *extra: str, output: str = "text", force_color: bool = False
) -> subprocess.CompletedProcess[str]:
    reports = [a if a.startswith("--") else str(tmp / "out" / a) for a in REPORTS]
    (tmp / "out").mkdir(exist_ok=True)
    return cli(
        "run",
        "--run-dir",
        str(tmp / "run"),
        "--var-file",
        str(var_file(tmp)),
        "--journal-path",
        str(tmp / "out" / "journal-copy.json"),
        "--output",
        output,
        *reports,
        *extra,
        str(exp),
        cwd=tmp,
        environ=env(tmp / "home", **({"FORCE_COLOR": "1"} if force_color else {})),
    )


def assert_no_leak(tmp: Path, proc: subprocess.CompletedProcess[str], *more: Path) -> None:
    found = leaks(proc.stdout, proc.stderr, tmp / "run", tmp / "out", tmp / "home", *more)
    assert not found, "\n".join(found)


def test_success_every_source_every_output_format(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    for output in ("text", "json"):
        proc = run(tmp_path, exp, output=output)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        journal = json.loads((tmp_path / "run" / "journal.json").read_text())
        # the secrets really went through: outputs, the http error, the exception, the control
        outputs = {r["activity"]["name"]: r for r in journal["run"]}
        assert outputs["leak-env"]["output"]["plain"] == "the value is ***!"
        assert outputs["leak-env"]["output"]["b64"] == "***"
        assert (
            outputs["leak-dsn"]["output"]["plain"] == "the value is postgresql://chaos:***@127.0.0.1:1/chaos!"
        )
        assert set(outputs["dump-all"]["output"]) == {"inline", "env", "token", "ctl_token"}
        assert all(v["plain"] == "the value is ***!" for v in outputs["dump-all"]["output"].values())
        assert "login refused for *** (***)" in outputs["boom"]["exception"][-1]
        assert "svc:***@127.0.0.1" in outputs["http-with-credentials"]["exception"][-1]
        assert journal["chaoslab"]["controls_errors"] == [
            "control adds-a-secret.after_activity_control: ValueError: control saw ***"
        ]
        assert journal["experiment"]["secrets"]["api"]["inline"] == "***"
        assert_no_leak(tmp_path, proc)
        if output == "json":
            assert json.loads(proc.stdout)["title"] == "secrets everywhere ***"
    # metrics labels, and a Pushgateway URL with credentials in the error when it is down
    metrics = tmp_path / "out" / "metrics.prom"
    pushgateway = f"http://pgw:{HTTP_PW}@127.0.0.1:9"
    again = cli(
        "report",
        str(tmp_path / "run"),
        "--metrics-file",
        str(metrics),
        "--pushgateway",
        pushgateway,
        cwd=tmp_path,
        environ=env(tmp_path / "home"),
    )
    assert again.returncode == 5, again.stdout + again.stderr  # the push fails: nothing listens
    assert "pgw:***@127.0.0.1:9" in again.stderr
    assert 'experiment="secrets everywhere ***"' in metrics.read_text()
    assert_no_leak(tmp_path, again)


def test_report_of_a_journal_written_before_masking(tmp_path: Path) -> None:
    """`chaoslab report` masks what an older, unmasked journal still holds."""
    proc = run(tmp_path, experiment(tmp_path, method=[_py("leak-env", "leak", value="${env}")]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    journal["experiment"]["secrets"]["api"]["inline"] = INLINE
    journal["run"][0]["output"] = {"plain": f"old chaoslab leaked {INLINE} and {DSN_PW}"}
    journal["chaoslab"]["reason"] = f"see postgresql://chaos:{DSN_PW}@db/x"
    old = tmp_path / "old"
    old.mkdir()
    (old / "journal.json").write_text(json.dumps(journal))
    out = tmp_path / "old-reports"
    rendered = cli(
        "report",
        str(old / "journal.json"),
        *("--html", str(out / "r.html"), "--markdown", str(out / "r.md")),
        *("--junit", str(out / "r.xml"), "--summary", str(out / "s.md")),
        *("--metrics-file", str(out / "m.prom")),
        cwd=tmp_path,
        environ=env(tmp_path / "home"),
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    assert len(list(out.iterdir())) == 5
    found = leaks(rendered.stdout, rendered.stderr, out)
    assert not found, "\n".join(found)


def test_failure_deviated_run_on_the_rich_console(tmp_path: Path) -> None:
    exp = experiment(
        tmp_path, method=[_py("break-it", "touch", kind="action", path=str(tmp_path / "broken"))]
    )
    proc = run(tmp_path, exp, force_color=True)
    assert "\x1b[" in proc.stdout  # rich wrote the progress (colour codes)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # deviated: the after-check fails
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["steady_states"]["after"]["probes"][0]["output"]["plain"] == "the value is ***!"
    assert_no_leak(tmp_path, proc)


def test_exception_in_chaoslab_itself_and_its_error_text(tmp_path: Path) -> None:
    # the process driver's own error names the target, which holds the env secret
    exp = experiment(tmp_path, method=[{"do": "process.kill", "target": "pattern:no-such-process-${env}"}])
    proc = run(tmp_path, exp, output="json")
    assert proc.returncode in (2, 5), proc.stdout + proc.stderr
    assert "***" in proc.stdout + proc.stderr
    assert_no_leak(tmp_path, proc)


def test_invalid_input_error_messages_are_masked(tmp_path: Path) -> None:
    exp = experiment(tmp_path, method=[{"do": "process.kill", "target": "pid:1", "with": {"signal": INLINE}}])
    for output in ("text", "json"):
        proc = run(tmp_path, exp, output=output)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "signal" in proc.stdout + proc.stderr
        assert_no_leak(tmp_path, proc)
        for command in ("validate", "plan"):
            checked = cli(command, "--output", output, str(exp), cwd=tmp_path, environ=env(tmp_path / "home"))
            assert checked.returncode == 2, checked.stdout + checked.stderr
            assert "***" in checked.stdout + checked.stderr
            assert_no_leak(tmp_path, checked)


def test_lab_run_with_load_slos_and_a_fault(tmp_path: Path) -> None:
    exp = experiment(
        tmp_path,
        method=[
            {"do": "process.suspend", "name": "pause-replica", "target": "lab:replica-2", "duration": "1s"},
            _py("leak-env", "leak", value="${env}"),
            _py("leak-marked", "leak", value="${marked}"),
        ],
        lab=True,
        load={"target": "lab:lb", "path": "/", "rate": 50, "timeout": "2s"},
        windows={"baseline": "2s", "recovery": "1s", "after": "2s"},
        slo=[{"name": "availability", "sli": "availability", "objective": 0.5}],
    )
    proc = run(tmp_path, exp, output="json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["title"] == "secrets everywhere ***" and result["slo"]
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["chaoslab"]["series"]  # the lab's SLI series went through the masker too
    assert_no_leak(tmp_path, proc)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line holds the env secret (a fault's target pattern)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--token={ENV}"])
    yield proc
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def suspend(duration: str) -> dict[str, Any]:
    return {
        "do": "process.suspend",
        "name": "suspend-by-secret",
        "target": "pattern:--token=${env}",
        "duration": duration,
    }


def test_sigkill_then_recover_with_a_secret_in_the_fault_record(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    exp = experiment(tmp_path, method=[suspend("120s")])
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(tmp_path / "run"), str(exp)],
        cwd=tmp_path,
        env=env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_event(tmp_path / "run" / "events.ndjson", "fault-injected")
    assert stopped(sleeper.pid)
    proc.kill()
    out, err = proc.communicate(timeout=30)
    (entry,) = (home / "ledger" / "open").glob("*.json")
    doc = json.loads(entry.read_text())
    assert doc["record"]["target"] == "pattern:--token=${chaoslab-secret:1}"
    assert doc["sealed"]["1"]["ref"] == {"env": "H15_ENV"}

    # recover without the secret's source: the entry stays open, with a clear reason
    no_secret = {k: v for k, v in env(home).items() if k != "H15_ENV"}
    blind = cli("recover", cwd=tmp_path, environ=no_secret)
    assert blind.returncode == 6, blind.stdout + blind.stderr
    assert "needs a secret" in blind.stdout and "environment variable H15_ENV" in blind.stdout
    assert entry.exists() and stopped(sleeper.pid)
    assert (
        '"status": "needs-secret"'
        in cli("recover", "--output", "json", cwd=tmp_path, environ=no_secret).stdout
    )
    # the sealed entry still guards its target: a run on the same process is refused
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({"title": "t", "description": "d", "method": [
        {"do": "process.suspend", "target": f"pid:{sleeper.pid}", "duration": "1s"}]}))  # fmt: skip
    refused = cli("run", "--run-dir", str(tmp_path / "same"), str(same), cwd=tmp_path, environ=no_secret)
    assert refused.returncode == 5 and "open entry" in refused.stdout, refused.stdout + refused.stderr

    recovered = cli("recover", "--output", "json", cwd=tmp_path, environ=env(home))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert not stopped(sleeper.pid)
    outcome = json.loads(recovered.stdout)["outcomes"][0]
    assert outcome["clean"] is True and outcome["target"] == "pattern:--token=***"
    closed = json.loads((home / "ledger" / "closed" / entry.name).read_text())
    assert closed["state"] == "closed"
    found = leaks(
        out, err, blind.stdout, blind.stderr, recovered.stdout, recovered.stderr, tmp_path / "run", home
    )
    assert not found, "\n".join(found)


def test_a_fault_holding_a_secret_with_no_source_to_read_again_is_refused(tmp_path: Path) -> None:
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--token={CONTROL}"])
    try:
        # only the control knows this secret: after a crash nothing could read it again
        exp = experiment(tmp_path, method=[{**suspend("5s"), "target": "pattern:--token=${ctl_token}"}])
        proc = cli(
            "run", "--run-dir", str(tmp_path / "run"), str(exp), cwd=tmp_path, environ=env(tmp_path / "home")
        )
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert "could not read again after a crash" in proc.stdout
        assert not stopped(target.pid), "a refused fault touches nothing"
        assert not list((tmp_path / "home" / "ledger" / "open").glob("*.json"))
    finally:
        target.kill()
        target.wait()
    found = leaks(proc.stdout, proc.stderr, tmp_path / "run", tmp_path / "home")
    assert not found, "\n".join(found)


def test_guard_abort(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    from tests.integration.matrix_support import flip_server

    with flip_server() as server:
        flip_url = server.flip_url.replace("http://", f"http://flipper:{HTTP_PW}@")
        method = [
            suspend("60s"),
            {"type": "action", "name": "flip", "provider": {"type": "http", "url": flip_url, "timeout": 5}},
            {**_py("hold", "leak", kind="action", value="${env}"), "pauses": {"after": 20}},
        ]
        exp = experiment(
            tmp_path,
            method=method,
            load={"target": server.url, "rate": 100},
            guard={"hard_limit": {"error_rate": 0.5, "for": "1s"}},
            windows={"baseline": "2s", "after": "0s"},
            slo=[{"name": "availability", "sli": "availability", "objective": 0.9, "windows": ["baseline"]}],
        )
        proc = run(tmp_path, exp)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # aborted by the guard
    assert not stopped(sleeper.pid)
    assert "guard tripped" in proc.stdout
    assert_no_leak(tmp_path, proc)


def test_gate_with_reports_and_metrics(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    # the gate runs `chaoslab run` without a var file: give the var-file scope a value inline
    doc = yaml.safe_load(exp.read_text())
    doc["secrets"]["vf"]["token"] = VARFILE
    exp.write_text(yaml.safe_dump(doc))
    out = tmp_path / "gate"
    proc = cli(
        "gate",
        str(exp),
        "--output-dir",
        str(out),
        "--metrics-file",
        str(out / "metrics.prom"),
        "--output",
        "json",
        cwd=tmp_path,
        environ=env(tmp_path / "home"),
    )
    assert proc.returncode in (0, 10), proc.stdout + proc.stderr
    assert "chaoslab_gate_score" in (out / "metrics.prom").read_text()
    found = leaks(proc.stdout, proc.stderr, out, tmp_path / "home")
    assert not found, "\n".join(found)


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: list[str] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(self.rfile.read(n).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_scheduler_history_and_webhooks(tmp_path: Path) -> None:
    exp = experiment(tmp_path, method=[_py("boom", "boom", kind="action", value="${env}")])
    doc = yaml.safe_load(exp.read_text())
    doc["secrets"]["vf"]["token"] = VARFILE
    exp.write_text(yaml.safe_dump(doc))
    _Hook.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        scenarios = tmp_path / "scenarios"
        scenarios.mkdir()
        hook = f"http://hookuser:{DSN_PW}@127.0.0.1:{server.server_address[1]}/hook"
        (scenarios / "s.yaml").write_text(
            f"name: secretive\ntrigger: {{interval: 1m}}\nsteps: [../{exp.name}]\nnotify: [{{webhook: '{hook}'}}]\n"
        )
        environ = env(
            tmp_path / "home",
            CHAOSLAB_STORE=f"sqlite:///{tmp_path / 'store.db'}",
            CHAOSLAB_SCENARIOS=str(scenarios),
        )
        once = subprocess.run(
            [
                sys.executable,
                "-m",
                "chaoslab.cli",
                "schedule",
                "run",
                "--once",
                "--runs-dir",
                str(tmp_path / "sched"),
            ],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert once.returncode == 0, once.stdout + once.stderr
        hist = subprocess.run(
            [sys.executable, "-m", "chaoslab.cli", "schedule", "history", "--output", "json"],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
        rows = json.loads(hist.stdout)
        assert rows and rows[-1]["status"] == "finished"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert len(_Hook.bodies) >= 2  # start and finish
    assert any("secretive" in b for b in _Hook.bodies)
    found = leaks(
        once.stdout,
        once.stderr,
        hist.stdout,
        hist.stderr,
        *_Hook.bodies,
        tmp_path / "sched",
        tmp_path / "store.db",
        tmp_path / "home",
    )
    assert not found, "\n".join(found)
