"""The sequential guard: send order, slow requests, its events, onset → detect → clean."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine import events as ev
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.console import ConsoleProgress, PlainSink
from chaoslab.engine.journal import guard_timing
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.errors import InvalidInput
from chaoslab.model.sections import GuardSection, decode_guard
from chaoslab.safety.guard import GuardSpec, SendOrder, SLOGuard, resolve_guard
from chaoslab.sli.base import Counts, ExactLatencies, LatencyView, SecondStats, SLISource
from chaoslab.verdict import Verdict
from tests.fakedriver import FakeDriver
from tests.statepaths import env_state

Outcome = Callable[[int], tuple[int, float]]  # request index -> (status, latency s)


class FakeLoad(SLISource):
    """Requests at ``rate`` from ``epoch``; request i answers ``outcome(i)`` at its send
    time plus its latency, as the load generator records it (completion order)."""

    def __init__(self, outcome: Outcome, *, rate: float = 200.0, epoch: float | None = None) -> None:
        self.name = "load"
        self.rate = rate
        self.epoch = time.time() if epoch is None else epoch
        self.overdue_s = 1.0
        self.max_requests = 10**9
        self.outcome = outcome
        self.now: Callable[[], float] = time.time

    def _done(self) -> list[tuple[float, int, int, float]]:
        """(completed at, index, status, latency) of every answered request, in completion order."""
        now = self.now()
        out = []
        for i in range(max(0, math.floor((now - self.epoch) * self.rate)) + 1):
            code, lat = self.outcome(i)
            sent = self.epoch + i / self.rate
            if sent + lat <= now:
                out.append((sent + lat, i, code, lat))
        return sorted(out)

    def records_since(self, position: int) -> tuple[int, list[tuple[int, int, float]]]:
        done = self._done()
        return len(done), [(i, c, lat) for _, i, c, lat in done[position:]]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def last_sample_at(self) -> float | None:
        return self.now()

    def counts(self, t0: float, t1: float) -> Counts:
        rows = [(c, lat) for _, i, c, lat in self._done() if t0 <= self.epoch + i / self.rate < t1]
        good = sum(1 for c, _ in rows if 200 <= c < 400)
        return Counts(total=len(rows), good=good, errors=len(rows) - good)

    def latencies(self, t0: float, t1: float) -> LatencyView | None:
        return ExactLatencies(
            lat for _, i, c, lat in self._done() if t0 <= self.epoch + i / self.rate < t1 and 200 <= c < 400
        )

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        return []


def test_outcomes_are_judged_in_send_order_and_slow_ones_are_bad() -> None:
    """Request 1 answers late (after 2 and 3): nothing after it is judged before it is,
    and a request unanswered past ``slow`` is bad at that moment."""
    latencies = {0: 0.001, 1: 0.5, 2: 0.001, 3: 0.001}
    load = FakeLoad(lambda i: (200, latencies.get(i, 0.001)), rate=100.0, epoch=1000.0)
    clock = [1000.04]
    load.now = lambda: clock[0]
    order = SendOrder(load, since=1000.0, slow_s=0.2)
    assert [(i, bad) for i, _, bad in order.advance(clock[0])] == [(0, False)]
    clock[0] = 1000.21  # request 1 (sent at 1000.01) has waited 0.2 s: bad now
    judged = [(i, bad) for i, _, bad in order.advance(clock[0])]
    assert judged[:3] == [(1, True), (2, False), (3, False)]
    clock[0] = 1000.6  # its late answer does not change the judgement
    assert all(i > 3 for i, _, _ in order.advance(clock[0]))


def test_requests_before_the_first_fault_are_not_judged() -> None:
    load = FakeLoad(lambda i: (500, 0.001), rate=100.0, epoch=1000.0)
    load.now = lambda: 1001.0
    order = SendOrder(load, since=1000.5, slow_s=0.2)
    first = next(iter(order.advance(1001.0)))
    assert first[0] == 50 and first[1] == pytest.approx(1000.5)


def test_guard_section_risk_and_slow_are_parsed_and_checked() -> None:
    section = decode_guard({"risk": 0.05, "slow": "150ms", "burn_rate": 5})
    assert isinstance(section, GuardSection)
    spec = resolve_guard(section, default_objective=0.99, load_timeout_s=2)
    assert isinstance(spec, GuardSpec)
    assert spec.risk == 0.05 and spec.slow_s == pytest.approx(0.15) and spec.sequential
    assert spec.tolerated_rate == pytest.approx(0.05)
    for bad in ({"risk": 0}, {"risk": 0.9}, {"risk": "low"}, {"risk": float("nan")}, {"sequential": "yes"}):
        problems = decode_guard(bad)
        assert isinstance(problems, list) and problems, bad
        assert problems[0].path.startswith("guard.")


def test_a_total_outage_trips_within_a_handful_of_requests_and_is_reported() -> None:
    """Bad from request 40 on (0.2 s after the first fault at 200 req/s)."""
    epoch = time.time() - 1.0
    load = FakeLoad(lambda i: (503, 0.001) if i >= 240 else (200, 0.001), epoch=epoch)
    events: list[ev.Event] = []
    guard = SLOGuard(
        GuardSpec(risk=0.01, hard_error_rate=None, slow_s=0.2),
        load,
        lambda: epoch + 1.0,  # the first fault: request 200
        emit=events.append,
        run_id="r",
    )
    clock = [epoch + 1.0]
    load.now = lambda: clock[0]
    reason = None
    while reason is None and clock[0] < epoch + 3.0:
        clock[0] += 0.005
        reason = guard.check(clock[0])
    assert reason is not None and reason.startswith("sequential test"), reason
    assert guard.onset_ts == pytest.approx(epoch + 240 / 200)
    assert guard.decision is not None and guard.decision.bad <= 5
    assert clock[0] - guard.onset_ts < 0.05  # a handful of requests at 5 ms each
    guard.close()
    armed, stopped = events
    assert isinstance(armed, ev.GuardArmed) and armed.test["risk"] == 0.01
    assert armed.test["tolerated_rate"] == pytest.approx(0.1)
    assert isinstance(stopped, ev.GuardStopped) and stopped.tripped and stopped.onset_ts == guard.onset_ts
    clean = ev.CleanChecked(run_id="r", fault_id="f", driver="fake", clean=True, ts=clock[0] + 0.1)
    timing = guard_timing([armed, stopped, clean])
    assert timing is not None
    assert timing["time_to_detect_s"] == pytest.approx(clock[0] - guard.onset_ts)
    assert timing["time_to_clean_s"] == pytest.approx(clock[0] + 0.1 - guard.onset_ts)


def test_a_healthy_stream_does_not_trip_and_reports_no_onset() -> None:
    epoch = time.time() - 1.0
    load = FakeLoad(lambda i: (200, 0.002), epoch=epoch)
    events: list[ev.Event] = []
    guard = SLOGuard(GuardSpec(), load, lambda: epoch + 0.5, emit=events.append, run_id="r")
    clock = [epoch + 0.5]
    load.now = lambda: clock[0]
    for _ in range(100):
        clock[0] += 0.01
        assert guard.check(clock[0]) is None
    assert guard.slow_s == pytest.approx(1.0)  # by default the load's overdue age
    guard.close()
    timing = guard_timing(events)
    assert timing is not None and timing["onset_ts"] is None and not timing["tripped"]
    assert timing["requests"] > 150 and timing["bad"] == 0


def test_fixed_window_guard_waits_out_its_window() -> None:
    """``sequential: false`` is the old guard: a total outage trips only once the hard
    limit's window is full."""
    epoch = time.time() - 1.0
    load = FakeLoad(lambda i: (503, 0.001) if i >= 200 else (200, 0.001), epoch=epoch)
    guard = SLOGuard(GuardSpec(sequential=False, hard_for_s=1.0), load, lambda: epoch + 1.0)
    assert guard.test is None
    clock = [epoch + 1.0]
    load.now = lambda: clock[0]
    reason = None
    while reason is None and clock[0] < epoch + 4.0:
        clock[0] += 0.05
        reason = guard.check(clock[0])
    assert reason is not None and reason.startswith("hard limit")
    assert clock[0] - (epoch + 1.0) >= 1.0


