"""A typed, read-only view of one run, built from ``journal.json`` alone.

Every report (HTML, postmortem, JUnit, job summary, metrics) and the gate read a run
through ``RunView.from_journal``; none of them looks at the event log, the lab or the
machine the run happened on, so a journal copied off a CI runner renders the same
report anywhere.

Derived numbers and their rules (documented here because every report repeats them):

- **Fault windows** pair each ``fault-injected`` event with the ``fault-reverted`` and
  ``clean-checked`` events of the same ``fault_id``. A fault never reverted has
  ``end=None`` (it is drawn to the end of the run and flagged).
- **Time to detect** (TTD): from the first injection to the first sign the system
  noticed. If the guard tripped, that is its ``breach_ts``. Otherwise it is the start of
  the first complete second after the injection whose point estimate misses an objective
  (availability or error rate against its ratio, a p50/p95/p99 objective against its
  threshold), measured to the *end* of that second, when its aggregate is first known.
  None when nothing degraded (nothing to detect) or there is no series.
- **Time to recover** (TTR): a ``time-to-recover`` SLO's estimate if the experiment
  declares one; else the longest ``time_to_recover_s`` a driver reported on revert; else,
  from the series, the end of the last degraded second minus the last revert (0 when the
  system was fine after the revert). None when it cannot be told.
- **Error budget consumed** per ratio or latency result: the bad fraction observed over
  the bad fraction the objective allows (1.0 = the whole budget of that window; above 1 =
  overspent). For ``pXX ≤ T`` the bad fraction is the share of requests above ``T`` and
  the allowance is ``1 − XX/100``.

Invariants: ``RunView`` and its parts are frozen; times are Unix seconds; latencies in
the series are milliseconds; ``from_journal`` never raises on a journal that misses
optional parts (an interrupted run's journal is still worth reading), only
``JournalError`` when the document is not a chaoslab journal at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chaoslab.engine.console import guard_timing_line
from chaoslab.errors import InvalidInput, Problem
from chaoslab.model.sections import Runbook, decode_runbook
from chaoslab.verdict import Verdict


class JournalError(InvalidInput):
    """The file is not a readable chaoslab journal (an input problem: exit code 2)."""


def load_journal(path: str | Path) -> dict[str, Any]:
    """Read ``journal.json``; raise ``JournalError`` with the file named if it is unusable."""
    from chaoslab.model.reader import MAX_JOURNAL_BYTES, load_document

    p = Path(path)
    try:
        doc = load_document(p, max_bytes=MAX_JOURNAL_BYTES, what="journal", mapping=False).data
    except InvalidInput as exc:
        raise JournalError(exc.problems) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("chaoslab"), dict):
        raise JournalError(
            [
                Problem(
                    file=str(p),
                    message="not a chaoslab journal (no 'chaoslab' section)",
                    hint="pass the journal.json that `chaoslab run` wrote in its run directory",
                )
            ]
        )
    return _masked(doc)


def load_run(path: str | Path) -> dict[str, Any]:
    """A run's journal from its ``journal.json``, or its run directory. A run directory
    with only ``events.ndjson`` (the run was killed before it wrote its journal) gets its
    journal rebuilt from the events, verdict included."""
    p = Path(path)
    if p.is_dir():
        if not (p / "journal.json").exists() and (p / "events.ndjson").is_file():
            from chaoslab.engine.journal import journal_from_log

            return _masked(journal_from_log(p / "events.ndjson"))
        p = p / "journal.json"
    return load_journal(p)


def _masked(doc: dict[str, Any]) -> dict[str, Any]:
    """A journal written by a chaoslab that did not mask yet still renders without the
    secrets its experiment names (inline, env, URL credentials)."""
    from chaoslab.engine.secrets import add_experiment_secrets
    from chaoslab.masking import Masker, output_masker

    exp = doc.get("experiment")
    masker = add_experiment_secrets(
        output_masker() or Masker(), raw=exp if isinstance(exp, dict) else {}, source=""
    )
    masked: dict[str, Any] = masker.deep(doc)
    return masked


def _run_verdict(value: Any) -> Verdict:
    """The journal's verdict; none is an interrupted run, one chaoslab does not know an error."""
    if value is None:
        return Verdict.INTERRUPTED
    try:
        return Verdict(str(value))
    except ValueError:
        return Verdict.ERROR


