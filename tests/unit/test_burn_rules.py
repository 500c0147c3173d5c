"""Generated burn-rate rules: promtool accepts them, and promtool's rule unit tests on
synthetic series show each alert pair firing and not firing when it should.

SLO for the promtool scenarios: 99.9% over 30 d (budget 0.001), so the windows are the
workbook's own. ``http_requests_total{code="200"}`` grows by 1000 a minute; the
``code="500"`` series adds ``e`` a minute, an error ratio of ``e / (1000 + e)``, a burn
rate of that over 0.001. Each expectation below states the burn rates it relies on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.model.openslo import load_slo_files
from chaoslab.sli.budget import alert_pairs, burn_windows, widened_windows
from chaoslab.sli.rules import ALERT, error_ratio_expr, generate_rules, le_spellings
from tests.conftest import require
from tests.integration import promfixture

REPO = Path(__file__).resolve().parents[2]
SLO_30D = """slos:
  - name: api
    service: shop
    objective: 0.999
    window: 30d
    ratio:
      bad: 'http_requests_total{code=~"5.."}'
      total: 'http_requests_total'
    runbook: https://runbooks.example/api
"""
PAIRS = {
    ("page", "1h", "5m"): "14.4",
    ("page", "6h", "30m"): "6",
    ("ticket", "1d", "2h"): "3",
    ("ticket", "3d", "6h"): "1",
}


def _rules_file(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    slo_file = tmp_path / "api.yaml"
    slo_file.write_text(SLO_30D, encoding="utf-8")
    ruleset = generate_rules(load_slo_files([slo_file]))
    doc = yaml.safe_load(ruleset.to_yaml())
    summaries: dict[str, Any] = {}
    for rule in doc["groups"][0]["rules"]:
        if "alert" in rule:
            # The description templates $value; promtool compares annotations exactly, so
            # the scenarios check labels, summary and runbook and leave the value out.
            del rule["annotations"]["description"]
            key = (rule["labels"]["severity"], rule["labels"]["long_window"], rule["labels"]["short_window"])
            summaries[str(key)] = rule["annotations"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, summaries


def _alert(summaries: dict[str, Any], severity: str, long: str, short: str) -> dict[str, Any]:
    return {
        "exp_labels": {
            "slo": "api",
            "service": "shop",
            "severity": severity,
            "long_window": long,
            "short_window": short,
            "burn_factor": PAIRS[(severity, long, short)],
        },
        "exp_annotations": summaries[str((severity, long, short))],
    }


def _case(
    errors: str, checks: list[tuple[str, list[tuple[str, str, str]]]], summaries: dict[str, Any]
) -> dict[str, Any]:
    series = [{"series": 'http_requests_total{code="200"}', "values": "0+1000x1500"}]
    if errors:
        series.append({"series": 'http_requests_total{code="500"}', "values": errors})
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": ALERT, "exp_alerts": [_alert(summaries, *p) for p in firing]}
            for at, firing in checks
        ],
    }


def test_generated_rules_pass_promtool_check(tmp_path: Path) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    files = [REPO / "experiments/slos/lab-availability.yaml", REPO / "experiments/slos/lab-latency.yaml"]
    slo_file = tmp_path / "api.yaml"
    slo_file.write_text(SLO_30D, encoding="utf-8")
    # The lab's Prometheus scrapes every second: the 1-day SLOs' windows need no widening.
    ruleset = generate_rules(load_slo_files([*files, slo_file]), scrape_interval_s=1.0)
    assert not ruleset.skipped and not ruleset.warnings
    out = tmp_path / "rules.yaml"
    out.write_text(ruleset.to_yaml(), encoding="utf-8")
    proc = subprocess.run([promfixture.PROMTOOL, "check", "rules", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 7 windows + the OpenSLO condition's 10m, 4 pairs + 1 condition; 7 + 4 for the others.
    assert "SUCCESS: 35 rules found" in proc.stdout
    alerts = [r for g in ruleset.groups for r in g["rules"] if "alert" in r]
    assert all(r["annotations"]["runbook_url"].startswith("https://") for r in alerts)
    cond = [r for r in alerts if r["alert"] == "SLOBurnRateCondition"]
    assert len(cond) == 1 and cond[0]["for"] == "1m" and "ratio_rate10m" in cond[0]["expr"]


def test_each_alert_pair_fires_and_does_not_fire_when_it_should(tmp_path: Path) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    rules, s = _rules_file(tmp_path)
    tests = [
        # No errors at all (and no 5xx series: the bad side must not vanish into "no data").
        _case("", [("10m", []), ("3h", []), ("1500m", [])], s),
        # Page 1h/5m: e = 25 (burn 24.4) during minutes 600–660 after 10 h of health.
        _case(
            "0x600 25+25x59 1500x800",
            [
                # 30 min in: burn1h 12.3 < 14.4; burn6h 2.1; burn1d 1.2 < 3; burn3d 1.2 > 1 and 6h 2.1 > 1.
                ("630m", [("ticket", "3d", "6h")]),
                # 50 min in: burn1h 20.4 and burn5m 24.4 > 14.4 → page; 6h 3.5 < 6; 1d 1.9 < 3.
                ("650m", [("page", "1h", "5m"), ("ticket", "3d", "6h")]),
                # 10 min after the errors stopped: burn1h 24.4 but burn5m 0 → the page resets.
                ("670m", [("ticket", "3d", "6h")]),
            ],
            s,
        ),
        # Page 6h/30m: e = 9 (burn 8.9, under 14.4) from minute 1000 on.
        _case(
            "0x1000 9+9x499",
            [
                # 220 min in: burn6h 5.5 < 6 → no page; burn1d 1.6 < 3.
                ("1220m", [("ticket", "3d", "6h")]),
                # 300 min in: burn6h 7.4 and burn30m 8.9 > 6 → page; burn1d 2.1 < 3.
                ("1300m", [("page", "6h", "30m"), ("ticket", "3d", "6h")]),
            ],
            s,
        ),
        # Ticket 1d/2h: e = 4 (burn 4.0) from the start until minute 600.
        _case(
            "0+4x600 2400x900",
            [
                # burn1d = burn2h = 4.0 > 3; burn6h 4.0 < 6 → no page.
                ("180m", [("ticket", "1d", "2h"), ("ticket", "3d", "6h")]),
                # 125 min after the errors stopped: burn2h 0 resets 1d/2h (burn1d still 3.3);
                # burn6h 2.6 > 1 keeps 3d/6h.
                ("725m", [("ticket", "3d", "6h")]),
            ],
            s,
        ),
        # Ticket 3d/6h alone: burn 2.0 (under 3); and burn 0.5 fires nothing.
        _case("0+2x1500", [("400m", [("ticket", "3d", "6h")])], s),
        _case("0+0.5x1500", [("400m", []), ("1400m", [])], s),
    ]
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}, sort_keys=False
        ),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_broken_expectation_makes_promtool_fail(tmp_path: Path) -> None:
    """The promtool harness can fail: claiming a page where there is none is caught."""
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    rules, s = _rules_file(tmp_path)
    test_file = tmp_path / "rules_test.yaml"
    case = _case("0+2x1500", [("400m", [("page", "1h", "5m")])], s)
    test_file.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [case]}),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode != 0


@pytest.mark.parametrize(
    ("window_s", "scrape_s", "expected", "factors"),
    [
        # 30 and 28 days: the workbook's windows as they are (Sloth's built-in windows);
        # the factor follows the budget share: share × period / long window, as Sloth has it.
        (
            30 * 86400,
            60,
            {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200},
            [14.4, 6.0, 3.0, 1.0],
        ),
        (
            28 * 86400,
            60,
            {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200},
            [13.44, 5.6, 2.8, 0.933333],
        ),
        # 1 day, scraped every second: scaled windows, all at least 4 scrapes long.
        (
            86400,
            1,
            {"5m": 10, "30m": 60, "1h": 120, "2h": 240, "6h": 720, "1d": 2880, "3d": 8640},
            [14.4, 6.0, 3.0, 1.0],
        ),
        # 1 day at Prometheus's default 1m scrape: 10 s, 1 m and 2 m are widened to 4 m,
        # and the page pair whose long window grew gets the factor that keeps its 2% share.
        (
            86400,
            60,
            {"5m": 240, "30m": 240, "1h": 240, "2h": 240, "6h": 720, "1d": 2880, "3d": 8640},
            [7.2, 6.0, 3.0, 1.0],
        ),
    ],
)
def test_windows_and_factors(
    window_s: float, scrape_s: float, expected: dict[str, float], factors: list[float]
) -> None:
    assert dict(burn_windows(window_s, scrape_s)) == expected
    pairs = alert_pairs(window_s, scrape_s)
    assert [(p.severity, p.factor) for p in pairs] == list(
        zip(["page", "page", "ticket", "ticket"], factors, strict=True)
    )
    assert [p.budget_share for p in pairs] == [0.02, 0.05, 0.1, 0.1]  # the workbook's budget shares
    assert [(p.long_s, p.short_s) for p in pairs] == [
        (expected["1h"], expected["5m"]),
        (expected["6h"], expected["30m"]),
        (expected["1d"], expected["2h"]),
        (expected["3d"], expected["6h"]),
    ]
    # No window a page depends on is shorter than four scrapes.
    assert min(expected.values()) >= 4 * scrape_s


def test_widened_windows_are_said() -> None:
    assert widened_windows(30 * 86400) == ()
    lines = widened_windows(86400, 60)
    assert len(lines) == 3
    assert (
        lines[0]
        == "the 5m window (scaled to 10s for a 1d SLO) is shorter than 4 scrapes at 1m: widened to 4m"
    )


def test_error_ratio_expressions(tmp_path: Path) -> None:
    slo_file = tmp_path / "api.yaml"
    slo_file.write_text(SLO_30D, encoding="utf-8")
    (api,) = load_slo_files([slo_file])
    assert error_ratio_expr(api, "5m") == (
        '(sum(rate(http_requests_total{code=~"5.."}[5m])) or sum(rate(http_requests_total[5m])) * 0)'
        " / sum(rate(http_requests_total[5m]))"
    )
    assert le_spellings(1.0) == ["1.0", "1"]
    assert le_spellings(0.25) == ["0.25"]
    (lat,) = load_slo_files([REPO / "experiments/slos/lab-latency.yaml"])
    assert 'le=~"0\\\\.1"' in error_ratio_expr(lat, "1m")


SLOTH_RECORDS = {
    "slo:objective:ratio",
    "slo:error_budget:ratio",
    "slo:time_period:days",
    "slo:current_burn_rate:ratio",
    "slo:period_burn_rate:ratio",
    "slo:period_error_budget_remaining:ratio",
    "sloth_slo_info",
}


def test_sloth_shape_passes_promtool_check_and_has_sloths_rules(tmp_path: Path) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    slo_file = tmp_path / "api.yaml"
    slo_file.write_text(SLO_30D, encoding="utf-8")
    files = [
        REPO / "experiments/slos/lab-availability.yaml",
        REPO / "experiments/slos/lab-latency.yaml",
        slo_file,
    ]
    ruleset = generate_rules(load_slo_files(files), format="sloth")
    out = tmp_path / "sloth.yaml"
    out.write_text(ruleset.to_yaml(), encoding="utf-8")
    proc = subprocess.run([promfixture.PROMTOOL, "check", "rules", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [g["name"] for g in ruleset.groups]
    assert names[-3:] == [
        "sloth-slo-sli-recordings-shop-api",
        "sloth-slo-meta-recordings-shop-api",
        "sloth-slo-alerts-shop-api",
    ]
    groups = {g["name"]: g["rules"] for g in ruleset.groups}
    sli = groups["sloth-slo-sli-recordings-shop-api"]
    assert [r["record"] for r in sli] == [
        f"slo:sli_error:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
    ]
    assert all(r["labels"]["sloth_id"] == "shop-api" and r["labels"]["sloth_window"] for r in sli)
    assert "sum_over_time(slo:sli_error:ratio_rate5m{" in sli[-1]["expr"]
    meta = {r["record"]: r for r in groups["sloth-slo-meta-recordings-shop-api"]}
    assert set(meta) == SLOTH_RECORDS
    assert meta["slo:objective:ratio"]["expr"] == "vector(0.999)"
    assert meta["sloth_slo_info"]["labels"]["sloth_objective"] == "99.9"
    alerts = groups["sloth-slo-alerts-shop-api"]
    assert [(a["alert"], a["labels"]["sloth_severity"]) for a in alerts] == [
        (ALERT, "page"),
        (ALERT, "ticket"),
    ]
    page = alerts[0]["expr"]
    assert "(14.4 * 0.001)" in page and "(6 * 0.001)" in page and "\nor\n" in page
    assert all(a["annotations"]["runbook_url"] == "https://runbooks.example/api" for a in alerts)


def _condition_slo(tmp_path: Path, op: str) -> Path:
    path = tmp_path / f"cond-{op}.yaml"
    path.write_text(
        f"""apiVersion: openslo/v1