def test_runner_records_the_test_risk_and_onset_to_clean(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    f = tmp_path / "exp.yaml"
    f.write_text(
        f"""
title: t
description: d
method:
  - {{do: fake.touch, target: "{target}", duration: 30}}
"""
    )
    reg = DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)
    exp = load_experiment(str(f), registry=reg)
    out = io.StringIO()
    bus = ev.EventBus()
    bus.subscribe(ConsoleProgress(PlainSink(out)))

    def factory(runner: Runner) -> SLOGuard:
        t_fault = runner.faults.first_injected_at
        # Every request fails from the moment the fault is in.
        load = FakeLoad(
            lambda i: (
                (503, 0.001) if (t := t_fault()) is not None and i >= (t - epoch) * 200 else (200, 0.001)
            ),
            epoch=epoch,
        )
        return SLOGuard(GuardSpec(risk=0.01), load, t_fault, emit=runner.bus.emit, run_id=runner.run_id)

    epoch = time.time()
    runner = Runner(
        exp,
        registry=reg,
        options=RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state()),
        bus=bus,
        guard_factory=factory,
    )
    result = runner.run()
    assert result.verdict is Verdict.ABORTED, result.reason
    cl = result.journal["chaoslab"]
    assert cl["guard_test"]["risk"] == 0.01 and cl["guard_test"]["test"].startswith("mixture SPRT")
    timing = cl["guard_timing"]
    assert timing["tripped"] and timing["onset_ts"] is not None
    assert 0 <= timing["time_to_detect_s"] < 0.5
    assert timing["time_to_detect_s"] <= timing["time_to_clean_s"] < 5
    from chaoslab.report.html import render_html
    from chaoslab.report.view import RunView, fmt_seconds

    view = RunView.from_journal(result.journal)
    assert view.onset_to_clean_s == timing["time_to_clean_s"]
    assert view.guard_test is not None and "false-abort risk 0.01" in view.guard_test
    page = render_html(view)
    assert "first bad request → clean" in page and fmt_seconds(view.onset_to_clean_s) in page
    text = out.getvalue()
    assert "false-abort risk 0.01" in text
    assert "onset → detected" in text and "onset → clean" in text
    assert list(target.iterdir()) == []