def _ts(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return None if math.isnan(f) or math.isinf(f) else f


@dataclass(frozen=True, kw_only=True)
class Series:
    """Per-second SLI columns of one source. Equal lengths; None where a second had no data."""

    source: str
    t: tuple[float, ...]
    rps: tuple[float, ...]
    error_rate: tuple[float | None, ...]  # 0..1
    p50_ms: tuple[float | None, ...]
    p95_ms: tuple[float | None, ...]
    p99_ms: tuple[float | None, ...]

    @classmethod
    def from_event(cls, raw: Mapping[str, Any]) -> Series | None:
        cols = raw.get("series")
        if not isinstance(cols, Mapping) or not isinstance(cols.get("t"), list):
            return None
        t = [_num(x) for x in cols["t"]]
        size = len(t)

        def col(name: str) -> list[Any]:
            values = cols.get(name)
            return list(values) if isinstance(values, list) and len(values) == size else [None] * size

        n, errors = col("n"), col("errors")
        rps_col, err_col = col("rps"), col("error_rate")
        rows: list[tuple[float, float, float | None, float | None, float | None, float | None]] = []
        for i in range(size):
            ti = t[i]
            if ti is None:
                continue
            ni = _num(n[i])
            rps = _num(rps_col[i]) if _num(rps_col[i]) is not None else ni
            er = _num(err_col[i])
            if er is None and ni:
                e = _num(errors[i])
                er = (e or 0.0) / ni
            # sli.base series hold seconds; a source may already give ms (p50_ms columns).
            pct: list[float | None] = []
            for name in ("p50", "p95", "p99"):
                ms = _num(col(f"{name}_ms")[i])
                if ms is None:
                    s = _num(col(name)[i])
                    ms = None if s is None else s * 1000.0
                pct.append(ms)
            rows.append((ti, rps or 0.0, er, pct[0], pct[1], pct[2]))
        rows.sort(key=lambda r: r[0])
        return cls(
            source=str(raw.get("source", "load")),
            t=tuple(r[0] for r in rows),
            rps=tuple(r[1] for r in rows),
            error_rate=tuple(r[2] for r in rows),
            p50_ms=tuple(r[3] for r in rows),
            p95_ms=tuple(r[4] for r in rows),
            p99_ms=tuple(r[5] for r in rows),
        )

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, kw_only=True)
class FaultWindow:
    fault_id: str
    driver: str
    operation: str
    target: str
    start: float
    end: float | None  # None: never reverted
    lease_s: float | None = None
    reverted_ok: bool | None = None
    revert_detail: str = ""
    revert_duration_s: float | None = None
    time_to_recover_s: float | None = None
    clean: bool | None = None  # None: never checked
    residue: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.driver}.{self.operation} on {self.target}"


@dataclass(frozen=True, kw_only=True)
class SLORow:
    """One objective judged in one window, with what the reports add to it."""

    window: str
    objective: str
    verdict: str  # pass | fail | inconclusive
    estimate: float | None
    lower: float | None
    upper: float | None
    samples: int
    unit: str  # "ms", "s" or "" (a ratio)
    describe: str  # "p99 ≤ 250ms", "availability ≥ 0.99", ...
    sli: str  # availability | latency | error-rate | time-to-recover | ""
    better: str  # "higher" or "lower": the direction in which the estimate improves
    budget_consumed: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.objective}[{self.window}]"


@dataclass(frozen=True, kw_only=True)
class ActivityRow:
    phase: str  # baseline | method | during | after | rollback
    name: str
    type: str  # action | probe
    status: str  # succeeded | failed | timed-out
    start: float | None
    end: float | None
    error: str = ""
    tolerance_met: bool | None = None


