"""Optional fault-proxy integration for the lab (the toxiproxy-compatible ``chaoslab.drivers.proxy``).

When the module exists and its server starts, the balancer reaches every replica through
a proxy named like the replica (``replica-2``), so proxy faults (latency, resets, bandwidth)
hit the lab's real traffic. Without it the balancer talks to the replicas directly and the
lab state says ``"proxy": null``. Everything here is plain ``http.client`` against the
Toxiproxy HTTP API (``POST /proxies``), so a real toxiproxy-server would work as well.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO


def proxy_module_available() -> bool:
    try:
        return importlib.util.find_spec("chaoslab.drivers.proxy") is not None
    except (ImportError, ValueError):
        return False


def api_request(
    port: int, method: str, path: str, body: object = None, timeout_s: float = 2.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def start_proxy_server(
    api_port: int, *, stderr: IO[bytes], preexec: Callable[[], None] | None, timeout_s: float = 8.0
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start the fault proxy's API server; return it, or None and why it is not used.

    Never raises: the lab works without the proxy.
    """
    if not proxy_module_available():
        return None, "module chaoslab.drivers.proxy is not installed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.drivers.proxy", "--api", f"127.0.0.1:{api_port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=preexec,  # safe: the supervisor is single-threaded
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"proxy server exited with status {proc.returncode}"
        try:
            status, _ = api_request(api_port, "GET", "/proxies", timeout_s=0.5)
            if status == 200:
                return proc, "ok"
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    return None, f"proxy API did not answer on port {api_port} within {timeout_s:g}s"


def create_proxy(api_port: int, name: str, listen_port: int, upstream_port: int) -> int:
    """Create (or replace) proxy ``name``: 127.0.0.1:listen_port → 127.0.0.1:upstream_port;
    returns the port it listens on (``listen_port`` 0: the proxy server picks a free one, so
    no other process can take it between the choice and the bind)."""
    spec = {
        "name": name,
        "listen": f"127.0.0.1:{listen_port}",
        "upstream": f"127.0.0.1:{upstream_port}",
        "enabled": True,
        # HTTP mode: request-level faults (http.abort, http.delay...) on the replicas as
        # well as the TCP ones. A real Toxiproxy ignores the field and forwards bytes.
        "mode": "http",
    }
    status, body = api_request(api_port, "POST", "/proxies", spec)
    if status == 409:  # already exists (a restarted supervisor): replace it
        api_request(api_port, "DELETE", f"/proxies/{name}")
        status, body = api_request(api_port, "POST", "/proxies", spec)
    if status not in (200, 201):
        raise OSError(f"creating proxy {name}: HTTP {status} {body[:200]!r}")
    try:
        return int(json.loads(body)["listen"].rsplit(":", 1)[1])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OSError(f"creating proxy {name}: no listen address in {body[:200]!r}") from exc


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; always reaps. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
