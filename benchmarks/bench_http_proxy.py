"""Benchmark of the fault proxy's HTTP mode against its anchors.

The origin is HAProxy answering ``200 ok`` by itself (``http-request return``), so the
origin costs microseconds and never limits what is measured in front of it.

(a) added latency, no fault: HTTP GETs ping-ponged over one kept-alive connection to
    the origin directly, through the chaoslab proxy in TCP mode, in HTTP mode, and
    through HAProxy in HTTP mode (one thread); p50/p99 of the round trip and what each
    adds to the direct p50 — target: HTTP mode adds under 150 µs at p50;
(b) requests per second with ``wrk`` (one thread, 32 kept-alive connections) through
    HTTP mode versus through HAProxy in HTTP mode, each proxy pinned to core 0 with
    ``taskset`` (origin and wrk on core 1) — target: HTTP mode sustains at least half of HAProxy's.

The machine may be shared: the load average before and after is printed with the
numbers. Everything runs on 127.0.0.1; every loop is bounded in count and time; every
process started here is stopped by pid. Run: ``.venv/bin/python
benchmarks/bench_http_proxy.py [--loop auto|uvloop|asyncio] [--iters N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

PY = sys.executable
REQUEST = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def wait_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def haproxy(binary: str, config: str, cpu: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "haproxy.cfg")
        with open(path, "w") as fh:
            fh.write(textwrap.dedent(config))
        with process(["taskset", "-c", str(cpu), binary, "-db", "-f", path]):
            yield


def origin_config(port: int) -> str:
    return f"""
        global
            nbthread 1
            maxconn 1024
        defaults
            mode http
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend origin
            bind 127.0.0.1:{port}
            http-request return status 200 content-type text/plain string ok
        """


def front_config(port: int, upstream: int) -> str:
    return f"""
        global
            nbthread 1
            maxconn 1024
        defaults
            mode http
            option http-keep-alive
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend bench
            bind 127.0.0.1:{port}
            default_backend up
        backend up
            http-reuse always
            server s1 127.0.0.1:{upstream}
        """


def _read_response(sock: socket.socket, buf: bytearray) -> None:
    """Read one response with a Content-Length from ``sock`` (``buf`` keeps any excess)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", bytes(buf[:end]))
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= total:
                del buf[:total]
                return
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during a response")
        buf += chunk
    raise TimeoutError("no response within 5 s")


def ping_pong(port: int, iters: int) -> list[float]:
    """Round-trip times (s) of ``iters`` GETs over one kept-alive connection."""
    out: list[float] = []
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(50):  # warm-up
            s.sendall(REQUEST)
            _read_response(s, buf)
        deadline = time.monotonic() + 60
        for _ in range(iters):
            t0 = time.perf_counter()
            s.sendall(REQUEST)
            _read_response(s, buf)
            out.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    return out


def wrk(port: int, seconds: float) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/bench"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate: {out!r}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} failed responses")
    return float(m.group(1))


@contextmanager
def chaoslab_proxy(loop: str, origin: int) -> Iterator[dict[str, int]]:
    """A chaoslab proxy server pinned to core 0, with a TCP-mode and an HTTP-mode proxy."""
    argv = ["taskset", "-c", "0", PY, "-m", "chaoslab.drivers.proxy", "--api", "127.0.0.1:0", "--loop", loop]
    with process(argv) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("chaoslab-proxy api="):
            raise RuntimeError(f"proxy did not start: {line!r}")
        api = "http://" + line.split("api=")[1].split()[0]
        ports = {}
        with httpx.Client(base_url=api, timeout=10) as client:
            for mode in ("tcp", "http"):
                resp = client.post(
                    "/proxies", json={"name": mode, "upstream": f"127.0.0.1:{origin}", "mode": mode}
                )
                resp.raise_for_status()
                ports[mode] = int(resp.json()["listen"].rsplit(":", 1)[1])
        yield ports


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    parser.add_argument("--iters", type=int, default=5000, help="round trips per path (a)")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per proxy (b)")
    args = parser.parse_args()
    binary = shutil.which("haproxy")
    if binary is None or shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("bench_http_proxy: needs haproxy, wrk and taskset (Debian: haproxy wrk util-linux)")
        return 2
    print(f"before: {load()}")
    origin, front = free_port(), free_port()
    # The proxy under test (chaoslab's or HAProxy) alone on core 0; origin and wrk on core 1.
    with haproxy(binary, origin_config(origin), 1), haproxy(binary, front_config(front, origin), 0):
        wait_port(origin)
        wait_port(front)
        with chaoslab_proxy(args.loop, origin) as ports:
            paths = {
                "direct": origin,
                "tcp mode": ports["tcp"],
                "http mode": ports["http"],
                "haproxy http": front,
            }
            rtts = {name: ping_pong(port, args.iters) for name, port in paths.items()}
            base = pct(rtts["direct"], 0.5)
            print(f"(a) round trip of one GET over one kept-alive connection, n={args.iters}")
            print(f"    {'path':<14}{'p50 µs':>10}{'p99 µs':>10}{'added p50 µs':>15}")
            for name, samples in rtts.items():
                p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
                print(f"    {name:<14}{p50 * 1e6:>10.1f}{p99 * 1e6:>10.1f}{(p50 - base) * 1e6:>15.1f}")
            added = (pct(rtts["http mode"], 0.5) - base) * 1e6
            verdict = "OK" if added < 150 else "MISSED"
            print(f"    http mode adds {added:.1f} µs at p50 (target < 150 µs): {verdict}")
            ours = wrk(ports["http"], args.seconds)
            theirs = wrk(front, args.seconds)
            ratio = ours / theirs
            print(f"(b) wrk -t1 -c32 {args.seconds:g}s, proxy on core 0, origin and wrk on core 1")
            print(f"    http mode {ours:,.0f} req/s, haproxy http {theirs:,.0f} req/s, ratio {ratio:.2f}")
            print(f"    target ratio >= 0.5: {'OK' if ratio >= 0.5 else 'MISSED'}")
    print(f"after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