@dataclass(frozen=True, kw_only=True)
class RunView:
    title: str
    description: str
    run_id: str
    verdict: Verdict
    exit_code: int | None
    reason: str
    start: float
    end: float
    duration_s: float
    tags: tuple[str, ...]
    series: tuple[Series, ...]
    faults: tuple[FaultWindow, ...]
    slo: tuple[SLORow, ...]
    activities: tuple[ActivityRow, ...]
    guard_reason: str | None
    guard_ts: float | None
    breach_to_clean_s: float | None
    time_to_detect_s: float | None
    time_to_recover_s: float | None
    windows: Mapping[str, tuple[float, float]]
    phases: tuple[tuple[str, float, float | None], ...]  # (phase, start, end)
    interruptions: tuple[str, ...]
    environment: Mapping[str, str]
    # When an operator pressed ``chaoslab halt`` during the run (None: no halt). A halt is
    # not the guard: the guard decides on the SLIs, a halt is a person's decision.
    halt_ts: float | None = None
    # The guard's sequential test and its timing from the first bad request (onset);
    # None for journals of runs without a guard.
    guard_test: str | None = None
    guard_timing: str | None = None  # one line: onset → detected → clean, as the console says it
    onset_to_detect_s: float | None = None
    onset_to_clean_s: float | None = None
    runbook: Runbook | None
    experiment: Mapping[str, Any]

    @property
    def main_series(self) -> Series | None:
        """The series charts use: the ``load`` source if present, else the longest one."""
        if not self.series:
            return None
        named = [s for s in self.series if s.source == "load"]
        return named[0] if named else max(self.series, key=len)

    @property
    def aborted(self) -> bool:
        return self.guard_ts is not None

    @property
    def halted(self) -> bool:
        """The run was stopped by ``chaoslab halt`` (an operator), not by the guard."""
        return self.halt_ts is not None

    @property
    def not_clean(self) -> tuple[FaultWindow, ...]:
        return tuple(f for f in self.faults if f.clean is False or f.reverted_ok is False or f.end is None)

    @property
    def budget_consumed(self) -> float | None:
        """The largest share of error budget any objective consumed (None if none is known)."""
        values = [r.budget_consumed for r in self.slo if r.budget_consumed is not None]
        return max(values) if values else None

    @classmethod
    def from_journal(cls, journal: Mapping[str, Any]) -> RunView:
        cl = journal.get("chaoslab")
        if not isinstance(cl, Mapping):
            raise JournalError([Problem(message="not a chaoslab journal (no 'chaoslab' section)")])
        exp = journal.get("experiment") if isinstance(journal.get("experiment"), Mapping) else {}
        assert isinstance(exp, Mapping)
        # chaoslab's own experiment fields sit under experiment.chaoslab (the section is a
        # Chaos Toolkit experiment); journals written before that kept them at the top.
        own = exp.get("chaoslab") if isinstance(exp.get("chaoslab"), Mapping) else {}
        assert isinstance(own, Mapping)
        exp = {**exp, **own}
        start = _ts(journal.get("start")) or 0.0
        end = _ts(journal.get("end")) or start
        series = tuple(
            s for s in (Series.from_event(e) for e in cl.get("series") or [] if isinstance(e, Mapping)) if s
        )
        faults = _faults(cl.get("faults") or [])
        specs = _slo_specs(exp.get("slo"))
        slo = tuple(_slo_row(r, specs) for r in cl.get("slo") or [] if isinstance(r, Mapping))
        guard = [g for g in cl.get("guard") or [] if isinstance(g, Mapping)]
        guard_ts = _num(guard[0].get("breach_ts")) or _num(guard[0].get("ts")) if guard else None
        windows: dict[str, tuple[float, float]] = {}
        for name, pair in (cl.get("windows") or {}).items():
            if isinstance(pair, list) and len(pair) == 2 and all(_num(x) is not None for x in pair):
                windows[str(name)] = (float(pair[0]), float(pair[1]))
        phases = _phases(cl.get("phases") or [])
        main = _pick_main(series)
        ttd = _time_to_detect(faults, guard_ts, main, specs)
        ttr = _time_to_recover(slo, faults, main, specs)
        tags = exp.get("tags")
        halts = [
            i
            for i in cl.get("interruptions") or []
            if isinstance(i, Mapping) and str(i.get("signal", "")).upper() == "HALT"
        ]
        halt_ts = (_num(halts[0].get("ts")) or end) if halts else None
        timing = cl.get("guard_timing") if isinstance(cl.get("guard_timing"), Mapping) else {}
        test = cl.get("guard_test") if isinstance(cl.get("guard_test"), Mapping) else {}
        assert isinstance(timing, Mapping) and isinstance(test, Mapping)
        guard_test = (
            f"{test['test']}, tolerated rate {_num(test.get('tolerated_rate')) or 0:.3g}, "
            f"false-abort risk {_num(test.get('risk')) or 0:g}"
            if test.get("test")
            else None
        )
        env = {
            "chaoslab": str(cl.get("version", "")),
            "chaostoolkit-lib": str(journal.get("chaoslib-version") or "-"),
            "platform": str(journal.get("platform", "")),
            "node": str(journal.get("node", "")),
            "seed": str(cl.get("seed", "")),
            "run id": str(cl.get("run_id", "")),
        }
        return cls(
            title=str(exp.get("title") or "untitled experiment"),
            description=str(exp.get("description") or ""),
            run_id=str(cl.get("run_id", "")),
            verdict=_run_verdict(cl.get("verdict")),
            exit_code=cl.get("exit_code") if isinstance(cl.get("exit_code"), int) else None,
            reason=str(cl.get("reason", "")),
            start=start,
            end=end,
            duration_s=_num(journal.get("duration")) or max(0.0, end - start),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            series=series,
            faults=faults,
            slo=slo,
            activities=_activities(journal),
            guard_reason=str(guard[0].get("reason", "")) if guard else None,
            guard_ts=guard_ts,
            breach_to_clean_s=_num(cl.get("breach_to_clean_s")),
            time_to_detect_s=ttd,
            time_to_recover_s=ttr,
            windows=windows,
            phases=phases,
            interruptions=tuple(
                f"{i.get('signal')} during {i.get('during')}"
                for i in cl.get("interruptions") or []
                if isinstance(i, Mapping)
            ),
            environment={k: v for k, v in env.items() if v},
            halt_ts=halt_ts,
            guard_test=guard_test,
            guard_timing=guard_timing_line(timing) if timing else None,
            onset_to_detect_s=_num(timing.get("time_to_detect_s")),
            onset_to_clean_s=_num(timing.get("time_to_clean_s")),
            runbook=_runbook(exp.get("runbook")),
            experiment=exp,
        )


