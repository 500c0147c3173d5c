"""SLO files: OpenSLO v1 and the concise form compile to one model; every mistake is
reported with its file, line and field; duration units are case-sensitive."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chaoslab.errors import InvalidInput
from chaoslab.model.openslo import Budgeting, load_slo_files, parse_shorthand
from chaoslab.model.sections import SLOFiles, decode_slo_files
from chaoslab.sli.budget import BudgetStatus
from chaoslab.sli.budget_gate import allowance_for
from chaoslab.sli.prometheus import EventCounts, prom_duration

REPO = Path(__file__).resolve().parents[2]

OPENSLO_LATENCY = """apiVersion: openslo/v1
kind: DataSource
metadata: {name: prom}
spec:
  type: Prometheus
  connectionDetails: {url: "http://127.0.0.1:9090"}
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: lab-latency
  annotations: {chaoslab.dev/runbook: "https://github.com/chaoslab/chaoslab/blob/main/docs/runbooks/lab-latency.md"}
spec:
  description: Requests served within 100 ms
  service: lab
  indicator:
    metadata: {name: lab-latency}
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource:
            metricSourceRef: prom
            spec: {query: 'lab_request_duration_seconds_bucket{replica=~".+",le="0.1"}'}
        total:
          metricSource:
            metricSourceRef: prom
            spec: {query: 'lab_request_duration_seconds_count{replica=~".+"}'}
  timeWindow:
    - duration: 1d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - targetPercent: 99
"""


def _write(tmp_path: Path, text: str, name: str = "slo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _problems(*paths: Path) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        load_slo_files(paths)
    return [str(p) for p in info.value.problems]


def test_example_files_load() -> None:
    avail, lat = load_slo_files(
        [REPO / "experiments/slos/lab-availability.yaml", REPO / "experiments/slos/lab-latency.yaml"]
    )
    assert (avail.name, avail.form, avail.target, avail.window.seconds) == (
        "lab-availability",
        "openslo",
        0.99,
        86400,
    )
    assert avail.indicator.ratio is not None and avail.indicator.ratio.good is not None
    assert avail.prometheus_url == "http://127.0.0.1:9090"
    assert avail.runbook and avail.runbook.endswith("lab-availability.md")
    (policy,) = avail.alert_policies
    (cond,) = policy.conditions
    assert (cond.severity, cond.threshold, cond.lookback_s, cond.alert_after_s) == ("page", 10.0, 600.0, 60.0)
    assert policy.notification_targets == ("lab-oncall",)
    assert lat.form == "concise" and lat.indicator.latency is not None
    assert lat.indicator.latency.threshold_s == pytest.approx(0.1)


def test_concise_form_compiles_to_the_same_model_as_openslo(tmp_path: Path) -> None:
    (from_openslo,) = load_slo_files([_write(tmp_path, OPENSLO_LATENCY)])
    (concise,) = load_slo_files([REPO / "experiments/slos/lab-latency.yaml"])
    assert from_openslo.indicator.latency == concise.indicator.latency
    assert from_openslo.indicator.ratio is not None and concise.indicator.ratio is not None
    for part in ("good", "total"):
        a, b = getattr(from_openslo.indicator.ratio, part), getattr(concise.indicator.ratio, part)
        assert a.query == b.query
    for attr in (
        "name",
        "target",
        "window",
        "budgeting",
        "service",
        "description",
        "runbook",
        "prometheus_url",
    ):
        assert getattr(from_openslo, attr) == getattr(concise, attr), attr


def test_duration_units_are_case_sensitive() -> None:
    assert parse_shorthand("1m").seconds == 60
    assert parse_shorthand("1M").seconds == 30 * 86400
    assert parse_shorthand("2w").seconds == 14 * 86400
    assert parse_shorthand("1Q").seconds == 90 * 86400 and parse_shorthand("1Y").seconds == 365 * 86400
    with pytest.raises(ValueError, match="no 's' unit"):
        parse_shorthand("30s")
    assert parse_shorthand("30s", allow_seconds=True).seconds == 30
    for bad in ("1D", "0d", "1.5h", "1 d", "-1h", 5, "1mo"):
        with pytest.raises(ValueError, match="m is minutes, M is months"):
            parse_shorthand(bad)
    assert prom_duration(90) == "1m30s" and prom_duration(8640) == "2h24m" and prom_duration(86400) == "1d"


def test_calendar_window_steps_through_months(tmp_path: Path) -> None:
    text = OPENSLO_LATENCY.replace(
        "    - duration: 1d\n      isRolling: true",
        "    - duration: 1M\n      calendar: {startTime: '2024-01-31 00:00:00', timeZone: Europe/Berlin}",
    )
    (slo,) = load_slo_files([_write(tmp_path, text)])
    assert not slo.window.rolling
    tz = ZoneInfo("Europe/Berlin")
    now = datetime(2024, 3, 10, 12, 0, tzinfo=tz).timestamp()
    start, end = slo.window.bounds(now)
    # Jan 31 + 1 month = Feb 29 (2024 is a leap year), + 2 months = Mar 31: we are in the Feb 29 period.
    assert datetime.fromtimestamp(start, tz) == datetime(2024, 2, 29, tzinfo=tz)
    assert end == now


def test_timeslices_and_threshold_metric(tmp_path: Path) -> None:
    text = """apiVersion: openslo/v1
