"""Journals for the report tests, built the way ``chaoslab run`` builds them.

``make_journal`` feeds real events through the engine's own ``JournalBuilder``, so the
journals have exactly the shape ``chaoslab run`` writes. A support module, not a test
module: the report tests share it without importing each other.
"""

from __future__ import annotations

import json
from typing import Any

from chaoslab.engine import events as ev
from chaoslab.engine.journal import JournalBuilder

T0 = 1_800_000_000.0
RUN = "20270115-080000-abcdef"

SLOS = [
    {"name": "availability", "sli": "availability", "objective": 0.99},
    {"name": "p99", "sli": "latency", "percentile": 99, "threshold": "250ms"},
]


def _series(seconds: int, *, slow: range, errors: range) -> dict[str, Any]:
    """200 req/s; p99 of 400 ms in ``slow`` seconds, 50 errors in ``errors`` seconds."""
    t = [T0 + i for i in range(seconds)]
    n = [200] * seconds
    errs = [50 if i in errors else 0 for i in range(seconds)]
    good = [a - b for a, b in zip(n, errs, strict=True)]
    p50 = [0.002] * seconds
    p95 = [0.004 if i not in slow else 0.300 for i in range(seconds)]
    p99 = [0.006 if i not in slow else 0.400 for i in range(seconds)]
    return {"t": t, "n": n, "good": good, "errors": errs, "p50": p50, "p95": p95, "p99": p99}


def make_journal(
    *,
    verdict: str = "deviated",
    guard: bool = False,
    clean: bool = True,
    runbook: Any = None,
    slo_results: list[dict[str, Any]] | None = None,
    title: str = "slow replica",
    halt: bool = False,
) -> dict[str, Any]:
    """A 20 s run: fault at T0+5.2 reverted at T0+10.1, degraded seconds 5..11, errors at 6..7."""
    exp: dict[str, Any] = {
        "title": title,
        "description": "one replica slows down",
        "slo": SLOS,
        "tags": ["lab"],
        "method": [],
    }
    if runbook is not None:
        exp["runbook"] = runbook
    b = JournalBuilder()

    def emit(e: ev.Event) -> None:
        b(e)

    emit(ev.RunStarted(run_id=RUN, ts=T0, title=title, source="x.yaml", pid=1, experiment=exp))
    emit(ev.PhaseStarted(run_id=RUN, ts=T0 + 5.0, phase=ev.Phase.METHOD))
    emit(
        ev.ActivityFinished(
            run_id=RUN,
            ts=T0 + 5.3,
            phase=ev.Phase.METHOD,
            name="slow-replica-1",
            activity_type="action",
            status="succeeded",
            start=T0 + 5.1,
            end=T0 + 5.3,
            activity={"name": "slow-replica-1", "type": "action"},
        )
    )
    emit(
        ev.FaultInjected(
            run_id=RUN,
            ts=T0 + 5.2,
            fault_id="f1",
            driver="proxy",
            operation="latency",
            target="lab:replica-1",
            lease_s=10.0,
            record={},
        )
    )
    if guard:
        emit(ev.GuardTripped(run_id=RUN, ts=T0 + 7.5, reason="error rate 25% for 2s", breach_ts=T0 + 7.4))
    if halt:  # an operator pressed `chaoslab halt` (the runner sees it as the HALT interruption)
        emit(ev.Interrupted(run_id=RUN, ts=T0 + 8.0, signal="HALT", during="run", pending=("f1",)))
    emit(
        ev.FaultReverted(
            run_id=RUN,
            ts=T0 + 10.1,
            fault_id="f1",
            driver="proxy",
            operation="latency",
            ok=True,
            detail="toxic removed",
            duration_s=0.04,
        )
    )
    emit(
        ev.CleanChecked(
            run_id=RUN,
            ts=T0 + 10.2,
            fault_id="f1",
            driver="proxy",
            clean=clean,
            residue=() if clean else ("toxic chaoslab-f1 still present",),
        )
    )
    emit(ev.PhaseFinished(run_id=RUN, ts=T0 + 10.2, phase=ev.Phase.METHOD, ok=True))
    for r in slo_results if slo_results is not None else default_slo_results():
        emit(ev.SLOEvaluated(run_id=RUN, ts=T0 + 20.0, **r))
    emit(
        ev.SLISeries(
            run_id=RUN, ts=T0 + 20.0, source="load", series=_series(20, slow=range(5, 12), errors=range(6, 8))
        )
    )
    emit(
        ev.RunFinished(
            run_id=RUN,
            ts=T0 + 20.0,
            verdict=verdict,
            exit_code=1,
            reason="p99 failed in during",
            duration_s=20.0,
        )
    )
    doc = b.build(
        experiment=exp,
        extra={
            "breach_to_clean_s": 0.4 if guard else None,
            "windows": {
                "baseline": [T0, T0 + 5.0],
                "during": [T0 + 5.2, T0 + 10.1],
                "after": [T0 + 11, T0 + 20],
            },
            "seed": 7,
        },
    )
    # Through JSON and back: what a reader on another machine gets.
    return dict(json.loads(json.dumps(doc)))


def default_slo_results() -> list[dict[str, Any]]:
    return [
        {
            "window": "baseline",
            "objective": "availability",
            "verdict": "pass",
            "estimate": 1.0,
            "lower": 0.996,
            "upper": 1.0,
            "samples": 1000,
            "detail": {"good": 1000, "slo": "availability ≥ 0.99"},
        },
        {
            "window": "during",
            "objective": "availability",
            "verdict": "fail",
            "estimate": 0.9,
            "lower": 0.88,
            "upper": 0.92,
            "samples": 1000,
            "detail": {"good": 900, "slo": "availability ≥ 0.99"},
        },
        {
            "window": "during",
            "objective": "p99",
            "verdict": "fail",
            "estimate": 400.0,
            "lower": 390.0,
            "upper": 410.0,
            "samples": 1000,
            "detail": {"above": 150, "unit": "ms", "slo": "p99 ≤ 250ms"},
        },
        {
            "window": "after",
            "objective": "p99",
            "verdict": "inconclusive",
            "estimate": 6.0,
            "lower": 5.0,
            "upper": None,
            "samples": 120,
            "detail": {"above": 0, "unit": "ms", "slo": "p99 ≤ 250ms"},
        },
    ]
