"""Each alert pair fires and clears when it should, for a 30-day and a 1-day SLO, in both
rule shapes (chaoslab's and Sloth's), proven by the real ``promtool test rules``.

Scenarios: ``http_requests_total{code="200"}`` grows by 1000 a minute, the ``code="500"``
series by ``e`` a minute: an error ratio of ``e / (1000 + e)``, a burn rate of that over
the budget 0.001 (objective 99.9 %). Prometheus scrapes every minute (the default), so
the 1-day SLO's shortest windows (10 s, 1 m, 2 m scaled) are widened to 4 m; its pairs
are then page 7.2× (4m/4m), page 6× (12m/4m), ticket 3× (48m/4m), ticket 1× (2h24m/12m).
The comments give the burn rates each expectation relies on.

Pairs are named by severity and Sloth's speed: page quick (1h/5m for 30 days), page slow
(6h/30m), ticket quick (1d/2h), ticket slow (3d/6h).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaoslab.model.openslo import load_slo_files
from chaoslab.sli.budget import alert_pairs
from chaoslab.sli.prometheus import prom_duration
from chaoslab.sli.rules import ALERT, generate_rules, sloth_id
from tests.conftest import require
from tests.integration import promfixture

pytestmark = pytest.mark.slow  # promtool evaluates days of series, minute by minute

SLO = """slos:
  - name: api
    service: shop
    objective: 0.999
    window: {window}
    ratio:
      bad: 'http_requests_total{{code=~"5.."}}'
      total: 'http_requests_total'
    runbook: https://runbooks.example/api
