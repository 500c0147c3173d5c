"""Gate logic without running anything: suite files, baseline comparison, the decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaoslab.errors import InvalidInput
from chaoslab.gate import GateExit, SuiteEntry, SuiteRun, decide, load_suite
from chaoslab.report import baseline as bl
from chaoslab.report.score import Scored, Thresholds, score
from tests.statepaths import env_state


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_suite_file_resolves_paths_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    write(tmp_path / "exp" / "a.yaml", "title: a\n")
    write(tmp_path / "exp" / "b.yaml", "title: b\n")
    suite = load_suite(
        write(
            tmp_path / "suite.yaml",
            """
name: checkout
experiments:
  - {path: exp/a.yaml, weight: 3, key: true}
  - path: exp/b.yaml
    name: bee
thresholds: {pass: 95}
tolerance: {score: 2}
""",
        )
    )
    assert suite.name == "checkout"
    a, b = suite.entries
    assert a == SuiteEntry(path=(tmp_path / "exp" / "a.yaml").resolve(), name="a", weight=3.0, key=True)
    assert (b.name, b.weight, b.key) == ("bee", 1.0, False)
    assert suite.thresholds == Thresholds(pass_at=95, warn_at=70)
    assert suite.tolerance.score == 2 and suite.tolerance.ratio == bl.Tolerance().ratio


def test_suite_file_reports_every_problem_with_field_paths_and_lines(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "title: a\n")
    path = write(
        tmp_path / "suite.yaml",
        """
experiments:
  - {path: a.yaml, weight: -1}
  - {path: missing.yaml, key: "yes"}
  - {path: a.yaml, colour: red}
