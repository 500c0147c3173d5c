"""SLOs: the experiment's ``slo:`` list (decoded by ``chaoslab.model.sections``), and
their verdicts per window.

The concise form (each entry a mapping; durations are strings with a unit)::

    slo:
      - {name: availability, sli: availability, objective: 0.99}          # good/total ≥ 0.99
      - {name: p99, sli: latency, percentile: 99, threshold: 250ms}        # p99 ≤ 250 ms
      - {name: fast, sli: latency, threshold: 100ms, objective: 0.95}      # ≥95% within 100 ms
      - {name: errors, sli: error-rate, objective: 0.01}                   # errors/total ≤ 1%
      - {name: heal, sli: time-to-recover, threshold: 10s, of: availability}

Optional keys on every entry: ``windows`` (subset of ``[baseline, during, after]``, the
windows where the objective must hold; default all three), ``confidence`` (default 0.95),
``source`` (the SLI source's name; default ``load``). ``time-to-recover`` also takes
``from: start | revert`` (default ``start``: measured from the first fault's injection;
``revert``: from the last revert) and ``stable`` (default ``3s``: how long the ``of``
objective must hold again to count as recovered).

Comparative objectives judge a window against the run's own baseline window instead of a
fixed threshold (``chaoslab.sli.compare``: Mann-Whitney U with a Hodges-Lehmann ratio for
latencies, Newcombe's interval for ratios; only "worse" fails)::

    slo:
      - {name: slower, sli: latency, compare: baseline, max_ratio: 1.2}       # ≤ 1.2× baseline
      - {name: more-errors, sli: error-rate, compare: baseline, max_increase: 0.01}

They take ``windows`` (default ``[during, after]``; never ``baseline``), ``confidence``,
``min_samples`` (default 20, on each side), ``no_data`` (``inconclusive`` | ``pass`` |
``fail``: the outcome with fewer samples; default inconclusive), ``critical``, ``source``.

``critical`` (every objective; default true): a critical objective's fail deviates the
run on its own. A non-critical objective is shown everywhere but does not decide the run
(like Kayenta's non-critical metrics, it informs).

Windows passed to ``judge`` are ``{"baseline": (t0, t1), "during": (t0, t1), "after":
(t0, t1)}`` in Unix time; "during" runs from the first injection to the last revert.

Time to recover is read from the per-second series: each complete second is judged on
its point estimate against the ``of`` objective. TTR = end of the last failing second
after the event, minus the event time (0 if no second failed). It fails when that is
above the threshold, passes when it is within and at least ``stable`` good seconds
follow, and is inconclusive otherwise (the run ended too soon to tell).

What a result means for the run's verdict is ``chaoslab.engine.fold.slo_note``; the
verdict itself is a fold over the run's events (``chaoslab.engine.fold.VerdictFold``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslab.errors import SLIError
from chaoslab.model.sections import DEFAULT_CONFIDENCE as DEFAULT_CONFIDENCE
from chaoslab.model.sections import SLO as SLO
from chaoslab.model.sections import WINDOWS as WINDOWS
from chaoslab.model.sections import SLIKind as SLIKind
from chaoslab.sli.base import Counts, ExactLatencies, HistogramLatencies, SecondStats, SLISource
from chaoslab.sli.stats import Judgement, SLOVerdict, judge_quantile, judge_ratio


@dataclass(frozen=True, kw_only=True)
class SLOResult:
    """One objective judged in one window. All fields JSON-able (see ``to_dict``)."""

    window: str
    objective: str
    verdict: str  # pass | fail | inconclusive
    estimate: float | None
    lower: float | None
    upper: float | None
    samples: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Also the keyword arguments of ``chaoslab.engine.events.SLOEvaluated``."""
        return {
            "window": self.window,
            "objective": self.objective,
            "verdict": self.verdict,
            "estimate": _finite(self.estimate),
            "lower": _finite(self.lower),
            "upper": _finite(self.upper),
            "samples": self.samples,
            "detail": dict(self.detail),
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) or math.isnan(x) else x


# --- judging -----------------------------------------------------------------------------------


def _latency_values(source: SLISource, t0: float, t1: float, slo: SLO) -> list[float]:
    view = source.latencies(t0, t1)
    if view is None:
        raise SLIError(f"SLI source {source.name!r} has no latencies for objective {slo.name!r}")
    values = (
        view.values
        if isinstance(view, ExactLatencies)
        else [view.value_at_rank(r) for r in range(1, view.n + 1)]
    )
    return [v for v in values if math.isfinite(v)]


