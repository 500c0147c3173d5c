"""Comparative objectives (``compare: baseline``): parsing, judging, critical, the run."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from chaoslab.engine import events as ev
from chaoslab.engine.console import ConsoleProgress, PlainSink
from chaoslab.model.sections import decode_slos
from chaoslab.sli.base import Counts, ExactLatencies, LatencyView, SecondStats, SLISource
from chaoslab.sli.slo import SLIKind, judge
from chaoslab.verdict import Verdict
from tests.statepaths import env_state
from tests.verdicts import verdict_of_slos

pytest.importorskip("scipy")


class Recorded(SLISource):
    """Requests recorded as (send time, status, latency s)."""

    def __init__(self, rows: list[tuple[float, int, float]]) -> None:
        self.name = "load"
        self.rows = rows

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def last_sample_at(self) -> float | None:
        return max(t for t, _, _ in self.rows)

    def _in(self, t0: float, t1: float) -> list[tuple[float, int, float]]:
        return [r for r in self.rows if t0 <= r[0] < t1]

    def counts(self, t0: float, t1: float) -> Counts:
        rows = self._in(t0, t1)
        good = sum(1 for _, c, _ in rows if 200 <= c < 400)
        errors = sum(1 for _, c, _ in rows if c >= 500)
        return Counts(total=len(rows), good=good, errors=errors)

    def latencies(self, t0: float, t1: float) -> LatencyView | None:
        return ExactLatencies(lat if 200 <= c < 400 else float("inf") for _, c, lat in self._in(t0, t1))

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        return []


def stream(seed: int, *, slow_from: float | None = None, errors_from: float | None = None) -> Recorded:
    """200 req/s for 30 s: baseline [0, 10), during [10, 20), after [20, 30)."""
    rng = random.Random(seed)
    rows = []
    for i in range(6000):
        t = i / 200
        lat = rng.lognormvariate(-6, 0.4)
        if slow_from is not None and slow_from <= t < 20:
            lat *= 3
        code = 503 if errors_from is not None and errors_from <= t < 20 and rng.random() < 0.1 else 200
        rows.append((t, code, lat))
    return Recorded(rows)


WINDOWS = {"baseline": (0.0, 10.0), "during": (10.0, 20.0), "after": (20.0, 30.0)}
SLOS = [
    {"name": "slower", "sli": "latency", "compare": "baseline", "max_ratio": 1.5},
    {"name": "more-errors", "sli": "error-rate", "compare": "baseline", "max_increase": 0.02},
    {"name": "less-available", "sli": "availability", "compare": "baseline", "critical": False},
]


def test_compare_parses_with_defaults() -> None:
    slos = decode_slos(SLOS)
    assert isinstance(slos, tuple)
    slower, errors, avail = slos
    assert slower.compare == "baseline" and slower.max_ratio == 1.5 and slower.windows == ("during", "after")
    assert errors.max_increase == 0.02 and errors.min_samples == 20 and errors.no_data == "inconclusive"
    assert avail.sli is SLIKind.AVAILABILITY and avail.critical is False and avail.max_increase == 0.01
    assert slower.describe() == "latency ≤ 1.5× baseline"


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"name": "x", "sli": "latency", "compare": "yesterday"}, "slo[0].compare"),
        ({"name": "x", "sli": "latency", "compare": "baseline", "threshold": "1s"}, "slo[0].threshold"),
        ({"name": "x", "sli": "latency", "compare": "baseline", "max_ratio": 0.5}, "slo[0].max_ratio"),
        ({"name": "x", "sli": "error-rate", "compare": "baseline", "max_ratio": 2}, "slo[0].max_ratio"),
        ({"name": "x", "sli": "latency", "compare": "baseline", "windows": ["baseline"]}, "slo[0].windows"),
        ({"name": "x", "sli": "latency", "compare": "baseline", "no_data": "maybe"}, "slo[0].no_data"),
        ({"name": "x", "sli": "latency", "compare": "baseline", "min_samples": 0}, "slo[0].min_samples"),
        ({"name": "x", "sli": "time-to-recover", "compare": "baseline"}, "slo[0].compare"),
        (
            {"name": "x", "sli": "latency", "threshold": "1s", "percentile": 99, "max_ratio": 2},
            "slo[0].max_ratio",
        ),
        ({"name": "x", "sli": "availability", "objective": 0.9, "critical": "yes"}, "slo[0].critical"),
    ],
)
def test_compare_problems_name_the_field(entry: dict[str, object], path: str) -> None:
    problems = decode_slos([entry], "slo")
    assert isinstance(problems, list) and path in {p.path for p in problems}, problems


def test_a_slower_window_fails_against_the_baseline_and_recovers_after() -> None:
    slos = decode_slos(SLOS)
    assert isinstance(slos, tuple)
    results = {(r.objective, r.window): r for r in judge(slos, stream(1, slow_from=10.0), WINDOWS)}
    assert ("slower", "baseline") not in results
    during, after = results[("slower", "during")], results[("slower", "after")]
    assert during.verdict == "fail" and during.estimate == pytest.approx(3.0, rel=0.1)
    assert during.lower is not None and during.lower > 1.5 and during.detail["unit"] == "×"
    assert during.detail["p_value"] < 0.05
    assert after.verdict == "pass" and after.upper is not None and after.upper <= 1.5
    assert results[("more-errors", "during")].verdict == "pass"
    verdict, reason = verdict_of_slos(judge(slos, stream(1, slow_from=10.0), WINDOWS))
    assert verdict is Verdict.DEVIATED and "SLO slower [during] failed" in reason


def test_a_non_critical_failure_informs_but_does_not_decide() -> None:
    slos = decode_slos(SLOS[1:])
    assert isinstance(slos, tuple)
    results = judge(slos, stream(2, errors_from=10.0), WINDOWS)
    by = {(r.objective, r.window): r for r in results}
    assert by[("less-available", "during")].verdict == "fail"
    assert by[("less-available", "during")].detail["critical"] is False
    assert by[("more-errors", "during")].verdict == "fail"  # critical: decides the run
    verdict, reason = verdict_of_slos(results)
    assert verdict is Verdict.DEVIATED and "SLO more-errors [during] failed" in reason
    assert "less-available" not in reason  # informs (journal, reports), does not decide
    only_advisory = [r for r in results if r.objective == "less-available"]
    assert verdict_of_slos(only_advisory)[0] is Verdict.PASSED


def test_no_baseline_window_applies_the_no_data_policy() -> None:
    slos = decode_slos([{**SLOS[0], "no_data": "fail"}])
    assert isinstance(slos, tuple)
    [result] = [r for r in judge(slos, stream(3), {"during": (10.0, 20.0)}) if r.window == "during"]
    assert result.verdict == "fail" and "no baseline" in result.detail["reason"]


def test_console_shows_ratios_and_changes() -> None:
    slos = decode_slos(SLOS)
    assert isinstance(slos, tuple)
    out = io.StringIO()
    console = ConsoleProgress(PlainSink(out))
    for r in judge(slos, stream(4, slow_from=10.0), WINDOWS):
        console(ev.SLOEvaluated(run_id="r", **r.to_dict()))
    console(ev.RunFinished(run_id="r", verdict="deviated", exit_code=1, reason="x", duration_s=1.0))
    text = out.getvalue()
    assert "SLO slower [during] fail" in text and "×" in text
    assert "latency ≤ 1.5× baseline" in text
    assert "(non-critical)" in text
    json.dumps([r.to_dict() for r in judge(slos, stream(4), WINDOWS)])  # JSON-able for the journal


def test_a_baseline_that_is_not_critical_does_not_stop_the_run(tmp_path: Path) -> None:
    from chaoslab.drivers.registry import DriverRegistry
    from chaoslab.engine.compile import load_experiment
    from chaoslab.engine.runner import Runner, RunOptions
    from tests.fakedriver import FakeDriver

    class Obs:
        def bind(self, run_probe: object) -> None:
            pass

        def start(self, bus: ev.EventBus, run_id: str) -> None:
            pass

        def stop(self) -> None:
            pass

        def judge(self, windows: dict[str, tuple[float, float]]) -> list[ev.SLOEvaluated]:
            return [
                ev.SLOEvaluated(
                    run_id="r",
                    window=w,
                    objective="advisory",
                    verdict="fail",
                    estimate=None,
                    lower=None,
                    upper=None,
                    samples=0,
                    detail={"critical": False},
                )
                for w in windows
            ]

    f = tmp_path / "exp.yaml"
    f.write_text("title: t\ndescription: d\nmethod: []\n")
    reg = DriverRegistry(extra={"fake": FakeDriver()}, load_installed=False)
    runner = Runner(
        load_experiment(str(f), registry=reg),
        registry=reg,
        options=RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state()),
        observation=Obs(),
    )
    result = runner.run()
    assert result.verdict is Verdict.PASSED, result.reason
    assert result.journal["chaoslab"]["slo"][0]["detail"]["critical"] is False


def test_gate_json_lists_comparative_results_like_the_others(tmp_path: Path) -> None:
    """A run's SLO results, comparative and non-critical ones included, in gate.json."""
    from chaoslab.gate import GateExit, GateResult, Suite, SuiteEntry, SuiteRun, snapshot_of
    from chaoslab.report import baseline as bl
    from chaoslab.report.score import Scored, Thresholds, score
    from chaoslab.report.view import RunView

    slos = decode_slos(SLOS)
    assert isinstance(slos, tuple)
    results = [r.to_dict() for r in judge(slos, stream(5, slow_from=10.0), WINDOWS)]
    journal = {
        "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-01T00:00:30+00:00",
        "experiment": {"title": "t", "slo": SLOS},
        "chaoslab": {"verdict": "deviated", "slo": [{"kind": "slo-evaluated", **r} for r in results]},
    }
    view = RunView.from_journal(journal)
    entry = SuiteEntry(path=tmp_path / "e.yaml", name="e", weight=1, key=False)
    out = SuiteRun(entry=entry, verdict="deviated", reason="", run_dir=tmp_path, duration_s=1.0, view=view)
    sc = score([Scored(name="e", weight=1, verdict="deviated")])
    suite = Suite(name="s", entries=(entry,))
    result = GateResult(
        suite=suite,
        outcomes=(out,),
        score=sc,
        klass=sc.classify(Thresholds()),
        comparison=bl.Comparison(status="no-baseline"),
        exit=GateExit.FAIL,
        reason="x",
        started=0.0,
        finished=1.0,
        output_dir=tmp_path,
        snapshot=snapshot_of(suite, (out,), sc),
    )
    rows = {(r["objective"], r["window"]): r for r in result.to_dict()["experiments"][0]["slo"]}
    slower = rows[("slower", "during")]
    assert (
        slower["verdict"] == "fail"
        and slower["unit"] == "×"
        and slower["target"] == "latency ≤ 1.5× baseline"
    )
    assert slower["lower"] > 1.5 and slower["critical"] is True
    assert rows[("less-available", "during")]["critical"] is False
    json.dumps(result.to_dict())
    # The gate's baseline snapshot keeps the ratio, lower is better: a later run can regress on it.
    point = result.snapshot.experiments["e"].sli["slower[during]"]
    assert point.unit == "×" and point.better == "lower"