thresholds: {pass: 60, warn: 80}
tolerance: {score: fast}
""",
    )
    with pytest.raises(InvalidInput) as info:
        load_suite(path)
    text = str(info.value)
    for expected in (
        "at name",
        "experiments[0].weight",
        "experiments[1].path",
        "experiments[1].key",
        "experiments[2].colour",
        "experiments[2].name",
        "duplicate",
        "tolerance.score",
        "thresholds",
    ):
        assert expected in text, expected
    weight = next(p for p in info.value.problems if p.path == "experiments[0].weight")
    assert weight.line == 3


def snap(score_: float, **sli: tuple[float, str, str]) -> bl.Snapshot:
    points = {
        k.replace("_", "[", 1) + "]": bl.SLIPoint(estimate=v, unit=u, better=b)
        for k, (v, u, b) in sli.items()
    }
    return bl.Snapshot(
        suite="s",
        score=score_,
        created="2027-01-01T00:00:00+00:00",
        experiments={"kill": bl.ExperimentSnapshot(verdict="passed", weight=1, key=True, sli=points)},
    )


def test_no_baseline_is_reported_never_a_silent_pass() -> None:
    comp = bl.compare(snap(100), None, bl.Tolerance(), source="/x/baseline.json")
    assert comp.status == "no-baseline" and not comp.regressed
    assert "no baseline" in comp.headline() and "not a pass" in comp.headline()


def test_score_drop_beyond_tolerance_is_a_regression() -> None:
    tol = bl.Tolerance(score=5)
    assert bl.compare(snap(96), snap(100), tol).status == "ok"
    comp = bl.compare(snap(90), snap(100), tol)
    assert comp.regressed and comp.regressions[0].what == "score"
    assert "10.0 points" in comp.regressions[0].message


def test_latency_needs_both_relative_and_absolute_rise() -> None:
    tol = bl.Tolerance(latency=0.25, latency_ms=10)
    base = snap(100, p99_during=(4.0, "ms", "lower"))
    # +100% but only 4 ms: noise on a fast service, not a regression.
    assert bl.compare(snap(100, p99_during=(8.0, "ms", "lower")), base, tol).status == "ok"
    comp = bl.compare(snap(100, p99_during=(120.0, "ms", "lower")), base, tol)
    assert comp.regressed
    assert comp.regressions[0].what == "p99[during]"
    assert "4.0 ms → 120.0 ms" in comp.regressions[0].message


def test_ratio_and_ttr_directions() -> None:
    tol = bl.Tolerance(ratio=0.01, ttr_s=2)
    base = snap(
        100,
        avail_during=(0.999, "", "higher"),
        err_during=(0.001, "", "lower"),
        heal_during=(3.0, "s", "lower"),
    )
    better = snap(
        100, avail_during=(1.0, "", "higher"), err_during=(0.0, "", "lower"), heal_during=(1.0, "s", "lower")
    )
    assert bl.compare(better, base, tol).status == "ok"
    worse = snap(
        100,
        avail_during=(0.95, "", "higher"),
        err_during=(0.05, "", "lower"),
        heal_during=(9.0, "s", "lower"),
    )
    comp = bl.compare(worse, base, tol)
    assert {r.what for r in comp.regressions} == {"avail[during]", "err[during]", "heal[during]"}


def test_baseline_round_trips_and_corrupt_file_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "b" / "baseline.json"
    assert bl.load(path) is None
    original = snap(97.5, p99_during=(4.0, "ms", "lower"))
    bl.save(path, original)
    assert bl.load(path) == original
    path.write_text('{"schema": 99}')
    with pytest.raises(InvalidInput, match="schema"):
        bl.load(path)


def test_store_path_is_under_chaoslab_home(chaoslab_home: Path) -> None:
    assert (
        bl.store_path("checkout / prod", env_state().home)
        == chaoslab_home / "gate" / "checkout_prod" / "baseline.json"
    )


def outcome(
    name: str, verdict: str, *, key: bool = False, weight: float = 1, infra: str | None = None
) -> SuiteRun:
    return SuiteRun(
        entry=SuiteEntry(path=Path(f"/x/{name}.yaml"), name=name, weight=weight, key=key),
        verdict=verdict,
        reason="",
        run_dir=Path("/x"),
        duration_s=1.0,
        infra_error=infra,
    )


def run_decide(outcomes: list[SuiteRun], comp: bl.Comparison | None = None, **kw: bool) -> GateExit:
    sc = score([Scored(name=o.entry.name, weight=o.entry.weight, verdict=o.verdict) for o in outcomes])
    comp = comp or bl.Comparison(status="ok", baseline_score=100)
    return decide(outcomes, sc, sc.classify(Thresholds()), comp, **kw)[0]


REGRESSED = bl.Comparison(
    status="regression",
    regressions=(
        bl.Regression(experiment="", what="score", baseline=100, current=90, message="score dropped"),
    ),
)


def test_decision_order() -> None:
    ok = outcome("a", "passed")
    assert run_decide([ok]) is GateExit.PASS
    assert run_decide([ok, outcome("b", "invalid-input")]) is GateExit.INVALID_INPUT
    assert run_decide([ok, outcome("b", "not-clean")]) is GateExit.INFRA_ERROR
    assert run_decide([ok, outcome("b", "passed", infra="timed out")]) is GateExit.INFRA_ERROR
    # A key failure fails the gate whatever the score (here 10/11 ≈ 90.9).
    assert run_decide([outcome("a", "passed", weight=10), outcome("k", "aborted", key=True)]) is GateExit.FAIL
    # The same failure on a non-key experiment is only a lower score.
    assert run_decide([outcome("a", "passed", weight=10), outcome("k", "aborted")]) is GateExit.PASS
    assert run_decide([ok, outcome("b", "deviated"), outcome("c", "deviated")]) is GateExit.FAIL
    assert run_decide([ok], REGRESSED) is GateExit.REGRESSION
    assert (
        run_decide(
            [ok, outcome("k", "inconclusive", key=True)] + [outcome(f"p{i}", "passed") for i in range(20)]
        )
        is GateExit.INCONCLUSIVE
    )
    assert run_decide([ok, outcome("b", "inconclusive")]) is GateExit.INCONCLUSIVE
    warn = [outcome("a", "passed", weight=4), outcome("b", "deviated")]
    assert run_decide(warn) is GateExit.WARNING
    assert run_decide([ok], interrupted=True) is GateExit.INTERRUPTED


def test_missing_baseline_passes_on_its_own_merits_unless_required() -> None:
    none = bl.Comparison(status="no-baseline", source="/b.json")
    sc = score([Scored(name="a", weight=1, verdict="passed")])
    exit_, reason = decide([outcome("a", "passed")], sc, sc.classify(Thresholds()), none)
    assert exit_ is GateExit.PASS and "no baseline" in reason
    exit_, _ = decide([outcome("a", "passed")], sc, sc.classify(Thresholds()), none, require_baseline=True)
    assert exit_ is GateExit.INCONCLUSIVE