kind: SLI
metadata: {name: p99}
spec:
  thresholdMetric:
    metricSource:
      type: Prometheus
      spec: {query: 'histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))'}
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: p99-latency}
spec:
  indicatorRef: p99
  timeWindow: [{duration: 4w, isRolling: true}]
  budgetingMethod: Timeslices
  objectives:
    - {op: lte, value: 0.25, target: 0.95, timeSliceTarget: 0.9, timeSliceWindow: 5}
"""
    (slo,) = load_slo_files([_write(tmp_path, text)])
    assert slo.budgeting is Budgeting.TIMESLICES and slo.indicator.threshold is not None
    o = slo.objective
    assert (o.op, o.value, o.target, o.time_slice_target, o.time_slice_window_s) == (
        "lte",
        0.25,
        0.95,
        0.9,
        300.0,
    )


def test_openslo_problems_name_file_line_and_field(tmp_path: Path) -> None:
    text = """apiVersion: openslo/v1
kind: SLO
metadata: {name: broken}
spec:
  indicatorRef: nope
  timeWindow:
    - duration: 30D
  budgetingMethod: Occurences
  objectives:
    - target: 99.9
---
apiVersion: openslo/v1
kind: AlertCondition
metadata: {name: c}
spec:
  condition: {kind: burnrate, threshold: 2, lookbackWindow: 60s}
"""
    path = _write(tmp_path, text)
    problems = _problems(path)
    joined = "\n".join(problems)
    assert f"{path}:5 at spec.indicatorRef: no SLI named 'nope'" in joined
    assert f"{path}:7 at spec.timeWindow[0].duration: not a duration shorthand: '30D'" in joined
    assert (
        f"{path}:8 at spec.budgetingMethod: expected Occurrences, Timeslices or RatioTimeslices, got 'Occurences'"
        in joined
    )
    assert f"{path}:10 at spec.objectives[0].target: expected a ratio in (0, 1), got 99.9" in joined


def test_refs_resolve_across_files_and_missing_refs_are_named(tmp_path: Path) -> None:
    sli = _write(
        tmp_path,
        """apiVersion: openslo/v1
kind: SLI
metadata: {name: ok}
spec:
  ratioMetric:
    counter: true
    bad: {metricSource: {metricSourceRef: prom, spec: {query: 'x_total{code=~"5.."}'}}}
    total: {metricSource: {metricSourceRef: prom, spec: {query: x_total}}}
""",
        "sli.yaml",
    )
    slo = _write(
        tmp_path,
        """apiVersion: openslo/v1
kind: SLO
metadata: {name: uses-ref}
spec:
  indicatorRef: ok
  timeWindow: [{duration: 28d}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.99, displayName: Main}, {target: 0.9, displayName: Loose}]
  alertPolicies: [{alertPolicyRef: missing-policy}]
""",
        "slo.yaml",
    )
    joined = "\n".join(_problems(sli, slo))
    assert (
        f"{sli}:7 at spec.ratioMetric.bad.metricSource.metricSourceRef: no DataSource named 'prom'" in joined
    )
    assert f"{slo}:9 at spec.alertPolicies[0].alertPolicyRef: no AlertPolicy named 'missing-policy'" in joined
    fixed = slo.read_text().replace("  alertPolicies: [{alertPolicyRef: missing-policy}]\n", "")
    ds = _write(
        tmp_path,
        "apiVersion: openslo/v1\nkind: DataSource\nmetadata: {name: prom}\nspec: {type: Prometheus}\n",
        "ds.yaml",
    )
    slo.write_text(fixed)
    main, loose = load_slo_files([sli, slo, ds])
    assert (main.name, main.target, loose.name, loose.target) == (
        "uses-ref:main",
        0.99,
        "uses-ref:loose",
        0.9,
    )
    assert main.indicator.ratio is not None and main.indicator.ratio.bad is not None


def test_concise_problems_name_file_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """prometheus: localhost:9090
slos:
  - name: Bad_Name
    objective: 0.99
    window: 1D
    latency: {metric: lab_request_duration_seconds_bucket, threshold: 100}
  - name: two
    objective: 1.5
    window: 1d
    ratio: {good: 'a{code="200"}', total: a, extra: 1}
    budgeting: timeslices