kind: SLO
metadata: {{name: api}}
spec:
  service: shop
  indicator:
    metadata: {{name: api-errors}}
    spec:
      ratioMetric:
        counter: true
        bad: {{metricSource: {{type: Prometheus, spec: {{query: 'http_requests_total{{code=~"5.."}}'}}}}}}
        total: {{metricSource: {{type: Prometheus, spec: {{query: http_requests_total}}}}}}
  timeWindow: [{{duration: 30d, isRolling: true}}]
  budgetingMethod: Occurrences
  objectives: [{{target: 0.999}}]
  alertPolicies:
    - kind: AlertPolicy
      metadata: {{name: burn}}
      spec:
        alertWhenBreaching: true
        conditions:
          - kind: AlertCondition
            metadata: {{name: burn-{op}}}
            spec:
              severity: page
              condition: {{kind: burnrate, op: {op}, threshold: 2, lookbackWindow: 1h, alertAfter: 5m}}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(("op", "sign"), [("lte", "<="), ("lt", "<"), ("gte", ">="), ("gt", ">")])
def test_alert_condition_op_is_honoured(tmp_path: Path, op: str, sign: str) -> None:
    ruleset = generate_rules(load_slo_files([_condition_slo(tmp_path, op)]))
    (cond,) = [r for g in ruleset.groups for r in g["rules"] if r.get("alert") == "SLOBurnRateCondition"]
    assert cond["expr"] == f'slo:sli_error:ratio_rate1h{{slo="api"}} {sign} (2 * 0.001)'
    assert cond["for"] == "5m" and cond["labels"]["op"] == op