"""
PQ, PS, TQ, TS = ("page", "quick"), ("page", "slow"), ("ticket", "quick"), ("ticket", "slow")
Check = tuple[str, list[tuple[str, str]]]

# 30 days (windows and factors of the workbook: 14.4, 6, 3, 1).
SCENARIOS_30D: list[tuple[str, list[Check]]] = [
    # No errors at all (and no 5xx series: the bad side must not vanish into "no data").
    ("", [("10m", []), ("3h", []), ("1500m", [])]),
    # Page quick: e = 25 (burn 24.4) during minutes 600–660 after 10 h of health.
    (
        "0x600 25+25x59 1500x800",
        [
            ("630m", [TS]),  # 30 min in: burn1h 12.3 < 14.4; burn3d 1.2 > 1 and 6h 2.1 > 1
            ("650m", [PQ, TS]),  # burn1h 20.4 and burn5m 24.4 > 14.4; 6h 3.5 < 6; 1d 1.9 < 3
            ("670m", [TS]),  # 10 min after the errors stopped: burn5m 0 clears the page
        ],
    ),
    # Page slow: e = 9 (burn 8.9, under 14.4) from minute 1000 on.
    (
        "0x1000 9+9x499",
        [
            ("1220m", [TS]),  # burn6h 5.5 < 6; burn1d 1.6 < 3
            ("1300m", [PS, TS]),  # burn6h 7.4 and burn30m 8.9 > 6; burn1d 2.1 < 3
        ],
    ),
    # Ticket quick: e = 4 (burn 4.0) from the start until minute 600.
    (
        "0+4x600 2400x900",
        [
            ("180m", [TQ, TS]),  # burn1d = burn2h = 4.0 > 3; burn6h 4.0 < 6
            ("725m", [TS]),  # burn2h 0 clears ticket quick; burn6h 2.6 > 1 keeps ticket slow
        ],
    ),
    # Ticket slow alone: burn 2.0 (under 3); burn 0.5 fires nothing.
    ("0+2x1500", [("400m", [TS])]),
    ("0+0.5x1500", [("400m", []), ("1400m", [])]),
]

# 1 day at a 1m scrape: page quick 7.2× (4m/4m), page slow 6× (12m/4m), ticket quick 3×
# (48m/4m), ticket slow 1× (2h24m/12m).
SCENARIOS_1D: list[tuple[str, list[Check]]] = [
    ("", [("100m", []), ("2000m", [])]),
    # Page quick: e = 10 (burn 9.9) for 5 minutes from minute 600.
    (
        "0x600 10+10x4 50x2400",
        [
            ("605m", [PQ]),  # burn4m 9.9 > 7.2; burn12m ≈ 4.5 < 6; burn48m ≈ 1 < 3; 2h24m 0.35 < 1
            ("611m", []),  # burn4m 0: the page clears
        ],
    ),
    # Page slow: e = 7 (burn 6.95: above 6, under 7.2) for 16 minutes from minute 1000.
    (
        "0x1000 7+7x15 112x2000",
        [
            ("1016m", [PS]),  # burn12m = burn4m = 6.95 > 6; burn48m 2.4 < 3; 2h24m 0.79 < 1
            ("1021m", []),  # burn4m 0 clears the page; ticket slow's 2h24m 0.79 < 1
        ],
    ),
    # Ticket quick and slow: e = 4 (burn 3.98) for 50 minutes from minute 1500.
    (
        "0x1500 4+4x49 200x2000",
        [
            ("1550m", [TQ, TS]),  # burn48m 3.98 > 3 (4m too); 2h24m 1.39 > 1 and 12m 3.98
            ("1556m", [TS]),  # burn4m 0 clears ticket quick; burn12m 1.8 and 2h24m 1.39 > 1 keep slow
            ("1566m", []),  # burn12m 0 clears ticket slow
        ],
    ),
    # Ticket slow alone: e = 2 (burn 1.99, under 3) for 80 minutes from minute 2000.
    (
        "0x2000 2+2x79 160x2000",
        [
            ("2060m", []),  # 60 min in: burn2h24m 0.84 < 1
            ("2080m", [TS]),  # burn2h24m 1.11 > 1 and burn12m 1.99 > 1
            ("2093m", []),  # burn12m 0 clears it
        ],
    ),
]


def _rules(tmp_path: Path, window: str, fmt: str) -> tuple[Path, dict[str, Any]]:
    slo_file = tmp_path / f"api-{window}.yaml"
    slo_file.write_text(SLO.format(window=window), encoding="utf-8")
    (slo,) = load_slo_files([slo_file])
    ruleset = generate_rules([slo], scrape_interval_s=60.0, format=fmt)
    doc = yaml.safe_load(ruleset.to_yaml())
    for group in doc["groups"]:
        for rule in group["rules"]:
            # promtool compares annotations exactly and they template $value: the
            # scenarios check the alerts' labels and leave annotations out.
            rule.pop("annotations", None)
    path = tmp_path / f"rules-{window}-{fmt}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, {"slo": slo}


def _expected(fmt: str, ctx: dict[str, Any], firing: list[tuple[str, str]]) -> list[dict[str, Any]]:
    slo = ctx["slo"]
    if fmt == "sloth":
        ident = {"sloth_id": sloth_id(slo), "sloth_service": "shop", "sloth_slo": "api"}
        severities = sorted({sev for sev, _ in firing})
        return [{"exp_labels": {**ident, "severity": s, "sloth_severity": s}} for s in severities]
    out = []
    pairs = {(p.severity, p.speed): p for p in alert_pairs(slo.window.seconds, 60.0)}
    for key in firing:
        p = pairs[key]
        out.append(
            {
                "exp_labels": {
                    "slo": "api",
                    "service": "shop",
                    "severity": p.severity,
                    "long_window": prom_duration(p.long_s),
                    "short_window": prom_duration(p.short_s),
                    "burn_factor": f"{p.factor:g}",
                }
            }
        )
    return out


def _run(
    tmp_path: Path, window: str, fmt: str, scenarios: list[tuple[str, list[Check]]], minutes: int
) -> str:
    rules, ctx = _rules(tmp_path, window, fmt)
    tests = []
    for errors, checks in scenarios:
        series = [{"series": 'http_requests_total{code="200"}', "values": f"0+1000x{minutes}"}]
        if errors:
            series.append({"series": 'http_requests_total{code="500"}', "values": errors})
        tests.append(
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": ALERT, "exp_alerts": _expected(fmt, ctx, firing)}
                    for at, firing in checks
                ],
            }
        )
    test_file = tmp_path / f"test-{window}-{fmt}.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}, sort_keys=False
        ),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=300
    )
    return proc.stdout + proc.stderr if proc.returncode else "SUCCESS"


@pytest.mark.parametrize("fmt", ["chaoslab", "sloth"])
def test_30_day_slo_pairs_fire_and_clear(tmp_path: Path, fmt: str) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    assert _run(tmp_path, "30d", fmt, SCENARIOS_30D, 1500) == "SUCCESS"


@pytest.mark.parametrize("fmt", ["chaoslab", "sloth"])
def test_1_day_slo_pairs_fire_and_clear_at_a_1m_scrape(tmp_path: Path, fmt: str) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    assert _run(tmp_path, "1d", fmt, SCENARIOS_1D, 2500) == "SUCCESS"


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The harness can fail: a page claimed where there is none (1-day SLO) is caught."""
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    wrong = [("0x2000 2+2x79 160x2000", [("2080m", [PQ])])]
    for fmt in ("chaoslab", "sloth"):
        assert _run(tmp_path, "1d", fmt, wrong, 2500) != "SUCCESS"