def _faults(events: Sequence[Any]) -> tuple[FaultWindow, ...]:
    injected: dict[str, Mapping[str, Any]] = {}
    reverted: dict[str, Mapping[str, Any]] = {}
    checked: dict[str, Mapping[str, Any]] = {}
    for e in events:
        if not isinstance(e, Mapping):
            continue
        fid = str(e.get("fault_id", ""))
        kind = e.get("kind")
        if kind == "fault-injected":
            injected.setdefault(fid, e)
        elif kind == "fault-reverted":
            reverted[fid] = e  # the last attempt decides
        elif kind == "clean-checked":
            checked[fid] = e
    out = []
    for fid, inj in injected.items():
        rev = reverted.get(fid)
        chk = checked.get(fid)
        out.append(
            FaultWindow(
                fault_id=fid,
                driver=str(inj.get("driver", "")),
                operation=str(inj.get("operation", "")),
                target=str(inj.get("target", "")),
                start=_num(inj.get("ts")) or 0.0,
                end=_num(rev.get("ts")) if rev else None,
                lease_s=_num(inj.get("lease_s")),
                reverted_ok=bool(rev.get("ok")) if rev else None,
                revert_detail=str(rev.get("detail", "")) if rev else "",
                revert_duration_s=_num(rev.get("duration_s")) if rev else None,
                time_to_recover_s=_num(rev.get("time_to_recover_s")) if rev else None,
                clean=bool(chk.get("clean")) if chk else None,
                residue=tuple(str(r) for r in chk.get("residue") or []) if chk else (),
            )
        )
    return tuple(sorted(out, key=lambda f: f.start))