def test_an_lte_condition_fires_when_the_burn_rate_is_low(tmp_path: Path) -> None:
    """promtool: op lte with threshold 2 fires on a healthy service (burn 0 <= 2), as written."""
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(generate_rules(load_slo_files([_condition_slo(tmp_path, "lte")])).to_yaml())
    gt_rules = tmp_path / "gt.yaml"
    gt_rules.write_text(generate_rules(load_slo_files([_condition_slo(tmp_path, "gt")])).to_yaml())
    series = [
        {"series": 'http_requests_total{code="200"}', "values": "0+1000x200"},
        {"series": 'http_requests_total{code="500"}', "values": "0x200"},
    ]
    for path, firing in ((rules, True), (gt_rules, False)):
        exp = [
            {
                "exp_labels": {
                    "slo": "api",
                    "service": "shop",
                    "severity": "page",
                    "condition": "burn-lte",
                    "window": "1h",
                    "op": "lte",
                }
            }
        ]
        test = {
            "rule_files": [str(path)],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [
                        {
                            "eval_time": "120m",
                            "alertname": "SLOBurnRateCondition",
                            "exp_alerts": exp if firing else [],
                        }
                    ],
                }
            ],
        }
        doc = yaml.safe_load(path.read_text())
        for g in doc["groups"]:
            for r in g["rules"]:
                r.pop("annotations", None)
        path.write_text(yaml.safe_dump(doc))
        test_file = tmp_path / "t.yaml"
        test_file.write_text(yaml.safe_dump(test))
        proc = subprocess.run(
            [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_command_never_exits_0_with_no_groups(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from chaoslab.cli import main

    only_condition = tmp_path / "cond.yaml"
    only_condition.write_text(
        "apiVersion: openslo/v1\nkind: AlertCondition\nmetadata: {name: c}\nspec:\n  severity: page\n"
        "  condition: {kind: burnrate, op: gt, threshold: 2, lookbackWindow: 1h}\n"
    )
    slices = tmp_path / "slices.yaml"
    slices.write_text(
        "slos:\n  - name: s\n    objective: 0.99\n    window: 30d\n    budgeting: timeslices\n"
        "    timeslice: {window: 1m, target: 0.9}\n    ratio: {good: ok_total, total: all_total}\n"
    )
    runner = CliRunner()
    for path, why in (
        (only_condition, "the files hold no SLO"),
        (slices, "s: Timeslices budgeting (burn-rate alerts count events, not time slices)"),
    ):
        out = tmp_path / "rules.yaml"
        result = runner.invoke(
            main, ["slo", "rules", str(path), "--out-file", str(out)], prog_name="chaoslab"
        )
        assert result.exit_code == 2, result.output
        assert f"error: no rules generated: {why}" in result.stderr
        assert "groups: []" not in result.stdout and not out.exists()


def test_status_with_no_slo_in_the_files_is_not_a_silent_success(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from chaoslab.cli import main

    only_condition = tmp_path / "cond.yaml"
    only_condition.write_text(
        "apiVersion: openslo/v1\nkind: AlertCondition\nmetadata: {name: c}\nspec:\n  severity: page\n"
        "  condition: {kind: burnrate, op: gt, threshold: 2, lookbackWindow: 1h}\n"
    )
    result = CliRunner().invoke(
        main,
        ["slo", "status", str(only_condition), "--prometheus", "http://127.0.0.1:9"],
        prog_name="chaoslab",
    )
    assert result.exit_code == 2 and "the files hold no SLO" in result.stderr


@settings(max_examples=300, deadline=None)
@given(
    period_s=st.integers(min_value=3600, max_value=400 * 86400).map(float),
    scrape_s=st.sampled_from([1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0]),
)
def test_every_pair_can_fire_and_keeps_its_budget_share(period_s: float, scrape_s: float) -> None:
    """Any SLO period, any scrape interval: no window under four scrapes, short ≤ long, and
    each factor is the budget share the pair stands for (share × period / long window)."""
    pairs = alert_pairs(period_s, scrape_s)
    for p in pairs:
        assert p.short_s >= 4 * scrape_s and p.long_s >= 4 * scrape_s
        assert p.short_s <= p.long_s
        assert p.factor == pytest.approx(p.budget_share * period_s / p.long_s, rel=1e-5, abs=1e-6)
    assert [p.budget_share for p in pairs] == [0.02, 0.05, 0.1, 0.1]
    assert all(s >= 4 * scrape_s for _, s in burn_windows(period_s, scrape_s))
    # What was widened is said, and only that.
    widened = widened_windows(period_s, scrape_s)
    assert len(widened) == sum(1 for _, s in burn_windows(period_s, 0.0) if s < 4 * scrape_s)