""",
    )
    joined = "\n".join(_problems(path))
    assert f"{path}:1 at prometheus: expected the Prometheus URL" in joined
    assert f"{path}:3 at slos[0].name: invalid SLO name 'Bad_Name'" in joined
    assert f"{path}:5 at slos[0].window: not a duration shorthand: '1D'" in joined
    assert f"{path}:6 at slos[0].latency.metric: give the histogram's base name" in joined
    assert f"{path}:6 at slos[0].latency.threshold: expected a latency with a unit" in joined
    assert f"{path}:8 at slos[1].objective: expected a ratio in (0, 1), got 1.5" in joined
    assert f"{path}:10 at slos[1].ratio.extra: unknown key 'extra'" in joined
    assert f"{path}:7 at slos[1].timeslice: timeslices budgeting needs timeslice" in joined


def test_not_yaml_and_not_found(tmp_path: Path) -> None:
    bad = _write(tmp_path, "slos: [\n", "bad.yaml")
    (msg,) = _problems(bad)
    assert msg.startswith(f"{bad}:") and "not valid YAML" in msg
    (msg,) = _problems(tmp_path / "nope.yaml")
    assert "SLO file not found" in msg
    other = _write(tmp_path, "apiVersion: openslo/v2alpha\nkind: SLO\n", "v2.yaml")
    (msg,) = _problems(other)
    assert f"{other}:1 at apiVersion: unsupported apiVersion 'openslo/v2alpha'" in msg


def _status(good: float, total: float, target: float) -> BudgetStatus:
    return BudgetStatus(
        slo="s",
        target=target,
        window_s=86400,
        window_start=0,
        evaluated_at=86400,
        counts=EventCounts(good=good, total=total),
        burn={},
        burn_windows_s={},
        firing=(),
    )


def test_budget_and_allowance_arithmetic() -> None:
    st = _status(good=9_990, total=10_000, target=0.999)  # 10 bad of 10 allowed
    assert st.budget_events == pytest.approx(10)
    assert st.budget_remaining == pytest.approx(0.0) and st.exhausted
    st = _status(good=9_996, total=10_000, target=0.999)  # 4 bad of 10 allowed
    assert st.budget_remaining == pytest.approx(0.6) and not st.exhausted
    a = allowance_for(st, 0.25)
    assert a.remaining_events == pytest.approx(6) and a.bad_events == pytest.approx(1.5)
    assert not a.exceeded(1.5) and a.exceeded(2) and a.spent_fraction(3) == pytest.approx(2)
    over = allowance_for(_status(good=9_900, total=10_000, target=0.999), 0.5)
    assert over.bad_events == 0 and over.exceeded(1)
    with pytest.raises(ValueError):
        allowance_for(st, 0)


def test_experiment_section_validation() -> None:
    assert decode_slo_files({"slo_files": ["a.yaml"], "allowance": {"budget_share": 0.5}}) == SLOFiles(
        files=("a.yaml",), budget_share=0.5
    )
    assert decode_slo_files({"title": "no SLO files"}) is None
    problems = decode_slo_files({"slo_files": ["a.yaml"], "allowance": {"budget_share": 5}})
    assert isinstance(problems, list)
    (p,) = problems
    assert p.path == "allowance.budget_share" and "<= 1" in p.message
    (p,) = decode_slo_files({"slo_files": "a.yaml"})  # type: ignore[misc]
    assert p.path == "slo_files"
    (p,) = decode_slo_files({"slo_files": ["a"], "budget_gate": {"override": "yes"}})  # type: ignore[misc]
    assert p.path == "budget_gate.override"
    (p,) = decode_slo_files({"prometheus": "http://127.0.0.1:9090"})  # type: ignore[misc]
    assert p.path == "prometheus" and "only with slo_files" in p.message
