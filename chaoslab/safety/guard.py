"""The guard: while faults are active, watch the SLIs and brake.

Checked every 20 ms from the runner's guard thread (the window brakes every 100 ms); the
first breach calls ``Runner.abort``, which reverts every active fault at once (in
parallel).

**It decides on evidence.** Every request the synthetic load sent since the first fault
is judged good or bad, in the order it was sent — bad when it failed or took longer
than ``slow`` (a request still unanswered after ``slow`` counts as bad then, not when it
finally times out) — and fed to a sequential test (``chaoslab.sli.sequential``: a mixture
SPRT) of "the bad-request rate is at most the tolerated rate ``burn_rate × (1 −
objective)``". It trips as soon as the
evidence says the rate is above it: a total outage within a handful of requests, a mild
burn when the evidence suffices. While the rate is within tolerance it trips with
probability at most ``risk`` (the false-abort probability), however long the run.

The count allowance, the hard limit and the silence check stay as extra brakes. The
guard records the test and its risk (``guard-armed``), the onset (the send time of the
first bad request after the first fault) and its decision (``guard-stopped``); the
journal, console and reports show the time from onset to detection and to clean.

The experiment's ``guard:`` section (all optional; with a ``load`` the sequential test,
the hard limit and the silence check are on by default)::

    guard:
      risk: 0.01              # false-abort probability of the sequential test
      burn_rate: 10           # tolerated burn rate: bad-request rate burn_rate × (1 − objective)
      objective: 0.99         #   ... of this availability objective (default: the slo's)
      allowance: 150          # bad requests the faults may cost in all (an error-budget allowance)
      hard_limit: {error_rate: 0.5, for: 2s}
      silence: 5s             # the SLI source produced nothing for this long
      slow: 250ms             # a request taking longer counts as bad (default: the load's
                              #   overdue age, min(1s, load.timeout)); lower it to brake on hangs sooner
      sequential: true        # false: the fixed-window guard of chaoslab ≤ 0.1 (below)
      burn_window: 5s         # only with sequential: false: the burn rate over this window
      enabled: true

With ``sequential: false`` the burn rate is judged over the last ``burn_window`` once 20
requests are in it (the fixed-window guard, kept for comparison: its false-abort
probability is not controlled).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import msgspec

from chaoslab.engine import events as ev
from chaoslab.model.sections import DEFAULT_RISK as DEFAULT_RISK
from chaoslab.model.sections import GuardSection, HardLimit
from chaoslab.sli.base import SLISource
from chaoslab.sli.sequential import Decision, MixtureSPRT

MIN_BURN_SAMPLES = 20
WINDOW_CHECK_EVERY_S = 0.1

DEFAULT_BURN_RATE = 10.0
MAX_TOLERATED_RATE = 0.5


@dataclass(frozen=True, kw_only=True)
class GuardSpec:
    enabled: bool = True
    sequential: bool = True
    risk: float = DEFAULT_RISK
    allowance: int | None = None
    burn_rate: float | None = None
    burn_window_s: float = 5.0
    objective: float = 0.99
    hard_error_rate: float | None = 0.5
    hard_for_s: float = 2.0
    silence_s: float = 5.0
    slow_s: float | None = None  # None: the load's overdue age

    @property
    def tolerated_rate(self) -> float:
        """The bad-request rate the sequential test tolerates (its null hypothesis)."""
        burn = self.burn_rate if self.burn_rate is not None else DEFAULT_BURN_RATE
        return min(MAX_TOLERATED_RATE, burn * (1.0 - self.objective))


def resolve_guard(
    section: GuardSection | None, *, default_objective: float | None, load_timeout_s: float
) -> GuardSpec:
    """The guard of a run: the experiment's ``guard:`` (decoded by ``chaoslab.model``)
    with the defaults only the run knows (the SLOs' objective, the load's timeout)."""
    g = section or GuardSection()
    hard = g.hard_limit if isinstance(g.hard_limit, HardLimit) else None
    return GuardSpec(
        enabled=g.enabled,
        sequential=g.sequential,
        risk=g.risk,
        allowance=g.allowance,
        burn_rate=g.burn_rate,
        burn_window_s=g.burn_window_s,
        objective=g.objective if g.objective is not None else default_objective or 0.99,
        hard_error_rate=hard.error_rate if hard else None,
        hard_for_s=hard.for_s if hard else 2.0,
        silence_s=g.silence_s if g.silence_s is not None else max(5.0, load_timeout_s + 2.0),
        slow_s=g.slow_s,
    )


BudgetCheck = Callable[[float, float], "str | None"]  # (faults_since, now) -> breach reason


@runtime_checkable
class RequestStream(Protocol):
    """What the sequential test reads from the synthetic load (``LoadGenerator``)."""

    epoch: float
    rate: float
    overdue_s: float
    max_requests: int

    def records_since(self, position: int) -> tuple[int, list[tuple[int, int, float]]]: ...


class SendOrder:
    """The load's outcomes from the first fault on, put back into the order the requests
    were sent: ``advance(now)`` yields ``(index, send time, bad)`` for every request whose
    predecessors are all judged. A request is bad when it failed or took longer than
    ``slow_s``; one still unanswered ``slow_s`` after it was sent is judged bad then (a
    user is already waiting too long; its late answer would not change the judgement)."""

    def __init__(self, stream: RequestStream, since: float, slow_s: float) -> None:
        self.stream = stream
        self.slow_s = slow_s
        self.position = 0
        self.next = max(0, math.ceil((since - stream.epoch) * stream.rate - 1e-9))
        self.outcomes: dict[int, bool] = {}

    def sent_at(self, index: int) -> float:
        return self.stream.epoch + index / self.stream.rate

    def advance(self, now: float) -> Iterator[tuple[int, float, bool]]:
        stream = self.stream
        # "Still unanswered" is judged on the generator's clock (its last sweep), read
        # before the records: a generator thread that was stalled (a busy machine) has
        # answers it has not recorded yet, and they must not count as missing.
        horizon = min(now, float(getattr(stream, "progress_at", now)))
        self.position, records = stream.records_since(self.position)
        for index, code, latency in records:
            if index >= self.next:
                self.outcomes[index] = not 200 <= code < 400 or latency > self.slow_s
        while self.next < stream.max_requests:
            j = self.next
            bad = self.outcomes.pop(j, None)
            if bad is None:
                if self.sent_at(j) + self.slow_s > horizon:
                    return
                bad = True
            self.next += 1
            yield j, self.sent_at(j), bad


class SLOGuard:
    """Decides, from the SLI sources alone, whether the run must brake now.

    ``source`` is the synthetic load (checked every call); ``budget_checks`` compare
    what the run spent of an SLO file's error budget with its allowance (they query
    Prometheus, so they run at most once per ``budget_every_s``). ``emit`` receives the
    guard's own events (``guard-armed`` now, ``guard-stopped`` from ``close``).
    """

    def __init__(
        self,
        spec: GuardSpec,
        source: SLISource | None,
        faults_since: Callable[[], float | None],
        *,
        budget_checks: tuple[BudgetCheck, ...] = (),
        budget_every_s: float = 1.0,
        emit: Callable[[ev.Event], None] | None = None,
        run_id: str = "",
    ) -> None:
        self.spec = spec
        self.source = source
        self.faults_since = faults_since
        self.budget_checks = budget_checks
        self.budget_every_s = budget_every_s
        self._last_budget_check = 0.0
        self._last_window_check = 0.0
        self._emit = emit
        self._run_id = run_id
        self._order: SendOrder | None = None
        self.stream = source if isinstance(source, RequestStream) else None
        self.test: MixtureSPRT | None = None
        if spec.enabled and spec.sequential and self.stream is not None:
            # A fresh test every ~2 s of requests (see chaoslab.sli.sequential: late onsets).
            epoch = max(50, math.ceil(self.stream.rate * 2.0))
            self.test = MixtureSPRT(p0=spec.tolerated_rate, risk=spec.risk, epoch=epoch)
        self.slow_s: float | None = spec.slow_s
        # The runner asks every interval_s: the sequential test reads only what is new, so
        # it looks every 20 ms; the window brakes (which scan their window) every 100 ms.
        self.interval_s = 0.02 if self.test is not None else WINDOW_CHECK_EVERY_S
        self.requests = 0
        self.bad = 0
        self.onset_ts: float | None = None
        self.tripped_ts: float | None = None
        self.reason: str | None = None
        self.decision: Decision | None = None
        if emit is not None:
            emit(ev.GuardArmed(run_id=run_id, test=self.describe()))

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        return {
            **(dict(self.test.describe()) if self.test is not None else {"test": None}),
            "risk": spec.risk if self.test is not None else None,
            "objective": spec.objective,
            "burn_rate": spec.burn_rate if spec.burn_rate is not None else DEFAULT_BURN_RATE,
            "allowance": spec.allowance,
            "hard_limit": (
                {"error_rate": spec.hard_error_rate, "for_s": spec.hard_for_s}
                if spec.hard_error_rate is not None
                else None
            ),
            "burn_window_s": None if spec.sequential else spec.burn_window_s,
            "silence_s": spec.silence_s,
            "slow_s": spec.slow_s,  # None: the load's overdue age (min(1 s, timeout))
        }

    def check(self, now: float) -> str | None:
        reason = self._check(now)
        if reason is not None and self.reason is None:
            self.reason, self.tripped_ts = reason, now
        return reason

    def close(self) -> None:
        """The faults are over: record what the guard saw and decided."""
        if self._emit is None:
            return
        d = self.decision
        self._emit(
            ev.GuardStopped(
                run_id=self._run_id,
                tripped=self.reason is not None,
                reason=self.reason,
                onset_ts=self.onset_ts,
                tripped_ts=self.tripped_ts,
                requests=self.requests,
                bad=self.bad,
                slow_s=self.slow_s,
                decision=msgspec.structs.asdict(d) if d is not None else {},
            )
        )

    def _observe(self, t0: float, now: float) -> str | None:
        """Judge the requests now known, in send order; the sequential test decides."""
        assert self.stream is not None
        if self._order is None:
            slow = self.spec.slow_s if self.spec.slow_s is not None else self.stream.overdue_s
            self.slow_s = slow
            self._order = SendOrder(self.stream, t0, slow)
        for _, sent, bad in self._order.advance(now):
            self.requests += 1
            if bad:
                self.bad += 1
                if self.onset_ts is None:
                    self.onset_ts = sent
            if self.test is not None and self.decision is None:
                decision = self.test.add(bad)
                if decision is not None:
                    self.decision = decision
                    return (
                        f"sequential test: {decision.bad} of {decision.n} requests bad, the bad-request "
                        f"rate is above the tolerated {self.test.p0:.3g} "
                        f"(evidence {math.exp(min(decision.log_evidence, 700.0)):.3g} ≥ "
                        f"{math.exp(decision.log_threshold):.3g}; false-abort risk {self.test.risk:g})"
                    )
        return None

    def _check(self, now: float) -> str | None:
        spec = self.spec
        t0 = self.faults_since()
        if not spec.enabled or t0 is None:
            return None
        if self.budget_checks and now - self._last_budget_check >= self.budget_every_s:
            self._last_budget_check = now
            for budget_check in self.budget_checks:
                if (reason := budget_check(t0, now)) is not None:
                    return reason
        if self.source is None:
            return None
        if self.stream is not None and (reason := self._observe(t0, now)) is not None:
            return reason
        if now - self._last_window_check < WINDOW_CHECK_EVERY_S - 1e-3:
            return None
        self._last_window_check = now
        last = self.source.last_sample_at()
        if now - t0 > spec.silence_s and (last is None or now - last > spec.silence_s):
            return f"the SLI source has been silent for more than {spec.silence_s:g}s"
        if spec.allowance is not None:
            c = self.source.counts(t0, now)
            bad = c.total - c.good + self.source.overdue(t0, now)
            if bad > spec.allowance:
                return (
                    f"error-budget allowance spent: {bad} bad requests since the first fault "
                    f"(allowance {spec.allowance})"
                )
        if spec.burn_rate is not None and not spec.sequential:
            total, bad = self._window(max(t0, now - spec.burn_window_s), now)
            if total >= MIN_BURN_SAMPLES:
                burn = (bad / total) / (1.0 - spec.objective)
                if burn > spec.burn_rate:
                    return (
                        f"burn rate {burn:.1f}× over the last {spec.burn_window_s:g}s exceeds "
                        f"{spec.burn_rate:g}× (objective {spec.objective:g})"
                    )
        if spec.hard_error_rate is not None and now - t0 >= spec.hard_for_s:
            total, bad = self._window(now - spec.hard_for_s, now)
            if total >= MIN_BURN_SAMPLES:
                rate = bad / total
                if rate > spec.hard_error_rate:
                    return (
                        f"hard limit: {rate:.0%} of requests failed over {spec.hard_for_s:g}s "
                        f"(limit {spec.hard_error_rate:.0%})"
                    )
        return None

    def _window(self, t0: float, t1: float) -> tuple[int, int]:
        """(total, bad) for requests sent in [t0 − lag, t1): answered ones, plus the ones
        still unanswered past the source's overdue age. ``lag`` (≤ 1 s) reaches back far
        enough that overdue requests exist in the window at all."""
        lag = float(getattr(self.source, "overdue_s", 0.0))
        assert self.source is not None
        c = self.source.counts(t0 - lag, t1)
        late = self.source.overdue(t0 - lag, t1)
        return c.total + late, c.total - c.good + late
