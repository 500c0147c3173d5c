"""Real targets for driver tests: sleepers, a mini lab supervisor, a netns TCP server.

Every helper is a context manager that stops what it started (by pid) and waits for it.
Every process it starts is bounded in time (it exits by itself after ``MAX_LIFE_S``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import poll, wait_until

MAX_LIFE_S = 120
PR_SET_CHILD_SUBREAPER = 36


def stop(proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started (SIGCONT first: it may be suspended), and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the subreaper of what a test orphans, and reap those zombies.

    Watchdogs and stressors are detached on purpose; on a host whose PID 1 does not
    reap (this sandbox's init does not), they would linger as zombies after exiting.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        reap_zombie_children()


def reap_zombie_children() -> None:
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


# --- sleepers -------------------------------------------------------------------------


def unique_marker(prefix: str = "chaoslab-test") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _shows(pid: int, marker: str) -> bool:
    """Whether ``/proc/PID/cmdline`` holds ``marker`` yet (it is the interpreter's until exec)."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextlib.contextmanager
def sleepers(marker: str, n: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` idle python processes whose command line contains ``marker``."""
    code = f"import time; time.sleep({MAX_LIFE_S})"
    procs = [subprocess.Popen([sys.executable, "-c", code, marker]) for _ in range(n)]
    try:
        for proc in procs:  # selectors read /proc: wait until each command line shows the marker
            wait_until(
                functools.partial(_shows, proc.pid, marker),
                timeout_s=10.0,
                interval_s=0.01,
                what=f"pid {proc.pid} to show {marker!r} in its command line",
            )
        yield procs
    finally:
        for proc in procs:
            stop(proc, sig=signal.SIGKILL)


# --- a mini lab supervisor ------------------------------------------------------------

_SUPERVISOR = r"""
import json, os, signal, subprocess, sys, time
from pathlib import Path
from chaoslab.lab.state import write_state
lab_dir, name, delay = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
marker = sys.argv[4] + "-child"  # built here so this supervisor's argv never matches it
end = time.monotonic() + float(sys.argv[5])
child = None
restarts = []
def bye(*_):
    if child is not None and child.poll() is None:
        child.kill(); child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while time.monotonic() < end:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    write_state(lab_dir, {"supervisor": {"pid": os.getpid()}, "components": {name: {
        "kind": "replica", "pid": child.pid, "port": None, "restarts": restarts}}})
    while child.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    if child.poll() is None:
        break
    restarts.append({"at": time.time(), "after_exit": child.returncode})
    time.sleep(delay)  # a supervisor's restart back-off: the outage is observable
bye()
"""


@dataclass(frozen=True, kw_only=True)
class LabReplica:
    """A lab component served by a real supervisor process that restarts it."""

    name: str
    lab_dir: Path
    marker: str
    supervisor: subprocess.Popen[bytes] = field(repr=False)

    def pid(self) -> int | None:
        try:
            raw = json.loads((self.lab_dir / "lab.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        pid = raw["components"][self.name]["pid"]
        return int(pid) if pid else None

    def live(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


@contextlib.contextmanager
def lab_replica(lab_dir: Path, name: str = "replica-t", restart_delay_s: float = 1.0) -> Iterator[LabReplica]:
    prefix = unique_marker("chaoslab-lab")
    marker = f"{prefix}-child"
    argv = [sys.executable, "-c", _SUPERVISOR, str(lab_dir), name, str(restart_delay_s), prefix]
    sup = subprocess.Popen([*argv, str(MAX_LIFE_S)])
    replica = LabReplica(name=name, lab_dir=lab_dir, marker=marker, supervisor=sup)
    try:
        if poll(replica.live, timeout_s=10, interval_s=0.05) is None:
            raise RuntimeError("the test lab supervisor did not start its replica")
        yield replica
    finally:
        stop(sup)


# --- a TCP server in a throwaway network namespace ------------------------------------

_SERVER = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(64); srv.settimeout(0.5)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        continue
    conn.close()
"""

_CONNECT = r"""
import socket, sys, time
t0 = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError:
    sys.exit(1)
print(time.monotonic() - t0)
"""


@dataclass(frozen=True, kw_only=True)
class NetnsServer:
    netns: str
    port: int

    def connect_s(self, host: str = "127.0.0.1", timeout_s: float = 0.5) -> float | None:
        """Connect time from inside the namespace, or None if the connect failed."""
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                "-c",
                _CONNECT,
                host,
                str(self.port),
                str(timeout_s),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s + 10,
            check=False,
        )
        return float(done.stdout) if done.returncode == 0 else None

    def reachable(self, host: str = "127.0.0.1") -> bool:
        return self.connect_s(host) is not None


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    probe = f"clt-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return False, f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return True, ""


@contextlib.contextmanager
def netns_server(port: int = 18080) -> Iterator[NetnsServer]:
    """A namespace of our own with lo up and a TCP server on 0.0.0.0:``port``."""
    ns = f"clt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    server = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _SERVER, str(port), str(MAX_LIFE_S)]
        )
        target = NetnsServer(netns=ns, port=port)
        if poll(target.reachable, timeout_s=10, interval_s=0.05) is None:
            raise RuntimeError("the namespace's test server did not come up")
        yield target
    finally:
        if server is not None:
            stop(server)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
