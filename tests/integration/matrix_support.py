"""The moving parts of the failure matrix (tests/integration/test_failure_matrix.py).

Three kinds of things live here:

- **python providers** the experiments call from inside the ``chaoslab run`` subprocess
  (``hold``, ``crash_when``, ``touch``, ``flip``). They talk to the test through files in
  a *gate* directory: ``hold`` writes ``NAME.held`` and returns once the test writes
  ``NAME.release`` (bounded by its own timeout), so the test can look at the target while
  the fault is certainly held, then decide when the run goes on;
- **targets**: one ``OpCase`` per fault operation of the local drivers. The process,
  stress and net cases are the contract suite's own ``FaultCase`` targets and
  observers (imported, not copied); proxy cases (each cell on a proxy server of its
  own) observe the proxy server directly (its API is the target's state, not the
  driver's code) and, for latency/timeout/down, the bytes that flow through it;
- **run plumbing**: the experiment each (operation, scenario) cell runs, a subprocess
  handle on ``chaoslab run``, its event log, and the ledger seen from the test.

Hand-written rather than a library: the flip server is eight lines of ``http.server``
(the load must hit something that answers 200 until told to answer 500, and nothing
ready-made does exactly that).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from chaoslab.drivers.base import RevertRecord
from chaoslab.engine.journal import read_events
from chaoslab.safety.ledger import Ledger
from tests.conftest import poll
from tests.contract import (
    cases_docker,
    cases_kubernetes,
    cases_net,
    cases_process,
    cases_ssh,
    cases_stress,
)
from tests.contract.cases import FaultCase, Target
from tests.integration.proxykit import own_proxy
from tests.statepaths import env_state

ROOT = Path(__file__).resolve().parents[2]
CHAOSLAB = (sys.executable, "-m", "chaoslab.cli")
SUPPORT = "tests.integration.matrix_support"

# A fault with no `duration` is held until the method ends; its lease is the experiment's
# `lease` plus the engine's 5 s margin (chaoslab.engine.faults.LEASE_MARGIN_S). 1 s here
# gives 6 s: long enough that in every non-SIGKILL cell the runner, not the lease, is
# what cleans up (the tests assert the clean check came before the lease expired), and
# short enough that the SIGKILL cells watch the lease end the fault.
EXPERIMENT_LEASE = "1s"


# --- python providers (run inside the chaoslab run subprocess) ---------------------------


def hold(gate: str, name: str, timeout: float = 20.0) -> str:
    """Announce ``NAME.held`` and wait (at most ``timeout`` s) for ``NAME.release``."""
    where = Path(gate)
    (where / f"{name}.held").write_text(str(time.time()))
    release = where / f"{name}.release"
    return "released" if poll(release.exists, timeout_s=timeout) else "timed out"


def crash_when(marker: str) -> bool:
    """A steady-state probe that holds until ``marker`` exists, then crashes."""
    if Path(marker).exists():
        raise RuntimeError(f"probe crashed: {marker} exists")
    return True


def touch(path: str) -> str:
    Path(path).write_text("x")
    return path


def flip(url: str) -> int:
    """Tell the flip server to answer 500 from now on."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)


# --- the load target for the guard cells -------------------------------------------------


class _FlipHandler(http.server.BaseHTTPRequestHandler):
    server: _FlipServer

    def do_GET(self) -> None:
        if self.path == "/flip":
            self.server.failing.set()
            code = 200
        elif self.path == "/hang":
            self.server.hanging.set()
            code = 200
        else:
            if self.server.hanging.is_set():
                time.sleep(HANG_S)  # a service that stops answering: the client times out first
            code = 500 if self.server.failing.is_set() else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a hundred requests a second would drown the test output


class _FlipServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FlipHandler)
        self.failing = threading.Event()
        self.hanging = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that timed out and hung up on a hanging answer: expected


HANG_S = 2.5


@dataclass(frozen=True, kw_only=True)
class FlipServer:
    """An HTTP service on 127.0.0.1 answering 200 until ``GET /flip``, then 500; after
    ``GET /hang`` every answer takes ``HANG_S`` seconds."""

    port: int
    failing: threading.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def flip_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/flip"

    @property
    def hang_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hang"


