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

from chaoslab.model.openslo import load_slo_files
from chaoslab.sli.budget import alert_pairs, burn_windows
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
    ruleset = generate_rules(load_slo_files([*files, slo_file]))
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
    ("window_s", "expected"),
    [
        (
            30 * 86400,
            {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200},
        ),
        (86400, {"5m": 10, "30m": 60, "1h": 120, "2h": 240, "6h": 720, "1d": 2880, "3d": 8640}),
        (
            28 * 86400,
            {"5m": 280, "30m": 1680, "1h": 3360, "2h": 6720, "6h": 20160, "1d": 80640, "3d": 241920},
        ),
    ],
)
def test_windows_scale_with_the_slo_window_and_factors_stay(
    window_s: float, expected: dict[str, float]
) -> None:
    assert dict(burn_windows(window_s)) == expected
    pairs = alert_pairs(window_s)
    assert [(p.severity, p.factor) for p in pairs] == [
        ("page", 14.4),
        ("page", 6.0),
        ("ticket", 3.0),
        ("ticket", 1.0),
    ]
    assert [round(p.budget_share, 4) for p in pairs] == [0.02, 0.05, 0.1, 0.1]  # the workbook's budget shares
    assert [(p.long_s, p.short_s) for p in pairs] == [
        (expected["1h"], expected["5m"]),
        (expected["6h"], expected["30m"]),
        (expected["1d"], expected["2h"]),
        (expected["3d"], expected["6h"]),
    ]


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
