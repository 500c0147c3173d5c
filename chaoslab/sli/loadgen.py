"""Synthetic open-loop load: a fixed request rate, every request recorded.

Open loop, no coordinated omission: request ``i`` is *scheduled* at ``start + i / rate``
whatever happened to earlier requests, and its latency is measured from that scheduled
time, not from when a connection was free to send it. A stalled service therefore shows
up as the latency its users would see, instead of silently slowing the generator down.

Recorded per request, in compact arrays (about 18 bytes a request): scheduled send
time (seconds after ``epoch``), latency (seconds) and outcome (HTTP status, or a negative
``ErrorKind``: connect, reset, timeout, protocol). ``good`` = 2xx/3xx; ``error`` = 5xx or
any transport failure.

Runs in its own thread with its own asyncio loop, on the raw protocols of
``chaoslab.httpcore`` (callbacks, no task per request), so one core sends thousands
of requests per second; a hand-written client because general clients (httpx, aiohttp)
spend several times more CPU per request and would become the bottleneck they measure.

Bounded: stops at ``max_duration_s`` or ``max_requests``; at most ``max_connections``
sockets; requests that cannot get a connection wait in a queue and time out from their
scheduled time like the rest.

Routes: with ``routes`` (name → path), request ``i`` goes to route ``i mod len(routes)``,
so every route gets an equal, interleaved share of the rate and a request's route follows
from its index alone (nothing more is stored than a byte per request). ``route(name)`` is
a view of the same samples restricted to one route, which an objective with ``route:``
is judged on: "checkout breaks, catalogue holds" in one run.

Live series for other threads and processes: with ``series_path`` set, each completed
second is appended to that file as one JSON line (``SecondStats.to_dict``). A Chaos
Toolkit probe in the same run reads it through ``chaoslab.sli.ctk``.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from array import array
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaoslab.errors import SLIError
from chaoslab.httpcore import ClientConnection, ErrorKind, build_request
from chaoslab.model.sections import LoadSpec as LoadSpec
from chaoslab.sli.base import (
    Counts,
    ExactLatencies,
    LatencyView,
    SecondStats,
    SLISource,
    hist_index,
    hist_quantile,
)

MAX_REQUESTS_CAP = 20_000_000
SWEEP_S = 0.01


def is_good(code: int) -> bool:
    return 200 <= code < 400


def is_error(code: int) -> bool:
    return code < 0 or code >= 500


def resolve_url(spec: LoadSpec, base_dir: Path) -> str:
    """``lab:lb`` → ``http://127.0.0.1:<port><path>`` through the lab's state file."""
    if spec.target.startswith("lab:"):
        from chaoslab.drivers.targets import LabState
        from chaoslab.paths import lab_dir

        comp = LabState.load(lab_dir(base_dir)).component(spec.target[4:])
        return f"http://127.0.0.1:{comp.port}{spec.path}"
    return spec.target.rstrip("/") + spec.path