def _slo_specs(raw: Any) -> dict[str, Any]:
    """The journal's objectives by name, decoded by the model (empty if they do not
    decode: reports still render)."""
    from chaoslab.model.sections import decode_slos

    parsed = decode_slos(raw) if raw is not None else []
    return {} if isinstance(parsed, list) else {s.name: s for s in parsed}


def _runbook(raw: Any) -> Runbook | None:
    book = decode_runbook(raw)
    return None if isinstance(book, list) else book


def _slo_row(raw: Mapping[str, Any], specs: Mapping[str, Any]) -> SLORow:
    detail = raw.get("detail") if isinstance(raw.get("detail"), Mapping) else {}
    assert isinstance(detail, Mapping)
    name = str(raw.get("objective", ""))
    spec = specs.get(name)
    sli = str(spec.sli) if spec is not None else ""
    unit = str(detail.get("unit", ""))
    estimate = _num(raw.get("estimate"))
    if unit in ("ms", "s", "×", "Δ") or sli == "error-rate":
        better = "lower"
    else:
        better = "higher"
    describe = str(detail.get("slo") or (spec.describe() if spec is not None else name))
    if detail.get("critical", True) is False:
        describe += " (non-critical)"
    return SLORow(
        window=str(raw.get("window", "")),
        objective=name,
        verdict=str(raw.get("verdict", "inconclusive")),
        estimate=estimate,
        lower=_num(raw.get("lower")),
        upper=_num(raw.get("upper")),
        samples=int(raw.get("samples") or 0),
        unit=unit,
        describe=describe,
        sli=sli,
        better=better,
        budget_consumed=_budget(spec, detail, estimate, int(raw.get("samples") or 0)),
        detail=detail,
    )


def _budget(spec: Any, detail: Mapping[str, Any], estimate: float | None, samples: int) -> float | None:
    if spec is None or estimate is None or samples <= 0:
        return None
    value = _budget_of(spec, detail, estimate, samples)
    return None if value is None else float(value)


def _budget_of(spec: Any, detail: Mapping[str, Any], estimate: float, samples: int) -> Any:
    sli = str(spec.sli)
    if sli == "availability" and spec.objective is not None:
        return (1.0 - estimate) / (1.0 - spec.objective)
    if sli == "error-rate" and spec.objective is not None:
        return estimate / spec.objective
    if sli == "latency":
        if spec.percentile is not None:
            above = _num(detail.get("above"))
            if above is None:
                return None
            return (above / samples) / (1.0 - spec.percentile / 100.0)
        if spec.objective is not None:
            return (1.0 - estimate) / (1.0 - spec.objective)
    return None


def _activities(journal: Mapping[str, Any]) -> tuple[ActivityRow, ...]:
    rows: list[ActivityRow] = []

    def add(entries: Any, phase: str) -> None:
        for e in entries or []:
            if not isinstance(e, Mapping):
                continue
            act = e.get("activity") if isinstance(e.get("activity"), Mapping) else {}
            assert isinstance(act, Mapping)
            exc = e.get("exception")
            rows.append(
                ActivityRow(
                    phase=phase,
                    name=str(act.get("name", "?")),
                    type=str(act.get("type", "")),
                    status="timed-out"
                    if isinstance(e.get("chaoslab"), Mapping) and e["chaoslab"].get("timed_out")
                    else str(e.get("status", "")),
                    start=_ts(e.get("start")),
                    end=_ts(e.get("end")),
                    error=str(exc[0]) if isinstance(exc, list) and exc else "",
                    tolerance_met=e.get("tolerance_met")
                    if isinstance(e.get("tolerance_met"), bool)
                    else None,
                )
            )

    ss = journal.get("steady_states") if isinstance(journal.get("steady_states"), Mapping) else {}
    assert isinstance(ss, Mapping)
    for key, phase in (("before", "baseline"), ("after", "after")):
        block = ss.get(key)
        if isinstance(block, Mapping):
            add(block.get("probes"), phase)
    for block in ss.get("during") or []:
        if isinstance(block, Mapping):
            add(block.get("probes"), "during")
    add(journal.get("run"), "method")
    add(journal.get("rollbacks"), "rollback")
    return tuple(sorted(rows, key=lambda r: r.start or 0.0))