@contextlib.contextmanager
def flip_server() -> Iterator[FlipServer]:
    server = _FlipServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield FlipServer(port=int(server.server_address[1]), failing=server.failing)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- fault operations --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OpCase:
    """One fault operation in the matrix.

    - ``make_target``: the contract suite's target factory; for proxy cases a proxy on a
      proxy server of the cell's own (tests/integration/proxykit.py ``own_proxy``);
      ``None``: the ``proxy`` fixture of proxykit (a module-scoped server);
    - ``observe(target, record)``: True while any sign of the fault shows on the target;
    - ``took_effect(target, record)``: True once the fault is seen to have happened (for
      a kill the process is dead even after the supervisor restarted it); defaults to
      ``observe``;
    - ``lease``: False for faults with no lease (the system heals instead).
    """

    id: str
    driver: str
    op: str
    args: Mapping[str, Any]
    make_target: Callable[[Path], AbstractContextManager[Target]] | None
    observe: Callable[[Target, RevertRecord], bool]
    took_effect: Callable[[Target, RevertRecord], bool] | None = None
    lease: bool = True
    heal_s: float = 10.0
    available: Callable[[], tuple[bool, str]] = field(default=lambda: (True, ""))

    def effect(self, target: Target, record: RevertRecord) -> bool:
        return (self.took_effect or self.observe)(target, record)


def _from_contract(case: FaultCase, *, case_id: str | None = None, **over: Any) -> OpCase:
    return OpCase(
        id=case_id or case.id,
        driver=case.driver,
        op=case.op,
        args=case.args,
        make_target=case.make_target,
        observe=case.observe,
        lease=case.lease_s is not None,
        heal_s=case.heal_s,
        available=case.available,
        **over,
    )


def _contract(cases: list[FaultCase], case_id: str) -> FaultCase:
    return next(c for c in cases if c.id == case_id)


def _killed(target: Target, record: RevertRecord) -> bool:
    """Every process the kill signalled is gone (whatever restarted since)."""
    for ref in record.data.get("signalled", []):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(int(ref["pid"]))
            same = abs(proc.create_time() - float(ref["create_time"])) < 0.01
            if same and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return bool(record.data.get("signalled"))


# Proxy observation: the server's own view of the proxy, plus the bytes for the faults
# whose effect a single echo exchange shows cheaply.


def _proxy_state(target: Target) -> dict[str, Any]:
    ref = target.handle
    state: dict[str, Any] = ref.http("GET", f"/proxies/{ref.name}").json()
    return state


def _server_shows(target: Target, record: RevertRecord) -> bool:
    state = _proxy_state(target)
    if record.operation == "down":
        return not state.get("enabled", True)
    return any(str(t.get("name", "")).startswith("chaoslab-") for t in state.get("toxics") or [])


