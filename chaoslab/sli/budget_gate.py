"""SLO files in experiments: the pre-run budget gate, the guard's allowance, steady state.

Experiment keys (all optional)::

    slo_files: [slos/lab-availability.yaml]   # relative to the experiment file
    prometheus: http://127.0.0.1:9090         # else the SLO file's data source, else
                                              # $CHAOSLAB_PROMETHEUS_URL
    allowance: {budget_share: 0.05}           # the run may spend 5% of what remains
    budget_gate: {override: true, reason: "approved game day"}

- ``check_budget`` (before a run): refuses — with the numbers — when an SLO's budget is
  exhausted or a page-level burn pair fires now, or when the budget cannot be read
  (Prometheus down, data missing or stale: not knowing is not a yes). An explicit
  override (``budget_gate.override`` in the file, or ``override=True`` from the CLI)
  lets the run go and is recorded in the decision.
- ``allowance_for`` turns the remaining budget into the number of bad events the run
  may cause; the guard compares ``spent_since`` (bad events counted by Prometheus since
  the run started) against it and stops the run when it is spent.
- ``steady_state_from_files`` makes each SLO file an objective of the experiment's
  steady state: a chaoslab ``SLO`` (availability ≥ target) judged on a
  ``PrometheusSource`` named ``prom:<slo>``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.errors import SLIError
from chaoslab.model.openslo import SLODefinition, load_slo_files
from chaoslab.model.sections import DEFAULT_SHARE as DEFAULT_SHARE
from chaoslab.model.sections import SLOFiles
from chaoslab.sli.base import SLISource
from chaoslab.sli.budget import DEFAULT_SCRAPE_INTERVAL_S, BudgetStatus, budget_status, format_statuses
from chaoslab.sli.prometheus import PrometheusClient, PrometheusSLI, PrometheusSource
from chaoslab.sli.slo import SLO, SLIKind

ENV_URL = "CHAOSLAB_PROMETHEUS_URL"


@dataclass(frozen=True, kw_only=True)
class Allowance:
    """What one run may spend of one SLO's remaining error budget.

    ``bad_events`` = ``share`` × the bad events (or slices) the budget still allows.
    Invariant: never negative; 0 when the budget is already spent.
    """

    slo: str
    share: float
    remaining_events: float
    bad_events: float
    unit: str = "events"

    def spent_fraction(self, bad: float) -> float:
        """How much of the allowance ``bad`` events use (≥ 1 means spent)."""
        if self.bad_events <= 0:
            return math.inf if bad > 0 else 0.0
        return bad / self.bad_events

    def exceeded(self, bad: float) -> bool:
        return bad > self.bad_events

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "share": self.share,
            "remaining_events": self.remaining_events,
            "bad_events": self.bad_events,
            "unit": self.unit,
        }


@dataclass(frozen=True, kw_only=True)
class BudgetDecision:
    """The gate's answer. ``allowed`` is False only when refused and not overridden."""

    allowed: bool
    refused: bool  # the budget says no (even if overridden)
    overridden: bool
    reasons: tuple[str, ...]
    statuses: tuple[BudgetStatus, ...] = ()
    allowances: tuple[Allowance, ...] = ()
    share: float = DEFAULT_SHARE
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "refused": self.refused,
            "overridden": self.overridden,
            "reasons": list(self.reasons),
            "share": self.share,
            "slos": [s.to_dict() for s in self.statuses],
            "allowances": [a.to_dict() for a in self.allowances],
            "errors": list(self.errors),
        }

    def format(self) -> str:
        head = "budget gate: " + (
            "refused" if not self.allowed else "OVERRIDDEN" if self.overridden else "ok"
        )
        lines = [head] + [f"  - {r}" for r in self.reasons]
        if self.statuses:
            lines.append(format_statuses(self.statuses))
        for a in self.allowances:
            lines.append(
                f"allowance {a.slo}: {a.share * 100:g}% of {a.remaining_events:.1f} remaining bad "
                f"{a.unit} = {a.bad_events:.1f}"
            )
        return "\n".join(lines)


def slo_definitions(section: SLOFiles, base_dir: Path) -> tuple[SLODefinition, ...]:
    """The SLOs of the experiment's ``slo_files`` (paths relative to ``base_dir``)."""
    return load_slo_files([p if Path(p).is_absolute() else base_dir / p for p in section.files])