class LoadGenerator(SLISource):
    """Open-loop HTTP load at ``rate`` requests/s. See the module docstring."""

    def __init__(
        self,
        *,
        url: str,
        rate: float,
        timeout_s: float = 2.0,
        method: str = "GET",
        max_duration_s: float = 3600.0,
        max_requests: int | None = None,
        max_connections: int = 256,
        series_path: Path | None = None,
        name: str = "load",
        routes: Sequence[tuple[str, str]] = (),
    ) -> None:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.name = name
        self.url = url
        self.host = split.hostname
        self.port = split.port or (443 if split.scheme == "https" else 80)
        self.tls = split.scheme == "https"
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        host_header = split.netloc
        self.raw_request = build_request(method, host_header, target)
        self.routes = tuple(name for name, _ in routes)
        base = split.path.rstrip("/")
        self.raw_requests = [build_request(method, host_header, base + path) for _, path in routes] or [
            self.raw_request
        ]
        self.head_only = method == "HEAD"
        self.rate = float(rate)
        self.timeout_s = float(timeout_s)
        self.max_duration_s = float(max_duration_s)
        cap = math.ceil(rate * max_duration_s) + 1
        self.max_requests = min(max_requests if max_requests is not None else cap, cap, MAX_REQUESTS_CAP)
        self.max_connections = max_connections
        self.series_path = series_path
        # Samples; appended by the loop thread under the lock, read by anyone.
        self._lock = threading.Lock()
        self.sched = array("d")
        self.latency = array("d")
        self.code = array("h")
        self.route_of = array("B")  # route index of each request (0 without routes)
        self._seconds: dict[int, list[Any]] = {}  # second → [n, good, errors, hist]
        self._written = 0  # seconds [0, _written) are in the series file
        self.epoch = 0.0  # Unix time of scheduled offset 0
        self._mono0 = 0.0
        self._last = 0.0
        self.connections_opened = 0
        self.overdue_s = min(1.0, timeout_s)
        self._overdue: list[float] = []  # Unix send times of requests unanswered > overdue_s
        # Unix time of the last sweep, on the generator's own clock: a request unanswered
        # then was really unanswered. Behind the wall clock when this thread was stalled.
        self.progress_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=f"chaoslab-{self.name}", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise SLIError(f"load generator failed to start: {self._error}") from self._error

    def stop(self) -> None:
        """Stop sending; wait (≤ timeout) for requests in flight; flush the series file."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()  # the loop checks it at least every SWEEP_S
        thread.join(self.timeout_s + 5.0)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the generator finishes by itself; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by start()/snapshot, never lost
            self._error = exc
            self._started.set()

    # -- the engine --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = self._stop
        interval = 1.0 / self.rate
        timeout = self.timeout_s
        idle: list[ClientConnection] = []
        inflight: set[ClientConnection] = set()
        pending: deque[float] = deque()  # scheduled times waiting for a connection
        all_conns: set[ClientConnection] = set()
        opening = 0
        raws, head_only = self.raw_requests, self.head_only
        n_routes = len(raws)
        rate = self.rate
        record = self._record
        tasks: set[asyncio.Task[None]] = set()

        def send(conn: ClientConnection, sched: float) -> None:
            conn.tag = sched
            conn.deadline = sched + timeout
            inflight.add(conn)
            conn.send(raws[round((sched - mono0) * rate) % n_routes], head_only=head_only)

        def pump() -> None:
            nonlocal opening
            while pending and idle:
                conn = idle.pop()
                if conn.closed:
                    all_conns.discard(conn)
                    continue
                send(conn, pending.popleft())
            want = len(pending) - opening
            while want > 0 and len(all_conns) + opening < self.max_connections:
                opening += 1
                want -= 1
                task = loop.create_task(open_conn())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def on_response(conn: ClientConnection, status: int, _msg: bytes | None) -> None:
            inflight.discard(conn)
            sched = conn.tag
            assert isinstance(sched, float)
            record(sched, loop.time() - sched, status)
            if conn.closed:
                all_conns.discard(conn)
            else:
                idle.append(conn)
            if pending:
                pump()

        def on_error(conn: ClientConnection, kind: ErrorKind) -> None:
            inflight.discard(conn)
            all_conns.discard(conn)
            sched = conn.tag
            assert isinstance(sched, float)
            record(sched, loop.time() - sched, int(kind))
            if pending:
                pump()

        async def open_conn() -> None:
            nonlocal opening
            try:
                _, conn = await loop.create_connection(
                    lambda: ClientConnection(on_response, on_error, keep_body=False),
                    self.host,
                    self.port,
                    ssl=self.tls or None,
                )
            except OSError:
                opening -= 1
                if pending:
                    sched = pending.popleft()
                    record(sched, loop.time() - sched, int(ErrorKind.CONNECT))
                return
            opening -= 1
            self.connections_opened += 1
            all_conns.add(conn)
            idle.append(conn)
            pump()

        def sweep(now: float) -> None:
            """Timeouts: requests in flight, and requests still waiting for a connection."""
            for conn in [c for c in inflight if c.deadline <= now]:
                inflight.discard(conn)
                all_conns.discard(conn)
                sched = conn.tag
                assert isinstance(sched, float)
                conn.abort()
                record(sched, now - sched, int(ErrorKind.TIMEOUT))
            while pending and pending[0] + timeout <= now:
                sched = pending.popleft()
                record(sched, now - sched, int(ErrorKind.TIMEOUT))
            # Requests still unanswered after ``overdue_s``: the guard counts them as bad
            # now rather than when they time out (a hung service must brake the run fast).
            late = now - self.overdue_s
            overdue = [c.tag for c in inflight if isinstance(c.tag, float) and c.tag <= late]
            overdue += [s for s in pending if s <= late]
            with self._lock:
                self._overdue = [self.epoch + (t - mono0) for t in overdue]
                # Everything answered before this sweep is recorded by now: a reader may
                # take a request unanswered at this time as unanswered (progress_at).
                self.progress_at = self.epoch + (now - mono0)
            self._flush_series(now - mono0, final=False)

        mono0 = loop.time() + 0.001
        self._mono0 = mono0
        self.epoch = time.time() + (mono0 - loop.time())
        end = mono0 + self.max_duration_s
        max_requests = self.max_requests
        nxt = 0
        next_sweep = mono0
        self._started.set()

        while not stop.is_set():
            now = loop.time()
            # Dispatch every request whose scheduled time has come (a late wake-up sends a
            # burst; the latencies still count from the schedule).
            while nxt < max_requests:
                sched = mono0 + nxt * interval
                if sched > now or sched >= end:
                    break
                pending.append(sched)
                nxt += 1
            if pending:
                pump()
            if now >= next_sweep:
                next_sweep = now + SWEEP_S
                sweep(now)
            if nxt >= max_requests or mono0 + nxt * interval >= end:
                if not inflight and not pending and not opening:
                    break
                wake = next_sweep
            else:
                wake = min(mono0 + nxt * interval, next_sweep)
            # A plain sleep (no wait_for task per wake-up): stop() is seen within SWEEP_S.
            await asyncio.sleep(max(0.0, wake - loop.time()))
        # Stopped early: give requests in flight their chance to finish (≤ timeout).
        deadline = loop.time() + timeout
        while (inflight or pending or opening) and loop.time() < deadline:
            await asyncio.sleep(SWEEP_S)
            sweep(loop.time())
        now = loop.time()
        for conn in list(inflight):
            tag = conn.tag
            assert isinstance(tag, float)
            conn.abort()
            record(tag, now - tag, int(ErrorKind.TIMEOUT))
        while pending:
            sched = pending.popleft()
            record(sched, now - sched, int(ErrorKind.TIMEOUT))
        for conn in all_conns | set(idle):
            conn.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.sleep(0)  # let transports close before the loop does
        self._flush_series(math.inf, final=True)

    def _record(self, sched_mono: float, latency: float, code: int) -> None:
        offset = sched_mono - self._mono0
        second = int(offset)
        good = 200 <= code < 400
        with self._lock:
            self.sched.append(offset)
            self.latency.append(latency)
            self.code.append(code)
            self.route_of.append(round(offset * self.rate) % len(self.raw_requests))
            acc = self._seconds.get(second)
            if acc is None:
                acc = self._seconds[second] = [0, 0, 0, {}]
            acc[0] += 1
            if good:
                acc[1] += 1
                idx = hist_index(latency)
                hist = acc[3]
                hist[idx] = hist.get(idx, 0) + 1
            elif code < 0 or code >= 500:
                acc[2] += 1
            self._last = self.epoch + offset + latency

    def _flush_series(self, now_offset: float, *, final: bool) -> None:
        if self.series_path is None:
            return
        # A second is complete once every request scheduled in it finished or timed out.
        done_until = math.inf if final else math.floor(now_offset - self.timeout_s - SWEEP_S * 2)
        with self._lock:
            last = max(self._seconds, default=-1)
            upto = last + 1 if final else int(min(done_until, last + 1))
            if upto <= self._written:
                return
            rows = [self._second(s, True) for s in range(self._written, upto)]
            self._written = upto
        with open(self.series_path, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")

    def _second(self, s: int, complete: bool) -> SecondStats:
        n, good, errors, hist = self._seconds.get(s, (0, 0, 0, {}))
        return SecondStats(
            t=self.epoch + s,
            n=n,
            good=good,
            errors=errors,
            p50=hist_quantile(hist, 0.50),
            p95=hist_quantile(hist, 0.95),
            p99=hist_quantile(hist, 0.99),
            hist=dict(hist),
            complete=complete,
        )

    # -- SLISource --------------------------------------------------------------------------

    def overdue(self, t0: float, t1: float) -> int:
        """Requests sent in [t0, t1) and still unanswered after ``overdue_s`` (as of the
        last sweep, every ``SWEEP_S``)."""
        with self._lock:
            return sum(1 for t in self._overdue if t0 <= t < t1)

    def records_since(self, position: int) -> tuple[int, list[tuple[int, int, float]]]:
        """Requests answered (or timed out) since ``position`` in the record, in the order
        they were recorded: ``(next position, [(request index, outcome code, latency s),
        ...])``. The request index ``i`` is the ``i``-th scheduled request (sent at ``epoch
        + i / rate``), so a reader can put outcomes back into send order."""
        with self._lock:
            end = len(self.code)
            offsets = self.sched[position:end]
            codes = self.code[position:end]
            latencies = self.latency[position:end]
        rate = self.rate
        return end, [(round(o * rate), c, lat) for o, c, lat in zip(offsets, codes, latencies, strict=True)]

    def last_sample_at(self) -> float | None:
        return self._last or None

    def _window(self, t0: float, t1: float, route: int | None = None) -> tuple[array[float], array[int], int]:
        """Copies of the latencies and codes whose scheduled time is in ``[t0, t1)`` (of
        one route's requests only, when ``route`` is its index)."""
        lo, hi = t0 - self.epoch, t1 - self.epoch
        lat: array[float] = array("d")
        codes: array[int] = array("h")
        with self._lock:
            sched, latency, code, routes = self.sched, self.latency, self.code, self.route_of
            for i in range(len(sched)):
                if lo <= sched[i] < hi and (route is None or routes[i] == route):
                    lat.append(latency[i])
                    codes.append(code[i])
        return lat, codes, len(codes)

    def route(self, name: str) -> SLISource:
        if name not in self.routes:
            raise SLIError(f"the load has no route {name!r} (routes: {', '.join(self.routes) or 'none'})")
        return _RouteView(self, self.routes.index(name), name)

    def counts(self, t0: float, t1: float, route: int | None = None) -> Counts:
        _, codes, n = self._window(t0, t1, route)
        good = sum(1 for c in codes if 200 <= c < 400)
        errors = sum(1 for c in codes if c < 0 or c >= 500)
        return Counts(total=n, good=good, errors=errors)

    def latencies(self, t0: float, t1: float, route: int | None = None) -> LatencyView:
        lat, codes, _ = self._window(t0, t1, route)
        return ExactLatencies(lat[i] if 200 <= codes[i] < 400 else math.inf for i in range(len(codes)))

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        now_offset = time.time() - self.epoch
        done_until = now_offset - self.timeout_s - SWEEP_S * 2
        finished = not self.running
        with self._lock:
            seconds = sorted(self._seconds)
            rows = [self._second(s, finished or s + 1 <= done_until) for s in seconds]
        return [r for r in rows if (t0 is None or r.t >= t0) and (t1 is None or r.t < t1)]

    def snapshot(self, last_s: float = 5.0) -> dict[str, Any]:
        """Live numbers for the console: the last ``last_s`` complete seconds."""
        rows = [r for r in self.series() if r.complete][-max(1, int(last_s)) :]
        n = sum(r.n for r in rows)
        good = sum(r.good for r in rows)
        hist: dict[int, int] = {}
        for r in rows:
            for k, v in r.hist.items():
                hist[k] = hist.get(k, 0) + v
        return {
            "requests": len(self.code),
            "rate": n / len(rows) if rows else 0.0,
            "availability": good / n if n else None,
            "p50_ms": _ms(hist_quantile(hist, 0.5)),
            "p99_ms": _ms(hist_quantile(hist, 0.99)),
            "error": repr(self._error) if self._error else None,
        }

    def outcome_counts(self) -> dict[str, int]:
        """All outcomes so far by name ("200", "503", "timeout", ...)."""
        out: dict[str, int] = {}
        with self._lock:
            for c in self.code:
                key = ErrorKind(c).name.lower() if c < 0 else str(c)
                out[key] = out.get(key, 0) + 1
        return out


class _RouteView(SLISource):
    """One route of a ``LoadGenerator``: the same samples, filtered by route index."""

    def __init__(self, load: LoadGenerator, index: int, name: str) -> None:
        self.load = load
        self.index = index
        self.name = f"{load.name}[{name}]"

    def start(self) -> None:
        """The load runs the view's requests; nothing of its own to start."""

    def stop(self) -> None:
        """Idem: the load stops them."""

    def last_sample_at(self) -> float | None:
        return self.load.last_sample_at()

    def counts(self, t0: float, t1: float) -> Counts:
        return self.load.counts(t0, t1, self.index)

    def latencies(self, t0: float, t1: float) -> LatencyView:
        return self.load.latencies(t0, t1, self.index)

    def overdue(self, t0: float, t1: float) -> int:
        load = self.load
        n = len(load.raw_requests)
        with load._lock:
            late = list(load._overdue)
        return sum(1 for t in late if t0 <= t < t1 and round((t - load.epoch) * load.rate) % n == self.index)

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        """Per-second rows of this route, built from its samples (complete as the load's)."""
        load = self.load
        complete = {r.t: r.complete for r in load.series(t0, t1)}
        acc: dict[int, list[Any]] = {}
        with load._lock:
            for i in range(len(load.sched)):
                if load.route_of[i] != self.index:
                    continue
                row = acc.setdefault(int(load.sched[i]), [0, 0, 0, {}])
                code = load.code[i]
                row[0] += 1
                if 200 <= code < 400:
                    row[1] += 1
                    idx = hist_index(load.latency[i])
                    row[3][idx] = row[3].get(idx, 0) + 1
                elif code < 0 or code >= 500:
                    row[2] += 1
        rows = [
            SecondStats(
                t=load.epoch + s,
                n=n,
                good=good,
                errors=errors,
                p50=hist_quantile(hist, 0.50),
                p95=hist_quantile(hist, 0.95),
                p99=hist_quantile(hist, 0.99),
                hist=dict(hist),
                complete=complete.get(load.epoch + s, False),
            )
            for s, (n, good, errors, hist) in sorted(acc.items())
        ]
        return [r for r in rows if (t0 is None or r.t >= t0) and (t1 is None or r.t < t1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def load_from_spec(spec: LoadSpec, *, series_path: Path | None = None, base_dir: Path) -> LoadGenerator:
    return LoadGenerator(
        url=resolve_url(spec, base_dir),
        rate=spec.rate,
        timeout_s=spec.timeout_s,
        method=spec.method,
        max_duration_s=spec.max_duration_s,
        max_connections=spec.connections,
        series_path=series_path,
        routes=tuple(spec.routes.items()),
    )