def _echo(port: int, timeout_s: float) -> tuple[bytes | None, float]:
    """Send b"ping" through the proxy: (reply or None on failure, seconds taken)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"ping")
            buf = b""
            while len(buf) < 4:
                chunk = sock.recv(4 - len(buf))
                if not chunk:
                    return None, time.monotonic() - t0
                buf += chunk
            return buf, time.monotonic() - t0
    except OSError:
        return None, time.monotonic() - t0


PROXY_LATENCY_S = 0.3


def _slow_echo(target: Target, record: RevertRecord) -> bool:
    reply, took = _echo(target.handle.port, 2.0)
    return reply is None or took >= PROXY_LATENCY_S * 0.8


def _no_echo(target: Target, record: RevertRecord) -> bool:
    reply, _ = _echo(target.handle.port, 0.4)
    return reply != b"ping"


def _proxy_observer(
    behaviour: Callable[[Target, RevertRecord], bool] | None,
) -> Callable[[Target, RevertRecord], bool]:
    def observe(target: Target, record: RevertRecord) -> bool:
        if _server_shows(target, record):
            return True
        return behaviour is not None and behaviour(target, record)

    return observe


@contextlib.contextmanager
def _own_proxy(workdir: Path) -> Iterator[Target]:
    """A proxy on a proxy server process of the cell's own (``proxykit.own_proxy``, about
    0.15 s to start): a cell may freeze or break that server and nothing else sees it."""
    with own_proxy() as ref:
        yield Target(selector=ref.target, handle=ref)


def _proxy(
    op: str, args: Mapping[str, Any], behaviour: Callable[[Target, RevertRecord], bool] | None = None
) -> OpCase:
    return OpCase(
        id=f"proxy.{op}",
        driver="proxy",
        op=op,
        args=args,
        make_target=_own_proxy,
        observe=_proxy_observer(behaviour),
    )


def op_cases() -> list[OpCase]:
    """Every fault operation of every driver, in matrix order."""
    proc, stress, net = cases_process.CASES, cases_stress.CASES, cases_net.CASES
    return [
        _from_contract(_contract(proc, "process.kill"), took_effect=_killed),
        _from_contract(_contract(proc, "process.suspend")),
        # stress-ng where the driver offers it (the backend people run); disk is builtin only.
        _from_contract(_contract(stress, "stress.cpu.stress-ng"), case_id="stress.cpu"),
        _from_contract(_contract(stress, "stress.memory.stress-ng"), case_id="stress.memory"),
        _from_contract(_contract(stress, "stress.disk")),
        _from_contract(_contract(net, "net.drop")),
        _from_contract(_contract(net, "net.partition")),
        _proxy("latency", {"latency": f"{int(PROXY_LATENCY_S * 1000)}ms"}, _slow_echo),
        _proxy("bandwidth", {"rate": 1}),
        _proxy("timeout", {"timeout": 0}, _no_echo),
        _proxy("reset_peer", {"timeout": 0}, _no_echo),
        _proxy("slicer", {"average_size": 1, "delay_us": 1000}),
        _proxy("slow_close", {"delay": "2s"}),
        _proxy("limit_data", {"bytes": 0}, _no_echo),
        _proxy("down", {}, _no_echo),
        # Remote and container drivers: the same columns on their contract targets.
        # A killed or restarted container heals in about a second: "took effect" is that
        # the start the record saw is over, not that it is still out of service.
        *(
            _from_contract(c, took_effect=cases_docker.started_anew if c.lease_s is None else None)
            for c in cases_docker.CASES
        ),
        # netem is left to the contract suite, like net.latency: this kernel has none.
        *(_from_contract(c) for c in cases_ssh.CASES if c.id != "ssh.netem"),
        *(_from_contract(c) for c in cases_kubernetes.CASES),
    ]


# --- scenarios and their experiments -----------------------------------------------------

SCENARIOS = (
    "success",
    "guard-abort",
    "action-exception",
    "probe-crash",
    "activity-timeout",
    "sigint",
    "sigterm",
    "second-sigint",
    "sigkill-recover",
    "sigkill-lease",
)

# The exit code each scenario must end with (SIGKILL cells: the runner's return code).
EXPECTED_EXIT = {
    "success": 0,
    "guard-abort": 3,
    # Chaos Toolkit semantics: a method action that fails or outlives its deadline is
    # recorded in the journal with its status; it is not a deviation, so the run passes.
    "action-exception": 0,
    "activity-timeout": 0,
    # The probe of the steady-state hypothesis crashes at the "after" check: not met.
    "probe-crash": 1,
    "sigint": 130,
    "sigterm": 130,
    "second-sigint": 130,
    "sigkill-recover": -signal.SIGKILL,
    "sigkill-lease": -signal.SIGKILL,
}


def _py(
    name: str, func: str, /, *, activity_type: str = "action", timeout: float | None = None, **arguments: Any
) -> dict[str, Any]:
    act: dict[str, Any] = {
        "type": activity_type,
        "name": name,
        "provider": {"type": "python", "module": SUPPORT, "func": func, "arguments": arguments},
    }
    if timeout is not None:
        act["timeout"] = timeout
    return act


def experiment(
    case: OpCase, target: Target, scenario: str, gate: Path, *, flip: FlipServer | None = None
) -> dict[str, Any]:
    """The experiment of one cell: the fault, a hold the test releases, the scenario."""
    fault: dict[str, Any] = {
        "do": f"{case.driver}.{case.op}",
        "name": "fault",
        "with": {**case.args, **target.args},
    }
    if target.selector is not None:
        fault["target"] = target.selector
    g = str(gate)
    method: list[dict[str, Any]] = [fault, _py("hold", "hold", gate=g, name="held")]
    doc: dict[str, Any] = {
        "title": f"matrix {case.id} / {scenario}",
        "description": "one cell of the failure matrix",
        "lease": EXPERIMENT_LEASE,
        "method": method,
    }
    if scenario == "guard-abort":
        assert flip is not None
        method += [_py("flip", "flip", url=flip.flip_url), _py("hold-breach", "hold", gate=g, name="breach")]
        doc["load"] = {"target": flip.url, "rate": 100}
        doc["guard"] = {"hard_limit": {"error_rate": 0.5, "for": "1s"}}
        doc["windows"] = {"baseline": "2s", "after": "0s"}
        doc["slo"] = [
            {"name": "availability", "sli": "availability", "objective": 0.9, "windows": ["baseline"]}
        ]
    elif scenario == "action-exception":
        method.append(
            {
                "type": "action",
                "name": "boom",
                "provider": {"type": "python", "module": "tests.e2e.ctkfuncs", "func": "boom"},
            }
        )
    elif scenario == "probe-crash":
        marker = str(gate / "crash")
        doc["steady-state-hypothesis"] = {
            "title": "the probe holds",
            "probes": [
                {**_py("crashy", "crash_when", activity_type="probe", marker=marker), "tolerance": True}
            ],
        }
        method.append(_py("arm-crash", "touch", path=marker))
    elif scenario == "activity-timeout":
        method.append(
            {
                "type": "action",
                "name": "slow",
                "timeout": 1,
                "provider": {
                    "type": "python",
                    "module": "tests.e2e.ctkfuncs",
                    "func": "sleep_quietly",
                    "arguments": {"seconds": 30},
                },
            }
        )
    elif scenario == "second-sigint":
        doc["rollbacks"] = [_py("slow-rollback", "hold", gate=g, name="rollback", timeout=5.0)]
    return doc


# --- the run in a subprocess, seen from the test -----------------------------------------


@dataclass
class Run:
    """A ``chaoslab run`` subprocess and the files it writes.

    Its stdout and stderr are read as they come (``err_so_far``), so a test can wait for
    what the run says, e.g. that it acknowledged a signal; ``out``/``err`` hold all of
    them once ``finish`` returns."""

    proc: subprocess.Popen[str]
    run_dir: Path
    gate: Path
    out: str = ""
    err: str = ""
    _chunks: dict[str, list[str]] = field(default_factory=lambda: {"out": [], "err": []}, repr=False)
    _readers: list[threading.Thread] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for key, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            assert stream is not None
            reader = threading.Thread(target=self._drain, args=(stream, self._chunks[key]), daemon=True)
            reader.start()
            self._readers.append(reader)

    @staticmethod
    def _drain(stream: Any, into: list[str]) -> None:
        for line in iter(stream.readline, ""):
            into.append(line)

    def err_so_far(self) -> str:
        return "".join(self._chunks["err"])

    @property
    def events_path(self) -> Path:
        return self.run_dir / "events.ndjson"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / "journal.json"

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path) if self.events_path.exists() else []

    def journal(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.journal_path.read_text("utf-8"))
        return doc

    def wait_gate(self, name: str, timeout_s: float = 30.0) -> None:
        """Wait for ``hold`` to announce NAME; fail early if the run ended first."""
        held = self.gate / f"{name}.held"
        ok = poll(lambda: held.exists() or self.proc.poll() is not None, timeout_s=timeout_s) is not None
        if not held.exists():
            self.finish(timeout_s=5)
            raise AssertionError(
                f"{name} never held (ok={ok}, exit {self.proc.returncode}):\n{self.out}\n{self.err}"
            )

    def release(self, name: str) -> None:
        (self.gate / f"{name}.release").write_text("go")

    def wait_event(self, kind: str, timeout_s: float = 30.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events() if e["kind"] == kind]
            return bool(found) or self.proc.poll() is not None

        poll(seen, timeout_s=timeout_s, interval_s=0.05)
        if not found:
            raise AssertionError(f"no {kind} event (exit {self.proc.poll()})")
        return found[0]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout_s: float = 60.0) -> int:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._collect()
            raise AssertionError(
                f"chaoslab run did not finish within {timeout_s:g}s:\n{self.out}\n{self.err}"
            ) from None
        self._collect()
        return self.proc.returncode

    def _collect(self) -> None:
        """Everything the run wrote, once its pipes are at EOF (the readers end there)."""
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.out, self.err = "".join(self._chunks["out"]), "".join(self._chunks["err"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(timeout_s=10)


def env() -> dict[str, str]:
    """The test's environment (its CHAOSLAB_HOME) with tests.* importable."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def start_run(
    doc: Mapping[str, Any],
    workdir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    relative: bool = False,
) -> Run:
    """``chaoslab run`` of ``doc`` in ``workdir`` (its cwd); ``relative``: the experiment
    file and the run directory are given relative to it, as a user in that directory would."""
    gate = workdir / "gate"
    gate.mkdir(parents=True, exist_ok=True)
    exp = workdir / "experiment.json"
    exp.write_text(json.dumps(doc, indent=2))
    run_dir = workdir / "run"
    args = (
        ("run", "--run-dir", "run", "experiment.json")
        if relative
        else ("run", "--run-dir", str(run_dir), str(exp))
    )
    proc = subprocess.Popen(
        [*CHAOSLAB, *args],
        cwd=workdir,
        env={**env(), **(extra_env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Run(proc=proc, run_dir=run_dir, gate=gate)


def recover_cli(timeout_s: float = 60.0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHAOSLAB, "recover", "--output", "json"],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def ledger_state(fault_id: str) -> str:
    """``open``, ``closed`` or ``absent``: where the ledger has this fault's entry."""
    ledger = Ledger(env_state().ledger)
    if ledger.entry(fault_id) is not None:
        return "open"
    if (ledger.closed_dir / f"{fault_id}.json").exists():
        return "closed"
    return "absent"


def ledger_record(fault_id: str) -> RevertRecord:
    entry = Ledger(env_state().ledger).entry(fault_id)
    assert entry is not None, f"no open ledger entry for {fault_id}"
    return entry.record


def by_kind(events: list[dict[str, Any]], kind: str, fault_id: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind and (fault_id is None or e.get("fault_id") == fault_id)]


# --- the published matrix ----------------------------------------------------------------


def matrix_markdown(junit_xml: Path) -> str:
    """The matrix as a Markdown table from a pytest ``--junitxml`` report of the matrix."""
    import xml.etree.ElementTree as ET  # only for this report

    cells: dict[tuple[str, str], tuple[str, float]] = {}
    extras: list[tuple[str, str, float]] = []
    ids = [c.id for c in op_cases()]
    for tc in ET.parse(junit_xml).getroot().iter("testcase"):
        name, took = tc.get("name", ""), float(tc.get("time", "0"))
        outcome = "pass"
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome = "FAIL"
            elif child.tag == "skipped":
                outcome = "xfail" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skip"
        prefix = next((p for p in ("test_cell[", "test_edge[") if name.startswith(p)), None)
        if prefix is not None:
            param = name[len(prefix) : -1]
            op = max((i for i in ids if param.startswith(i + "-")), key=len)
            cells[(op, param[len(op) + 1 :])] = (outcome, took)
        else:
            extras.append((name, outcome, took))
    from tests.integration.matrix_edges import EDGE_COLUMNS, EDGE_EXIT, not_applicable

    mark = {"pass": "✅", "FAIL": "❌", "skip": "⏭", "xfail": "🐞"}
    cases = {c.id: c for c in op_cases()}
    na = not_applicable(list(cases.values()))
    notes: dict[str, int] = {}
    lines: list[str] = []
    for columns, exit_of in ((SCENARIOS, EXPECTED_EXIT), (EDGE_COLUMNS, EDGE_EXIT)):
        lines += ["| operation | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for op in ids:
            row = []
            for sc in columns:
                if (op, sc) in na:
                    row.append(f"n/a [{notes.setdefault(na[op, sc], len(notes) + 1)}]")
                    continue
                outcome, took = cells.get((op, sc), ("skip", 0.0))
                row.append(f"{mark[outcome]} {took:.1f}s")
            lines.append(f"| `{op}` | " + " | ".join(row) + " |")
        lines += ["| *exit code* | " + " | ".join(str(exit_of[sc]) for sc in columns) + " |", ""]
    lines += [f"[{n}] {reason}" for reason, n in notes.items()]
    counts = {k: sum(1 for o, _ in cells.values() if o == k) for k in mark}
    total_s = sum(t for _, t in cells.values())
    lines += [
        "",
        f"{len(cells)} cells: {counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped;"
        f" {total_s:.0f} s of test time.",
    ]
    if extras:
        lines += ["", "| edge case | outcome | time |", "|---|---|---|"]
        lines += [f"| `{n}` | {mark[o]} {o} | {t:.1f}s |" for n, o, t in extras]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(matrix_markdown(Path(sys.argv[1])))
