"""The lab's supervisor: starts the fault proxy (if available), the replicas and the balancer,
restarts any of them that dies after ``--restart-delay`` seconds, and keeps the state file.

Run by ``chaoslab.lab.control.up`` as
``python -m chaoslab.lab.supervisor --dir D --replicas N --restart-delay S --daemon``.
With ``--daemon`` it forks once more and the intermediate exits, so the supervisor is
detached from the caller's session and is nobody's unreaped child.

Invariants:

- The state file (``lab.json``, see ``state.py``) is rewritten atomically on every change;
  ``supervisor.ready`` becomes true once every component answers, or ``supervisor.error``
  says why the lab could not start (and the supervisor exits after cleaning up).
- Each death is recorded under the component's ``restarts`` as
  ``{"died_at", "after_exit", "at"}`` (``at`` = when the restart happened; ``after_exit``
  is the exit status, negative for a signal). While a component waits for its restart its
  ``pid`` is null and ``alive`` false.
- Ports are never chosen and bound later by someone else: the supervisor binds each
  replica's and the balancer's listening socket and hands it over (``--listen-fd``, see
  ``listen.py``), and the proxy server picks its proxies' ports itself. A restart binds the
  component's port again. Ready means every component answered HTTP, not just a connect.
- Children get ``PR_SET_PDEATHSIG``: if the supervisor is SIGKILLed they die with it.
- On SIGTERM/SIGINT every child gets SIGTERM (SIGKILL after 3 s), is reaped, and the state
  file is removed; the supervisor started every process it stops, and stops only those.

Single-threaded on purpose: ``preexec_fn`` is only safe without threads.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chaoslab.lab.listen import bound_listener
from chaoslab.lab.proxyctl import create_proxy, proxy_module_available, start_proxy_server, stop_process
from chaoslab.lab.state import STATE_FILE, write_state

LOG_FILE = "lab.log"
PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM us when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def wait_serving(port: int, path: str, deadline: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """Until ``GET path`` on ``port`` answers 200. A connect alone proves nothing here: the
    supervisor bound the socket, so it accepts before the child serves."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    return False


@dataclass(kw_only=True)
class Child:
    """One supervised process. Mutable: owned by the supervisor loop alone."""

    name: str
    kind: str  # replica | lb
    port: int
    argv: list[str]
    proxy_port: int | None = None
    # Bound by the supervisor and handed over at spawn (``chaoslab.lab.listen``).
    listener: socket.socket | None = None
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # monotonic time of the pending restart
    restarts: list[dict[str, Any]] = field(default_factory=list)

    def to_state(self, proxy: bool) -> dict[str, Any]:
        alive = self.proc is not None and self.proc.poll() is None
        out: dict[str, Any] = {
            "kind": self.kind,
            "pid": self.proc.pid if alive and self.proc else None,
            "port": self.port,
            "alive": alive,
            "restarts": list(self.restarts),
        }
        if self.kind == "replica":
            out["proxy"] = self.name if proxy else None
            out["proxy_port"] = self.proxy_port if proxy else None
        return out


