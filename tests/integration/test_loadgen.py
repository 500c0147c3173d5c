"""The load generator against a real lab replica: rate, latency from the schedule, bounds."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoslab.httpcore import ErrorKind
from chaoslab.lab.supervisor import free_port, wait_port
from chaoslab.sli.base import ExactLatencies
from chaoslab.sli.ctk import slo_check
from chaoslab.sli.loadgen import LoadGenerator
from chaoslab.sli.series_file import SeriesFileSource
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.lab.replica", "--name", "replica-t", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert wait_port(port, time.monotonic() + 10, proc), "replica did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


def test_rate_is_achieved_and_every_request_recorded(replica: str) -> None:
    gen = LoadGenerator(url=replica + "/", rate=500, max_duration_s=2.0, timeout_s=2.0)
    gen.start()
    assert gen.wait(10)
    gen.stop()
    assert len(gen.code) == 1000  # exactly rate × duration: open loop, bounded in time
    assert set(gen.code) == {200}
    sched = sorted(gen.sched)
    gaps = [b - a for a, b in zip(sched, sched[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 500, rel=1e-6)
    assert all(0 < lat < 0.5 for lat in gen.latency)
    c = gen.counts(gen.epoch, gen.epoch + 10)
    assert (c.total, c.good, c.errors) == (1000, 1000, 0)
    assert len(gen.series()) == 2 and all(r.n == 500 for r in gen.series())


def test_latency_counts_from_the_schedule(replica: str) -> None:
    # /work?ms=100 on one single-threaded replica at 20 req/s: requests queue behind each
    # other. Measured from the scheduled time, the 20th request waits about a second;
    # a closed-loop tool would report ~100 ms for every request (coordinated omission).
    gen = LoadGenerator(url=replica + "/work?ms=100", rate=20, max_duration_s=1.0, timeout_s=5.0)
    gen.start()
    assert gen.wait(15)
    assert len(gen.code) == 20 and set(gen.code) == {200}
    latencies = list(gen.latency)
    # The replica works 20 × 100 ms = 2 s; the last answer comes ≥ 2 s after the start.
    assert max(s + lat for s, lat in zip(gen.sched, gen.latency, strict=True)) >= 1.95
    assert max(latencies) > 0.9
    assert sum(latencies) / len(latencies) > 0.3


def test_bounded_by_count(replica: str) -> None:
    gen = LoadGenerator(url=replica + "/", rate=1000, max_requests=50, max_duration_s=60)
    start = time.monotonic()
    gen.start()
    assert gen.wait(5)
    assert len(gen.code) == 50
    assert time.monotonic() - start < 2.0


def test_stop_ends_early(replica: str) -> None:
    gen = LoadGenerator(url=replica + "/", rate=200, max_duration_s=60)
    gen.start()
    wait_until(lambda: len(gen.code) >= 50, timeout_s=10, what="50 answered requests")
    start = time.monotonic()
    gen.stop()
    assert time.monotonic() - start < 1.0
    assert not gen.running
    assert 50 <= len(gen.code) <= 150


def test_connect_errors_and_timeouts_are_outcomes(replica: str) -> None:
    closed = free_port()
    gen = LoadGenerator(url=f"http://127.0.0.1:{closed}/", rate=100, max_duration_s=0.5)
    gen.start()
    assert gen.wait(5)
    assert len(gen.code) == 50 and set(gen.code) == {int(ErrorKind.CONNECT)}
    assert gen.counts(0, math.inf).errors == 50

    slow = LoadGenerator(url=replica + "/work?ms=300", rate=10, max_duration_s=0.3, timeout_s=0.1)
    slow.start()
    assert slow.wait(10)
    assert int(ErrorKind.TIMEOUT) in set(slow.code)
    timed_out = [slow.latency[i] for i in range(len(slow.code)) if slow.code[i] == ErrorKind.TIMEOUT]
    assert all(0.1 <= lat < 0.3 for lat in timed_out)
    assert slow.outcome_counts().get("timeout", 0) == len(timed_out)


def test_series_file_percentiles_and_ctk_check(replica: str, tmp_path: Path) -> None:
    path = tmp_path / "series.ndjson"
    gen = LoadGenerator(url=replica + "/", rate=400, max_duration_s=3.0, series_path=path)
    gen.start()
    assert gen.wait(10)
    rows = SeriesFileSource(path).series()
    assert [r.n for r in rows] == [400, 400, 400]
    exact = ExactLatencies(gen.latency)
    reported = SeriesFileSource(path).latencies(0, math.inf)
    for q in (0.5, 0.99):
        rank = math.ceil(q * exact.n)
        # Log buckets of 1%: the reported value is within half a bucket of the exact one.
        assert reported.value_at_rank(rank) == pytest.approx(exact.value_at_rank(rank), rel=0.006)
    result = slo_check({"sli": "availability", "objective": 0.99}, last="2s", series_file=str(path))
    assert result["verdict"] == "pass" and result["samples"] == 800


def test_records_since_gives_every_request_once_with_its_send_index(replica: str) -> None:
    """What the guard reads: each scheduled request exactly once, its index i sent at
    epoch + i / rate, in pages that resume where the last one ended."""
    gen = LoadGenerator(url=replica + "/", rate=400, max_duration_s=1.0, timeout_s=2.0)
    gen.start()
    seen: list[tuple[int, int, float]] = []
    position = 0

    def read_a_page() -> bool:
        """One page, as the guard reads them while the load runs; True once it has ended."""
        nonlocal position
        position, page = gen.records_since(position)
        seen.extend(page)
        return not gen.running

    wait_until(read_a_page, timeout_s=10, interval_s=0.01, what="the load to end")
    gen.stop()
    position, page = gen.records_since(position)
    seen += page
    assert sorted(i for i, _, _ in seen) == list(range(400))
    assert all(code == 200 and 0 < lat < 1 for _, code, lat in seen)
    assert gen.records_since(position) == (position, [])
    by_index = {i: lat for i, _, lat in seen}
    for offset, lat in zip(gen.sched, gen.latency, strict=True):
        assert by_index[round(offset * 400)] == lat


def test_routes_take_turns_and_each_route_is_a_view_of_its_own_requests(replica: str) -> None:
    """Two routes at 400 req/s: 200 each, interleaved; one answers 404 (not good), the
    other 200; each route's view counts, times and charts only its own requests, and an
    objective with ``route:`` is judged on that view."""
    from chaoslab.errors import SLIError
    from chaoslab.model.sections import SLO, SLIKind
    from chaoslab.sli.slo import judge

    gen = LoadGenerator(
        url=replica + "/", rate=400, max_duration_s=1.0, routes=(("checkout", "/checkout"), ("gone", "/nope"))
    )
    gen.start()
    assert gen.wait(10)
    gen.stop()
    assert len(gen.code) == 400 and sorted(set(gen.code)) == [200, 404]
    # route = request index mod 2: the codes alternate exactly with the send order
    by_index = sorted(zip(gen.sched, gen.code, strict=True))
    assert [c for _, c in by_index] == [200, 404] * 200
    t0, t1 = gen.epoch, gen.epoch + 5
    checkout, gone = gen.route("checkout"), gen.route("gone")
    assert (checkout.counts(t0, t1).total, checkout.counts(t0, t1).good) == (200, 200)
    assert (gone.counts(t0, t1).total, gone.counts(t0, t1).good) == (200, 0)
    assert sum(r.n for r in checkout.series()) == 200 and all(r.good == r.n for r in checkout.series())
    assert all(r.good == 0 for r in gone.series())
    assert gone.latencies(t0, t1).count_le(10.0) == 0  # not served: slower than any threshold
    with pytest.raises(SLIError, match="no route 'cart'"):
        gen.route("cart")
    slos = [
        SLO(name=f"{r}-availability", sli=SLIKind.AVAILABILITY, objective=0.9, route=r)
        for r in ("checkout", "gone")
    ]
    results = {r.objective: r for r in judge(slos, {"load": gen}, {"during": (t0, t1)})}
    assert results["checkout-availability"].verdict == "pass"
    assert results["gone-availability"].verdict == "fail"
    assert results["gone-availability"].detail["slo"] == "availability ≥ 0.9 on route gone"