def test_invalid_guard_risk_is_invalid_input(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text("title: t\ndescription: d\nguard: {risk: 2}\nmethod: []\n")
    with pytest.raises(InvalidInput, match=r"guard\.risk"):
        load_experiment(str(f), registry=DriverRegistry(load_installed=False))


@settings(max_examples=60, deadline=None)
@given(
    latencies=st.lists(st.floats(0.0005, 0.5), min_size=5, max_size=60),
    failed=st.sets(st.integers(0, 59)),
    slow=st.floats(0.01, 0.3),
)
def test_send_order_judges_every_request_once_in_order_whatever_the_completion_order(
    latencies: list[float], failed: set[int], slow: float
) -> None:
    """Whatever order answers arrive in, each request is judged once, in send order, and
    bad exactly when it failed or was slower than ``slow``."""
    n = len(latencies)
    load = FakeLoad(lambda i: (500 if i in failed else 200, latencies[i % n]), rate=100.0, epoch=1000.0)
    load.max_requests = n
    clock = [1000.0]
    load.now = lambda: clock[0]
    order = SendOrder(load, since=1000.0, slow_s=slow)
    judged: list[tuple[int, bool]] = []
    for _ in range(200):
        clock[0] += 0.007
        judged += [(i, bad) for i, _, bad in order.advance(clock[0])]
    assert [i for i, _ in judged] == list(range(n))
    for i, bad in judged:
        assert bad == (i in failed or latencies[i] > slow), (i, latencies[i], slow)


def test_fixed_window_burn_rate_applies_only_without_the_sequential_test() -> None:
    """30% of requests fail: burn 30× a 99% objective. The old windowed burn check trips
    once 20 requests are in the window; with the sequential test on, burn_rate is its
    tolerated rate instead (here 50%: 30% is within it, so nothing trips)."""
    epoch = time.time() - 1.0
    load = FakeLoad(lambda i: (503, 0.001) if i % 10 < 3 else (200, 0.001), epoch=epoch)
    clock = [epoch + 1.0]
    load.now = lambda: clock[0]
    old = SLOGuard(
        GuardSpec(sequential=False, burn_rate=20, burn_window_s=1.0, hard_error_rate=None),
        load,
        lambda: epoch + 1.0,
    )
    new = SLOGuard(GuardSpec(burn_rate=50, hard_error_rate=None), load, lambda: epoch + 1.0)
    assert new.spec.tolerated_rate == pytest.approx(0.5)
    tripped_old = None
    for _ in range(100):
        clock[0] += 0.02
        tripped_old = tripped_old or old.check(clock[0])
        assert new.check(clock[0]) is None
    assert tripped_old is not None and tripped_old.startswith("burn rate")


def test_unanswered_is_judged_on_the_generators_clock() -> None:
    """A generator thread stalled by a busy machine has answers it has not recorded yet:
    requests are judged missing only up to its last sweep (progress_at), not the wall clock."""
    load = FakeLoad(lambda i: (200, 0.001), rate=100.0, epoch=1000.0)
    load.now = lambda: 1000.05  # the generator last recorded (and swept) at 1000.05
    load.progress_at = 1000.05  # type: ignore[attr-defined]
    order = SendOrder(load, since=1000.0, slow_s=0.1)
    # The guard wakes at 1000.5: on the wall clock requests 1..39 look 100 ms overdue.
    judged = list(order.advance(1000.5))
    assert [(i, bad) for i, _, bad in judged] == [(i, False) for i in range(5)]