class Supervisor:
    def __init__(self, directory: Path, replicas: int, restart_delay_s: float) -> None:
        self.directory = directory
        self.restart_delay_s = restart_delay_s
        self.n_replicas = replicas
        self.log: IO[bytes] = open(directory / LOG_FILE, "ab")  # lives as long as we do
        self.children: list[Child] = []
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_api_port: int | None = None
        self.proxy_note = ""
        self.proxy_restarts: list[dict[str, Any]] = []
        self.started_at = time.time()
        self.stopping = False
        self.ready = False
        self.error: str | None = None

    # -- state ------------------------------------------------------------------------------

    def write(self) -> None:
        proxy = None
        if self.proxy is not None and self.proxy_api_port is not None:
            proxy = {
                "pid": self.proxy.pid if self.proxy.poll() is None else None,
                "api_port": self.proxy_api_port,
                "restarts": list(self.proxy_restarts),
            }
        write_state(
            self.directory,
            {
                "supervisor": {
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "restart_delay_s": self.restart_delay_s,
                    "ready": self.ready,
                    "error": self.error,
                    "proxy_note": self.proxy_note,
                    "log": str(self.directory / LOG_FILE),
                },
                "proxy": proxy,
                "components": {c.name: c.to_state(proxy is not None) for c in self.children},
            },
        )

    # -- processes ----------------------------------------------------------------------------

    def spawn(self, child: Child) -> None:
        """Start ``child`` on its listening socket: the one bound at start, or (a restart)
        its port bound again — OSError if another process took it while it was down."""
        listener = child.listener or bound_listener(child.port)
        child.listener = None
        with listener:
            fd = listener.fileno()
            child.proc = subprocess.Popen(
                [*child.argv, "--listen-fd", str(fd)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
                pass_fds=(fd,),
                preexec_fn=_die_with_parent,  # safe: this process has no threads
            )

    def start_proxy(self) -> None:
        # Its API port is chosen before the server binds it; another process may take it
        # in between, so a server that could not start gets a few fresh ports.
        for _ in range(3):
            self.proxy_api_port = free_port()
            self.proxy, self.proxy_note = start_proxy_server(
                self.proxy_api_port, stderr=self.log, preexec=_die_with_parent
            )
            if self.proxy is not None or not proxy_module_available():
                return

    def start(self) -> None:
        self.start_proxy()
        py = sys.executable
        for i in range(1, self.n_replicas + 1):
            name = f"replica-{i}"
            listener = bound_listener()
            port = listener.getsockname()[1]
            argv = [py, "-m", "chaoslab.lab.replica", "--name", name, "--port", str(port)]
            child = Child(name=name, kind="replica", port=port, argv=argv, listener=listener)
            self.children.append(child)
            self.spawn(child)
        self.create_proxies()
        listener = bound_listener()
        lb_port = listener.getsockname()[1]
        upstreams: list[str] = []
        for c in self.children:
            target = c.proxy_port if c.proxy_port is not None and self.proxy else c.port
            upstreams += ["--upstream", f"{c.name}=127.0.0.1:{target}"]
        lb = Child(
            name="lb",
            kind="lb",
            port=lb_port,
            argv=[py, "-m", "chaoslab.lab.balancer", "--port", str(lb_port), *upstreams],
            listener=listener,
        )
        self.children.append(lb)
        self.spawn(lb)
        deadline = time.monotonic() + START_TIMEOUT_S
        for c in self.children:
            path = "/__lb/status" if c.kind == "lb" else "/health"
            if not wait_serving(c.port, path, deadline, c.proc):
                raise RuntimeError(f"{c.name} did not start serving on port {c.port}")
        self.ready = True
        self.write()

    def create_proxies(self) -> None:
        if self.proxy is None or self.proxy_api_port is None:
            return
        try:
            for c in self.children:
                if c.kind == "replica":
                    # First time: the proxy server picks the port; after a proxy restart,
                    # the same one again (the balancer was told it).
                    c.proxy_port = create_proxy(self.proxy_api_port, c.name, c.proxy_port or 0, c.port)
        except OSError as exc:
            # The proxy is optional: fall back to direct paths rather than fail the lab.
            self.proxy_note = f"proxy server unusable: {exc}"
            stop_process(self.proxy)
            self.proxy = None
            for c in self.children:
                c.proxy_port = None

    def tick(self) -> None:
        """Notice deaths, run due restarts. Called every few tens of milliseconds."""
        now = time.monotonic()
        changed = False
        for c in self.children:
            if c.proc is not None and c.restart_at is None and c.proc.poll() is not None:
                c.restarts.append({"died_at": time.time(), "after_exit": c.proc.returncode, "at": None})
                c.restart_at = now + self.restart_delay_s
                changed = True
            elif c.restart_at is not None and now >= c.restart_at:
                try:
                    self.spawn(c)
                except OSError as exc:  # its port was taken while it was down: try again
                    self.log.write(f"restarting {c.name} on port {c.port}: {exc}\n".encode())
                    c.restart_at = now + 0.5
                    continue
                c.restart_at = None
                c.restarts[-1]["at"] = time.time()
                changed = True
        if self.proxy is not None and self.proxy.poll() is not None and not self.stopping:
            # The proxy carries every replica's traffic: bring it back and re-create the
            # proxies (toxics die with it, which is what a crash of a real proxy does too).
            died = {"died_at": time.time(), "after_exit": self.proxy.returncode}
            assert self.proxy_api_port is not None
            self.proxy, note = start_proxy_server(
                self.proxy_api_port, stderr=self.log, preexec=_die_with_parent
            )
            self.proxy_restarts.append({**died, "at": time.time(), "note": note})
            if self.proxy is not None:
                self.create_proxies()
            changed = True
        if changed:
            self.write()

    def shutdown(self) -> None:
        procs = [c.proc for c in self.children if c.proc is not None]
        if self.proxy is not None:
            procs.append(self.proxy)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 3.0
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            (self.directory / STATE_FILE).unlink()
        except FileNotFoundError:
            pass
        self.log.close()


def run(directory: Path, replicas: int, restart_delay_s: float) -> int:
    sup = Supervisor(directory, replicas, restart_delay_s)

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sup.write()
        sup.start()
        while not sup.stopping:
            sup.tick()
            time.sleep(0.02)
    except Exception as exc:  # report, clean up, exit non-zero: `up` shows the error
        sup.log.write(traceback.format_exc().encode())
        sup.error = f"{type(exc).__name__}: {exc}"
        sup.stopping = True
        sup.write()
        sup.shutdown()
        # Leave the error in the state file for `up` to read; `up` removes it.
        write_state(directory, {"supervisor": {"pid": os.getpid(), "error": sup.error}, "components": {}})
        return 1
    sup.stopping = True
    sup.shutdown()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaoslab.lab.supervisor")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--restart-delay", type=float, default=1.0)
    parser.add_argument("--daemon", action="store_true")
    args = parser.parse_args(argv)
    if args.daemon and os.fork() > 0:
        os._exit(0)  # the intermediate exits at once; `up` reaps it
    sys.exit(run(args.dir, args.replicas, args.restart_delay))


if __name__ == "__main__":
    main()
