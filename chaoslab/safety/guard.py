"""The guard: while faults are active, watch the SLIs and brake.

Checked every 100 ms from the runner's guard thread; the first breach calls
``Runner.abort``, which reverts every active fault at once (in parallel) and records
the time from breach to all-clean.

The experiment's ``guard:`` section (all optional; with a ``load`` the hard limit and
the silence check are on by default)::

    guard:
      allowance: 150          # bad requests the faults may cost in all (an error-budget allowance)
      burn_rate: 10           # abort when the short-window burn rate exceeds this
      burn_window: 5s         #   ... measured over this window
      objective: 0.99         #   ... against this availability objective (default: the slo's)
      hard_limit: {error_rate: 0.5, for: 2s}
      silence: 5s             # the SLI source produced nothing for this long
      enabled: true
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chaoslab.errors import Problem
from chaoslab.sli.base import SLISource
from chaoslab.units import parse_duration

MIN_BURN_SAMPLES = 20


@dataclass(frozen=True, kw_only=True)
class GuardSpec:
    enabled: bool = True
    allowance: int | None = None
    burn_rate: float | None = None
    burn_window_s: float = 5.0
    objective: float = 0.99
    hard_error_rate: float | None = 0.5
    hard_for_s: float = 2.0
    silence_s: float = 5.0


def parse_guard(
    raw: Any, *, default_objective: float | None, load_timeout_s: float, path: str = "guard"
) -> GuardSpec | list[Problem]:
    problems: list[Problem] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return [Problem(path=path, message="'guard' must be a mapping")]
    known = {"allowance", "burn_rate", "burn_window", "objective", "hard_limit", "silence", "enabled"}
    for k in raw:
        if k not in known:
            problems.append(
                Problem(
                    path=f"{path}.{k}", message=f"unknown guard setting {k!r}", hint=", ".join(sorted(known))
                )
            )
    kw: dict[str, Any] = {"objective": default_objective or 0.99, "silence_s": max(5.0, load_timeout_s + 2.0)}

    def number(key: str, lo: float, hi: float | None = None, integer: bool = False) -> Any:
        v = raw.get(key)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and (not integer or isinstance(v, int))
        if not ok or not isinstance(v, int | float) or v < lo or (hi is not None and v > hi):
            rng = f"≥ {lo}" if hi is None else f"between {lo} and {hi}"
            problems.append(Problem(path=f"{path}.{key}", message=f"must be a number {rng}, got {v!r}"))
            return None
        return v

    def duration(value: Any, where: str) -> float | None:
        try:
            return parse_duration(value, positive=True, max_s=3600)
        except ValueError as exc:
            problems.append(Problem(path=where, message=f"{exc} (between 0 and 1h)"))
            return None

    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            problems.append(Problem(path=f"{path}.enabled", message="must be true or false"))
        else:
            kw["enabled"] = raw["enabled"]
    if "allowance" in raw:
        kw["allowance"] = number("allowance", 0, integer=True)
    if "burn_rate" in raw:
        kw["burn_rate"] = number("burn_rate", 1)
    if "objective" in raw:
        kw["objective"] = number("objective", 0.0, 0.99999)
    if "burn_window" in raw:
        kw["burn_window_s"] = duration(raw["burn_window"], f"{path}.burn_window")
    if "silence" in raw:
        kw["silence_s"] = duration(raw["silence"], f"{path}.silence")
    if "hard_limit" in raw:
        hl = raw["hard_limit"]
        if hl is None or hl is False:
            kw["hard_error_rate"] = None
        elif not isinstance(hl, Mapping):
            problems.append(Problem(path=f"{path}.hard_limit", message="must be {error_rate: 0.5, for: 2s}"))
        else:
            er = hl.get("error_rate")
            if not isinstance(er, int | float) or isinstance(er, bool) or not 0 < er <= 1:
                problems.append(Problem(path=f"{path}.hard_limit.error_rate", message="must be in (0, 1]"))
            else:
                kw["hard_error_rate"] = float(er)
            if "for" in hl:
                kw["hard_for_s"] = duration(hl["for"], f"{path}.hard_limit.for")
    if problems:
        return problems
    return GuardSpec(
        **{k: v for k, v in kw.items() if v is not None or k in ("allowance", "burn_rate", "hard_error_rate")}
    )


BudgetCheck = Callable[[float, float], "str | None"]  # (faults_since, now) -> breach reason


class SLOGuard:
    """Decides, from the SLI sources alone, whether the run must brake now.

    ``source`` is the synthetic load (checked every call); ``budget_checks`` compare
    what the run spent of an SLO file's error budget with its allowance (they query
    Prometheus, so they run at most once per ``budget_every_s``).
    """

    def __init__(
        self,
        spec: GuardSpec,
        source: SLISource | None,
        faults_since: Callable[[], float | None],
        *,
        budget_checks: tuple[BudgetCheck, ...] = (),
        budget_every_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.source = source
        self.faults_since = faults_since
        self.budget_checks = budget_checks
        self.budget_every_s = budget_every_s
        self._last_budget_check = 0.0

    def check(self, now: float) -> str | None:
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
        if spec.burn_rate is not None:
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