def test_the_old_scaling_could_never_page_at_a_1m_scrape(tmp_path: Path) -> None:
    """Why the windows widen: a 10 s window at a 1 m scrape holds at most one sample, so
    ``rate`` over it is empty and a page that needs it never fires, whatever the errors."""
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    rules = tmp_path / "old.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "old",
                        "rules": [
                            {"record": "ratio10s", "expr": 'sum(rate(http_requests_total{code="500"}[10s]))'},
                            {"alert": "Never", "expr": "ratio10s > 0"},
                        ],
                    }
                ]
            }
        )
    )
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": 'http_requests_total{code="500"}', "values": "0+1000x100"}],
                "alert_rule_test": [{"eval_time": "50m", "alertname": "Never", "exp_alerts": []}],
            }
        ],
    }
    test_file = tmp_path / "old_test.yaml"
    test_file.write_text(yaml.safe_dump(test))
    proc = subprocess.run(
        [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # no alert, with 1000 errors a minute


# A Sloth AlertWindows file for 7-day SLOs (the shape of Sloth's examples/windows/7d.yaml):
# factors 8% × 168h / 1h = 13.44, 12.5% × 168h / 6h = 3.5, 20% × 168h / 24h = 1.4, 42% × 168h / 72h = 0.98.
WINDOWS_7D = """apiVersion: sloth.slok.dev/v1
kind: AlertWindows
spec:
  sloPeriod: 7d
  page:
    quick: {errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h}
    slow: {errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h}
  ticket:
    quick: {errorBudgetPercent: 20, shortWindow: 2h, longWindow: 1d}
    slow: {errorBudgetPercent: 42, shortWindow: 6h, longWindow: 3d}
"""


def test_sloth_alert_windows_file_sets_a_7_day_slos_pairs(tmp_path: Path) -> None:
    from chaoslab.sli.alertwindows import load_alert_windows

    path = tmp_path / "7d.yaml"
    path.write_text(WINDOWS_7D)
    custom = load_alert_windows([path])
    pairs = alert_pairs(7 * 86400, 60.0, custom)
    assert [(p.severity, p.speed, p.factor, p.long_s, p.short_s) for p in pairs] == [
        ("page", "quick", 13.44, 3600, 300),
        ("page", "slow", 3.5, 21600, 1800),
        ("ticket", "quick", 1.4, 86400, 7200),
        ("ticket", "slow", 0.98, 259200, 21600),
    ]
    # Without the file a 7-day SLO's windows scale with its period instead (1h → 14m).
    assert alert_pairs(7 * 86400, 60.0)[0].long_s == 840


def test_a_broken_alert_windows_file_names_file_and_field(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from chaoslab.cli import main

    slo = tmp_path / "api.yaml"
    slo.write_text(SLO.format(window="7d"))
    broken = tmp_path / "w.yaml"
    broken.write_text(WINDOWS_7D.replace("errorBudgetPercent: 42", "errorBudgetPercent: 420"))
    result = CliRunner().invoke(
        main, ["slo", "rules", str(slo), "--windows", str(broken)], prog_name="chaoslab"
    )
    assert result.exit_code == 2
    assert (
        f"{broken}:10 at spec.ticket.slow.errorBudgetPercent: expected a percentage in (0, 100], got 420"
        in result.stderr
    )


def test_7_day_slo_with_sloth_windows_pages_at_the_right_minute(tmp_path: Path) -> None:
    """Sloth shape, the 7d windows file: e = 15 (burn 14.8 > 13.44) for an hour from minute 4400
    (after more than 3 days of health, so the 3-day ticket window holds real history)."""
    require(promfixture.available(), "Debian package 'prometheus' (promtool)")
    from chaoslab.sli.alertwindows import load_alert_windows

    windows = tmp_path / "7d.yaml"
    windows.write_text(WINDOWS_7D)
    slo_file = tmp_path / "api.yaml"
    slo_file.write_text(SLO.format(window="7d"))
    (slo,) = load_slo_files([slo_file])
    ruleset = generate_rules([slo], format="sloth", windows=load_alert_windows([windows]))
    assert not [w for w in ruleset.warnings if "widened" in w]
    doc = yaml.safe_load(ruleset.to_yaml())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))
    page = [
        {
            "exp_labels": {
                "sloth_id": "shop-api",
                "sloth_service": "shop",
                "sloth_slo": "api",
                "severity": "page",
                "sloth_severity": "page",
            }
        }
    ]
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'http_requests_total{code="200"}', "values": "0+1000x4600"},
                    {"series": 'http_requests_total{code="500"}', "values": "0x4400 15+15x59 900x200"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4440m", "alertname": ALERT, "exp_alerts": []},  # burn1h 9.9 < 13.44
                    # burn1h = burn5m = 14.8 > 13.44; 6h 2.5 < 3.5; 1d 0.62 < 1.4; 3d 0.21 < 0.98
                    {"eval_time": "4460m", "alertname": ALERT, "exp_alerts": page},
                    {"eval_time": "4470m", "alertname": ALERT, "exp_alerts": []},  # burn5m 0 clears it
                ],
            }
        ],
    }
    test_file = tmp_path / "t.yaml"
    test_file.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run(
        [promfixture.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