def prometheus_url(section: SLOFiles, slo: SLODefinition | None, explicit: str | None = None) -> str:
    """The URL: explicit, the experiment's ``prometheus``, the SLO's data source, the env."""
    for url in (explicit, section.prometheus, slo.prometheus_url if slo else None):
        if isinstance(url, str) and url:
            return url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    name = f" for SLO {slo.name!r}" if slo else ""
    raise SLIError(
        f"no Prometheus URL{name}: give --prometheus, the experiment's 'prometheus:', the SLO file's "
        f"data source, or ${ENV_URL}"
    )


def allowance_for(status: BudgetStatus, share: float) -> Allowance:
    """The bad events (or slices) a run may cause: ``share`` of what the budget still allows."""
    if not 0 < share <= 1:
        raise ValueError(f"budget share must be in (0, 1], got {share}")
    remaining = status.remaining_events
    return Allowance(
        slo=status.slo,
        share=share,
        remaining_events=remaining,
        bad_events=share * remaining,
        unit=status.counts.unit,
    )


def spent_since(sli: PrometheusSLI, started_at: float, now: float | None = None) -> float:
    """Bad events (or slices) Prometheus counted since ``started_at``: what the run spent."""
    t = time.time() if now is None else now
    return sli.budget_counts(max(t - started_at, 1.0), t).bad


def check_budget(
    section: SLOFiles,
    base_dir: Path,
    *,
    override: bool = False,
    prometheus: str | None = None,
    at: float | None = None,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
) -> BudgetDecision:
    """The pre-run budget gate. Never raises for Prometheus trouble: that is a refusal.

    ``scrape_interval_s`` sets the shortest burn window (four scrapes), as for ``slo status``.

    Raises ``InvalidInput`` for broken SLO files (the experiment is invalid, not unlucky).
    """
    share = section.budget_share
    overridden = override or section.override
    slos = slo_definitions(section, base_dir)
    if not slos:
        return BudgetDecision(
            allowed=True, refused=False, overridden=False, reasons=("no slo_files: no budget to check",)
        )
    now = time.time() if at is None else at
    statuses: list[BudgetStatus] = []
    reasons: list[str] = []
    errors: list[str] = []
    for slo in slos:
        try:
            client = PrometheusClient(prometheus_url(section, slo, prometheus))
            with client:
                st = budget_status(PrometheusSLI(client, slo), now, scrape_interval_s)
        except SLIError as exc:
            errors.append(str(exc))
            reasons.append(f"{slo.name}: cannot read the error budget: {exc}")
            continue
        statuses.append(st)
        if st.exhausted:
            reasons.append(
                f"{slo.name}: error budget exhausted: {st.counts.bad:.0f} bad of {st.counts.total:.0f} "
                f"{st.counts.unit} against {st.budget_events:.1f} allowed "
                f"({st.budget_remaining * 100:.1f}% remaining)"
            )
        if st.page_firing:
            burns = ", ".join(f"{k} {v:.1f}x" for k, v in st.burn.items() if v is not None)
            reasons.append(f"{slo.name}: page-level burn active ({', '.join(st.page_firing)}; {burns})")
    refused = bool(reasons)
    allowances = tuple(allowance_for(st, share) for st in statuses)
    if not refused:
        reasons.append("every SLO has budget left and no page-level burn")
    elif overridden:
        reasons.append("overridden explicitly" + (f": {section.reason}" if section.reason else ""))
    return BudgetDecision(
        allowed=not refused or overridden,
        refused=refused,
        overridden=overridden and refused,
        reasons=tuple(reasons),
        statuses=tuple(statuses),
        allowances=allowances,
        share=share,
        errors=tuple(errors),
    )


def steady_state_from_files(
    section: SLOFiles, base_dir: Path, *, prometheus: str | None = None
) -> tuple[tuple[SLO, ...], dict[str, SLISource]]:
    """Objectives and sources for the experiment's SLO files (source names ``prom:<slo>``).

    Each becomes ``availability ≥ target`` on its Prometheus source, judged per window
    like any other objective (latency SLOs too: their "good" is "served within T").
    """
    objectives: list[SLO] = []
    sources: dict[str, SLISource] = {}
    for slo in slo_definitions(section, base_dir):
        name = f"prom:{slo.name}"
        client = PrometheusClient(prometheus_url(section, slo, prometheus))
        sources[name] = PrometheusSource(name=name, sli=PrometheusSLI(client, slo))
        objectives.append(SLO(name=slo.name, sli=SLIKind.AVAILABILITY, objective=slo.target, source=name))
    return tuple(objectives), sources