def _phases(events: Sequence[Any]) -> tuple[tuple[str, float, float | None], ...]:
    open_: dict[str, float] = {}
    out: list[tuple[str, float, float | None]] = []
    for e in events:
        if not isinstance(e, Mapping) or _num(e.get("ts")) is None:
            continue
        phase, ts = str(e.get("phase")), float(e["ts"])
        if e.get("kind") == "phase-started":
            open_[phase] = ts
        elif e.get("kind") == "phase-finished" and phase in open_:
            out.append((phase, open_.pop(phase), ts))
    out += [(p, ts, None) for p, ts in open_.items()]
    return tuple(sorted(out, key=lambda x: x[1]))


def _pick_main(series: Sequence[Series]) -> Series | None:
    if not series:
        return None
    named = [s for s in series if s.source == "load"]
    return named[0] if named else max(series, key=len)


def _degraded(series: Series, i: int, specs: Mapping[str, Any]) -> bool:
    """Does second ``i`` miss any per-window objective on its point estimate?"""
    er = series.error_rate[i]
    pcts = {50.0: series.p50_ms[i], 95.0: series.p95_ms[i], 99.0: series.p99_ms[i]}
    for spec in specs.values():
        sli = str(spec.sli)
        if sli == "availability" and er is not None and spec.objective is not None:
            # good ≥ 1 − error_rate is not exact (a 404 is neither), close enough to detect.
            if 1.0 - er < spec.objective:
                return True
        elif sli == "error-rate" and er is not None and spec.objective is not None:
            if er > spec.objective:
                return True
        elif sli == "latency" and spec.percentile in pcts and spec.threshold_s is not None:
            value = pcts[spec.percentile]
            if value is not None and value > spec.threshold_s * 1000.0:
                return True
    return False


def _time_to_detect(
    faults: Sequence[FaultWindow], guard_ts: float | None, series: Series | None, specs: Mapping[str, Any]
) -> float | None:
    if not faults:
        return None
    first = faults[0].start
    if guard_ts is not None:
        return max(0.0, guard_ts - first)
    if series is None or not specs:
        return None
    for i, t in enumerate(series.t):
        if t + 1 > first and _degraded(series, i, specs):
            # A per-second aggregate is known when its second ends: detection cannot be earlier.
            return max(0.0, t + 1 - first)
    return None


def _time_to_recover(
    slo: Sequence[SLORow], faults: Sequence[FaultWindow], series: Series | None, specs: Mapping[str, Any]
) -> float | None:
    ttr_rows = [r for r in slo if r.sli == "time-to-recover" and r.estimate is not None]
    if ttr_rows:
        return max(r.estimate for r in ttr_rows if r.estimate is not None)
    reported = [f.time_to_recover_s for f in faults if f.time_to_recover_s is not None]
    if reported:
        return max(reported)
    ends = [f.end for f in faults if f.end is not None]
    if not ends or series is None or not specs or len(ends) != len(faults):
        return None
    last_revert = max(ends)
    failing = [t for i, t in enumerate(series.t) if t + 1 > last_revert and _degraded(series, i, specs)]
    if not any(t >= last_revert for t in series.t):
        return None  # no observation after the revert: cannot tell
    return max(0.0, failing[-1] + 1 - last_revert) if failing else 0.0


def fmt_value(x: float | None, unit: str) -> str:
    """Format an SLO number the way every report shows it."""
    if x is None:
        return "–"
    if unit == "ms":
        return f"{x:.1f} ms"
    if unit == "s":
        return f"{x:.1f} s"
    if unit == "×":  # a latency ratio against the baseline
        return f"{x:.3f}×"
    if unit == "Δ":  # a change of a ratio against the baseline
        return f"{x:+.4f}"
    return f"{x:.4f}"


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"