def judge_against(
    slo: SLO, source: SLISource, reference: tuple[float, float], t0: float, t1: float
) -> Judgement:
    """A comparative objective over ``[t0, t1)`` against the ``reference`` window."""
    from chaoslab.sli.compare import judge_latency_vs_baseline, judge_ratio_vs_baseline

    r0, r1 = reference
    if slo.sli is SLIKind.LATENCY:
        return judge_latency_vs_baseline(
            _latency_values(source, r0, r1, slo),
            _latency_values(source, t0, t1, slo),
            max_ratio=slo.max_ratio,
            confidence=slo.confidence,
            min_samples=slo.min_samples,
            no_data=SLOVerdict(slo.no_data),
        )
    base, win = source.counts(r0, r1), source.counts(t0, t1)

    def bad(c: Counts) -> int:
        return c.total - c.good if slo.sli is SLIKind.AVAILABILITY else c.errors

    return judge_ratio_vs_baseline(
        bad_baseline=bad(base),
        n_baseline=base.total,
        bad_window=bad(win),
        n_window=win.total,
        max_increase=slo.max_increase,
        confidence=slo.confidence,
        min_samples=slo.min_samples,
        no_data=SLOVerdict(slo.no_data),
    )


def judge_window(slo: SLO, source: SLISource, t0: float, t1: float) -> Judgement:
    """One ratio or latency objective over ``[t0, t1)``."""
    if slo.sli in (SLIKind.AVAILABILITY, SLIKind.ERROR_RATE):
        c = source.counts(t0, t1)
        assert slo.objective is not None
        if slo.sli is SLIKind.AVAILABILITY:
            return judge_ratio(
                c.good, c.total, objective=slo.objective, at_least=True, confidence=slo.confidence
            )
        return judge_ratio(
            c.errors, c.total, objective=slo.objective, at_least=False, confidence=slo.confidence
        )
    if slo.sli is SLIKind.LATENCY:
        view = source.latencies(t0, t1)
        if view is None:
            raise SLIError(f"SLI source {source.name!r} has no latencies for objective {slo.name!r}")
        assert slo.threshold_s is not None
        within = view.count_le(slo.threshold_s)
        if slo.percentile is not None:
            j = judge_quantile(
                n=view.n,
                above=view.n - within,
                quantile=slo.percentile / 100.0,
                threshold=slo.threshold_s,
                confidence=slo.confidence,
                rank_value=view.value_at_rank,
            )
            # Report latencies in milliseconds, the unit people read.
            scale = 1000.0
            return Judgement(
                outcome=j.outcome,
                estimate=None if j.estimate is None else j.estimate * scale,
                lower=None if j.lower is None else j.lower * scale,
                upper=None if j.upper is None else j.upper * scale,
                n=j.n,
                detail={
                    **j.detail,
                    "unit": "ms",
                    "threshold_ms": slo.threshold_s * scale,
                    "exact": view.exact,
                },
            )
        assert slo.objective is not None
        j = judge_ratio(within, view.n, objective=slo.objective, at_least=True, confidence=slo.confidence)
        return Judgement(
            outcome=j.outcome,
            estimate=j.estimate,
            lower=j.lower,
            upper=j.upper,
            n=j.n,
            detail={**j.detail, "threshold_ms": slo.threshold_s * 1000.0, "exact": view.exact},
        )
    raise ValueError(f"{slo.sli} is not judged per window")


def second_holds(slo: SLO, row: SecondStats) -> bool:
    """Does one second's point estimate meet ``slo`` (used for time to recover)?"""
    if row.n == 0:
        return False
    if slo.sli is SLIKind.AVAILABILITY:
        return row.good / row.n >= (slo.objective or 0.0)
    if slo.sli is SLIKind.ERROR_RATE:
        return row.errors / row.n <= (slo.objective or 0.0)
    if slo.sli is SLIKind.LATENCY:
        assert slo.threshold_s is not None
        view = HistogramLatencies(row.hist, failures=row.n - row.good)
        within = view.count_le(slo.threshold_s)
        if slo.percentile is not None:
            return within >= math.ceil(slo.percentile / 100.0 * row.n)
        return within / row.n >= (slo.objective or 0.0)
    raise ValueError("time-to-recover cannot be nested")


