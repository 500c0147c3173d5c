"""Benchmark of the fault proxy (chaoslab.drivers.proxy) against its anchors.

(a) no toxics: added round-trip latency p50/p99 versus a direct connection
    (ping-pong over one connection) — target p50 < 100 µs;
(b) bulk throughput through the proxy, versus direct and versus HAProxy in TCP mode
    (Debian package ``haproxy``; skipped with a note if it is not installed);
(c) latency toxic of 100 ms: error of the added latency at p50 (±2 ms) and p99 (±5 ms).

Everything runs on 127.0.0.1; every loop is bounded in count and time; every process
started here is stopped by pid. Run: ``.venv/bin/python benchmarks/bench_proxy.py
[--loop auto|uvloop|asyncio]`` (the proxy's event loop; auto = uvloop when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

PY = sys.executable
MSG = b"x" * 64
PING_ITERS = 8000
PING_BLOCKS = 16
BULK_BYTES = 512 * 1024 * 1024
LAT_CONNS, LAT_ITERS = 4, 75

# Upstream services in a child process: an echo service and a bulk source.
SERVICES = textwrap.dedent(
    """
    import socket, sys, threading
    def echo(c):
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := c.recv(65536):
                c.sendall(data)
    def source(c):
        with c:
            n = int(c.recv(64).decode() or 0)
            buf = b"\\0" * (1 << 20)
            while n > 0:
                c.sendall(buf[: min(n, len(buf))]); n -= len(buf)
    def guarded(fn, c):
        try:
            fn(c)
        except OSError:
            pass  # a probe connection reset by haproxy's readiness check
    def serve(sock, fn):
        while True:
            c, _ = sock.accept()
            threading.Thread(target=guarded, args=(fn, c), daemon=True).start()
    socks = []
    for fn in (echo, source):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64); socks.append(s)
        threading.Thread(target=serve, args=(s, fn), daemon=True).start()
    print(socks[0].getsockname()[1], socks[1].getsockname()[1], flush=True)
    sys.stdin.read()
    """
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def process(argv: list[str], **kw: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stdin):
            if f:
                f.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping_pong(port: int, iters: int) -> list[float]:
    """Round-trip times in seconds over one connection."""
    out: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(5):  # warm-up
            s.sendall(MSG)
            s.recv(4096)
        deadline = time.monotonic() + 30
        for _ in range(iters):
            t0 = time.perf_counter()
            s.sendall(MSG)
            got = 0
            while got < len(MSG):
                n = len(s.recv(4096))
                if not n:
                    raise ConnectionError("connection closed during ping-pong")
                got += n
            out.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    return out


def bulk(port: int, nbytes: int) -> float:
    """MB/s (10^6 bytes) of one bulk download of ``nbytes``."""
    buf = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        s.sendall(str(nbytes).encode())
        got = 0
        while got < nbytes:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        elapsed = time.perf_counter() - t0
    return got / elapsed / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto", help="proxy event loop")
    loop = ap.parse_args().loop
    started = time.monotonic()
    with process([PY, "-c", SERVICES]) as services:
        assert services.stdout is not None
        echo_port, source_port = map(int, services.stdout.readline().split())
        with process([PY, "-m", "chaoslab.drivers.proxy", "--api", "127.0.0.1:0", "--loop", loop]) as px:
            assert px.stdout is not None
            api_port = int(px.stdout.readline().split("api=127.0.0.1:")[1].split()[0])
            api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
            echo_px = api.post("/proxies", json={"name": "echo", "upstream": f"127.0.0.1:{echo_port}"}).json()
            src_px = api.post(
                "/proxies", json={"name": "source", "upstream": f"127.0.0.1:{source_port}"}
            ).json()
            echo_proxy_port = int(echo_px["listen"].rsplit(":", 1)[1])
            src_proxy_port = int(src_px["listen"].rsplit(":", 1)[1])

            # (a) added latency, no toxics. Other work on the machine comes and goes, so
            # runs are interleaved in blocks and the added p50 is the median over blocks.
            ping_pong(echo_proxy_port, 200)  # warm-up
            direct: list[float] = []
            proxied: list[float] = []
            block_added: list[float] = []
            for _ in range(PING_BLOCKS):
                d = ping_pong(echo_port, PING_ITERS // PING_BLOCKS)
                p = ping_pong(echo_proxy_port, PING_ITERS // PING_BLOCKS)
                block_added.append((pct(p, 0.5) - pct(d, 0.5)) * 1e6)
                direct += d
                proxied += p
            d50, d99 = pct(direct, 0.5) * 1e6, pct(direct, 0.99) * 1e6
            p50, p99 = pct(proxied, 0.5) * 1e6, pct(proxied, 0.99) * 1e6
            added50 = statistics.median(block_added)
            print("(a) ping-pong RTT, 64-byte messages, one connection, no toxics")
            print(f"    direct : p50 {d50:8.1f} µs  p99 {d99:8.1f} µs  (n={len(direct)})")
            print(f"    proxy  : p50 {p50:8.1f} µs  p99 {p99:8.1f} µs  (n={len(proxied)})")
            verdict = "OK" if added50 < 100 else "OVER TARGET"
            print(
                f"    added  : p50 {added50:8.1f} µs (median of {PING_BLOCKS} interleaved blocks; "
                f"pooled {p50 - d50:.1f})  p99 {p99 - d99:8.1f} µs  "
                f"(target p50 < 100 µs: {verdict})"
            )
            print(f"    proxy/direct p50 ratio: {p50 / d50:.2f}")

            # (b) throughput
            print(f"(b) bulk download of {BULK_BYTES >> 20} MiB, one connection")
            best = {
                "direct": max(bulk(source_port, BULK_BYTES) for _ in range(2)),
                "proxy": max(bulk(src_proxy_port, BULK_BYTES) for _ in range(2)),
            }
            haproxy = shutil.which("haproxy")
            if haproxy:
                best["haproxy"] = run_haproxy(haproxy, source_port)
            for name, mbps in best.items():
                print(f"    {name:8}: {mbps:8.0f} MB/s")
            print(f"    proxy/direct  = {best['proxy'] / best['direct']:.2f}")
            if "haproxy" in best:
                print(f"    proxy/haproxy = {best['proxy'] / best['haproxy']:.2f}")
            else:
                print("    haproxy not installed (apt-get install haproxy): no ratio")

            # (c) latency toxic of 100 ms, downstream, on live connections in parallel
            base50 = pct(proxied, 0.5)
            api.post(
                "/proxies/echo/toxics",
                json={"name": "lat", "type": "latency", "attributes": {"latency": 100}},
            ).raise_for_status()
            samples: list[float] = []
            lock = threading.Lock()

            def worker() -> None:
                rtts = ping_pong(echo_proxy_port, LAT_ITERS)
                with lock:
                    samples.extend(rtts)

            threads = [threading.Thread(target=worker) for _ in range(LAT_CONNS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            api.delete("/proxies/echo/toxics/lat").raise_for_status()
            added = [(s - base50) * 1000 for s in samples]
            e50 = pct(added, 0.5) - 100
            e99 = pct(added, 0.99) - 100
            print(f"(c) latency toxic 100 ms: {len(added)} round trips on {LAT_CONNS} connections")
            print(
                f"    added p50 {pct(added, 0.5):7.2f} ms (error {e50:+.2f}, target ±2)  "
                f"p99 {pct(added, 0.99):7.2f} ms (error {e99:+.2f}, target ±5)  "
                f"p90 {pct(added, 0.9):.2f} ms  min {min(added):.2f} ms"
            )
            ok = abs(e50) <= 2 and abs(e99) <= 5
            print(f"    {'OK' if ok else 'OVER TARGET'}")
            floor = asyncio.run(timer_lateness())
            print(
                f"    floor: a bare asyncio timer on this machine now is late by "
                f"p50 {pct(floor, 0.5):.2f} ms, p99 {pct(floor, 0.99):.2f} ms "
                "(CPU contention, epoll's 1 ms resolution)"
            )
            api.close()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total {time.monotonic() - started:.1f} s; load average {load} on {os.cpu_count()} CPUs")
    return 0


async def timer_lateness(n: int = 200) -> list[float]:
    """Lateness (ms) of plain ``loop.call_at`` timers: what any asyncio delay can reach."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    for i in range(n):
        deadline = loop.time() + 0.005 + (i % 10) * 0.0001
        fut: asyncio.Future[None] = loop.create_future()
        loop.call_at(deadline, fut.set_result, None)
        await fut
        late.append((loop.time() - deadline) * 1000)
    return late


def run_haproxy(binary: str, upstream: int) -> float:
    port = free_port()
    config = textwrap.dedent(
        f"""
        global
            maxconn 256
        defaults
            mode tcp
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend bench
            bind 127.0.0.1:{port}
            default_backend up
        backend up
            server s1 127.0.0.1:{upstream}
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "haproxy.cfg")
        with open(path, "w") as fh:
            fh.write(config)
        with process([binary, "-db", "-f", path], stderr=subprocess.DEVNULL):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            return max(bulk(port, BULK_BYTES) for _ in range(2))


if __name__ == "__main__":
    raise SystemExit(main())