def judge_ttr(
    slo: SLO, target: SLO, source: SLISource, windows: Mapping[str, tuple[float, float]]
) -> SLOResult:
    assert slo.threshold_s is not None
    window_name = "during" if slo.from_event == "start" else "after"
    if "during" not in windows:
        return SLOResult(
            window=window_name,
            objective=slo.name,
            verdict=SLOVerdict.INCONCLUSIVE.value,
            estimate=None,
            lower=None,
            upper=None,
            samples=0,
            detail={"reason": "no fault window"},
        )
    event = windows["during"][0] if slo.from_event == "start" else windows["during"][1]
    end = max(t1 for _, t1 in windows.values())
    rows = [r for r in source.series(math.floor(event) - 1, end) if r.complete and r.n and r.t + 1 > event]
    rows = [r for r in rows if r.t + 1 <= end]
    failing = [r for r in rows if not second_holds(target, r)]
    ttr = max(0.0, failing[-1].t + 1 - event) if failing else 0.0
    good_after = [r for r in rows if not failing or r.t > failing[-1].t]
    stable_needed = max(1, math.ceil(slo.stable_s))
    observed = (rows[-1].t + 1 - event) if rows else 0.0
    if ttr > slo.threshold_s:
        verdict, reason = SLOVerdict.FAIL, "still failing after the threshold"
    elif len(good_after) >= stable_needed:
        verdict, reason = SLOVerdict.PASS, "recovered" if failing else "never degraded"
    else:
        verdict, reason = SLOVerdict.INCONCLUSIVE, "the run ended before recovery could be confirmed"
    return SLOResult(
        window=window_name,
        objective=slo.name,
        verdict=verdict.value,
        estimate=ttr if verdict is not SLOVerdict.INCONCLUSIVE else None,
        lower=None,
        upper=None,
        samples=sum(r.n for r in rows),
        detail={
            "unit": "s",
            "of": target.name,
            "from": slo.from_event,
            "event_at": event,
            "threshold_s": slo.threshold_s,
            "failing_seconds": len(failing),
            "stable_seconds": len(good_after),
            "observed_s": observed,
            "reason": reason,
            "method": "per-second point estimates",
        },
    )


def judge(
    slos: Sequence[SLO],
    sources: SLISource | Mapping[str, SLISource],
    windows: Mapping[str, tuple[float, float]],
    *,
    reference: tuple[float, float] | None = None,
) -> list[SLOResult]:
    """Judge every objective in every window it names that ``windows`` provides.

    ``sources`` maps source names to sources; a single source serves every objective.
    Comparative objectives compare with ``reference`` (default: ``windows["baseline"]``).
    """
    reference = reference or windows.get("baseline")
    by_name = {s.name: s for s in slos}
    results: list[SLOResult] = []
    for slo in slos:
        source = _source(sources, slo)
        if slo.sli is SLIKind.TIME_TO_RECOVER:
            target = by_name[slo.of or ""]
            results.append(judge_ttr(slo, target, _source(sources, target), windows))
            continue
        for window in slo.windows:
            if window not in windows:
                continue
            t0, t1 = windows[window]
            extra: dict[str, Any] = {}
            if slo.compare is None:
                j = judge_window(slo, source, t0, t1)
            elif reference is None:
                j = Judgement(
                    outcome=SLOVerdict(slo.no_data),
                    estimate=None,
                    lower=None,
                    upper=None,
                    n=0,
                    detail={"compare": slo.compare, "reason": "the run has no baseline window"},
                )
            else:
                j = judge_against(slo, source, reference, t0, t1)
                extra = {"baseline_t0": reference[0], "baseline_t1": reference[1]}
            if not slo.critical:
                extra["critical"] = False
            results.append(
                SLOResult(
                    window=window,
                    objective=slo.name,
                    verdict=j.outcome.value,
                    estimate=j.estimate,
                    lower=j.lower,
                    upper=j.upper,
                    samples=j.n,
                    detail={**j.detail, "slo": slo.describe(), "t0": t0, "t1": t1, **extra},
                )
            )
    return results


def _source(sources: SLISource | Mapping[str, SLISource], slo: SLO) -> SLISource:
    if isinstance(sources, SLISource):
        return sources if slo.route is None else sources.route(slo.route)
    if slo.source not in sources:
        raise SLIError(f"objective {slo.name!r} needs SLI source {slo.source!r}; have {sorted(sources)}")
    source = sources[slo.source]
    return source if slo.route is None else source.route(slo.route)


def format_results(results: Sequence[SLOResult]) -> str:
    """A plain-text table of results (the console may render its own)."""
    rows = [("WINDOW", "OBJECTIVE", "VERDICT", "ESTIMATE", "BOUNDS", "N")]
    for r in results:
        unit = str(r.detail.get("unit", ""))
        rows.append(
            (
                r.window,
                r.objective,
                r.verdict.upper() if r.verdict != "pass" else "pass",
                _fmt(r.estimate, unit),
                f"[{_fmt(r.lower, unit)}, {_fmt(r.upper, unit)}]"
                if r.lower is not None or r.upper is not None
                else "-",
                str(r.samples),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x:.1f}ms"
    if unit == "s":
        return f"{x:.1f}s"
    if unit == "×":
        return f"{x:.3f}×"
    if unit == "Δ":
        return f"{x:+.4f}"
    return f"{x:.4f}"
