"""Scenario files: the shipped ones load; mistakes are reported with file, line and field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaoslab.errors import InvalidInput
from chaoslab.scheduler.checks import ErrorBudgetCheck, LedgerClearCheck, LocksFreeCheck, NotHaltedCheck
from chaoslab.scheduler.monkey import MonkeyTrigger
from chaoslab.scheduler.scenario import load_scenario, load_scenarios
from chaoslab.scheduler.triggers import CronTrigger

REPO = Path(__file__).resolve().parents[2]


def test_shipped_scenarios_load() -> None:
    scenarios = {s.name: s for s in load_scenarios([REPO / "scenarios"])}
    gameday = scenarios["lab-weekday-gameday"]
    assert isinstance(gameday.trigger, CronTrigger) and gameday.tz.key == "Europe/Berlin"
    assert [s.experiment.name for s in gameday.steps] == ["lab-kill-replica.yaml", "lab-slow-replica.yaml"]
    assert all(s.experiment.is_file() for s in gameday.steps)
    assert gameday.misfire.policy == "run-once" and gameday.misfire.grace_s == 1800
    assert gameday.jitter_s == 600
    # Year-end freeze: 2026-12-24 refused, the window alone would allow it (Thursday 11:00).
    why = gameday.calendar.refusal(datetime(2026, 12, 24, 10, 0, tzinfo=UTC))
    assert why is not None and "freeze" in why
    monkey = scenarios["lab-monkey"]
    assert isinstance(monkey.trigger, MonkeyTrigger) and monkey.monkey is not None
    assert monkey.monkey.leashed
    assert monkey.lock_targets() == ("lab:replica-1", "lab:replica-2", "lab:replica-3")
    kinds = [type(g) for g in gameday.gates()]
    assert kinds[:3] == [NotHaltedCheck, LedgerClearCheck, LocksFreeCheck]


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    (tmp_path / "exp.yaml").write_text("title: t\ndescription: d\nmethod: []\n")
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(InvalidInput) as info:
        load_scenario(path)
    out = {}
    for p in info.value.problems:
        assert p.file == str(path)
        out[p.path] = f"{p.line}: {p.message}"
    return out


def test_every_problem_is_named_with_its_field_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """name: Bad Name
timezone: Mars/Olympus
trigger: {cron: "99 * * * *", jitter: soon}
windows:
  - {days: funday, start: "25:00", end: "16:00"}
blackouts:
  - {from: 2025-12-20, to: 2025-12-01}
misfire: {policy: later}
gates:
  - {type: error-budget, slo: [missing.yaml], min_remaining: 150%}
  - {type: astrology}
notify:
  - {webhook: "ftp://x"}
steps:
  - {experiment: nope.yaml}
  - {experiment: exp.yaml, continue_on: [maybe], extra: 1}
colour: blue
""",
    )
    problems = _problems(path)
    expected = {
        "name": 1,
        "timezone": 2,
        "trigger.jitter": 3,
        "trigger.cron": 3,
        "windows[0].days": 5,
        "windows[0].start": 5,
        "blackouts[0].to": 7,
        "misfire.policy": 8,
        "gates[0].slo[0]": 10,
        "gates[0].min_remaining": 10,
        "gates[1].type": 11,
        "notify[0].webhook": 13,
        "steps[0].experiment": 15,
        "steps[1].continue_on": 16,
        "steps[1].extra": 16,
        "colour": 17,
    }
    for field, line in expected.items():
        assert field in problems, (field, problems)
        assert problems[field].startswith(f"{line}:"), (field, problems[field])
    assert "no experiment file nope.yaml" in problems["steps[0].experiment"]


def test_trigger_and_monkey_rules(tmp_path: Path) -> None:
    both = _write(tmp_path, 'name: x\ntrigger: {cron: "* * * * *", interval: 1m}\nsteps: [exp.yaml]\n')
    assert "trigger" in _problems(both)
    jitter = _write(tmp_path, "name: x\ntrigger: {interval: 1m, jitter: 2m}\nsteps: [exp.yaml]\n", "j.yaml")
    assert "trigger.jitter" in _problems(jitter)
    monkey = _write(
        tmp_path,
        """name: m
trigger: {interval: 1m}
monkey:
  targets: [{target: "lab:replica-1", labels: {chaos: opt-in}}]
  select: {chaos: nobody}
  mean_time_between_kills: 5m
  min_gap: 4m
""",
        "m.yaml",
    )
    problems = _problems(monkey)
    assert "trigger" in problems
    assert "twice min_gap" in problems["monkey.mean_time_between_kills"]
    assert "no target carries" in problems["monkey.select"]


def test_a_valid_scenario_round_trips_its_fields(tmp_path: Path) -> None:
    (tmp_path / "slo.yaml").write_text("x: 1\n")
    path = _write(
        tmp_path,
        """name: ok
trigger: {interval: 2h, jitter: 5m}
windows: [{days: sat-sun, start: "22:00", end: "02:00"}]
blackouts: [{date: 2025-12-24}, {from: "2025-12-30T18:00", to: "2026-01-01T06:00", reason: party}]
misfire: {policy: run-once, grace: 1d}
gates:
  - {type: error-budget, slo: slo.yaml, min_remaining: 25%}
  - {type: no-firing-alerts, prometheus: "http://127.0.0.1:9", match: {severity: page}}
notify: [{webhook_env: HOOK, on: [abort]}]
steps:
  - {experiment: exp.yaml, vars: {n: 3}, timeout: 90s, continue_on: [passed, deviated]}
""",
    )
    s = load_scenario(path)
    assert s.misfire.grace_s == 86400 and s.jitter_s == 300
    assert s.steps[0].vars == {"n": "3"} and s.steps[0].timeout_s == 90
    assert s.notify[0].events == frozenset({"abort"}) and s.notify[0].url_env == "HOOK"
    assert len(s.calendar.blackouts) == 2 and s.calendar.blackouts[1].reason == "party"
    budget = s.gate_specs[0].build()
    assert isinstance(budget, ErrorBudgetCheck) and budget.min_remaining == 0.25
    assert budget.slo_files == ((tmp_path / "slo.yaml").resolve(),)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path, "name: same\ntrigger: {interval: 1h}\nsteps: [exp.yaml]\n", "a.yaml")
    _write(tmp_path, "name: same\ntrigger: {interval: 2h}\nsteps: [exp.yaml]\n", "b.yaml")
    with pytest.raises(InvalidInput) as info:
        load_scenarios([tmp_path])
    assert any("also used by" in p.message and p.path == "name" for p in info.value.problems)
    assert load_scenarios([a])[0].name == "same"


def test_concurrency_and_dst_gap_are_checked(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("title: t\ndescription: d\nmethod: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntrigger: {cron: '30 2 * * *', dst_gap: later}\nconcurrency: queue\nsteps: [e.yaml]\n"
    )
    problems = _problems(bad)
    assert "unknown concurrency policy 'queue'" in problems["concurrency"]
    assert "unknown dst_gap 'later'" in problems["trigger.dst_gap"]
    interval = tmp_path / "interval.yaml"
    interval.write_text("name: i\ntrigger: {interval: 1h, dst_gap: skip}\nsteps: [e.yaml]\n")
    assert "dst_gap applies to cron triggers" in _problems(interval)["trigger.dst_gap"]
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: g\ntrigger: {cron: '30 2 * * *', dst_gap: skip}\nconcurrency: replace\nsteps: [e.yaml]\n"
    )
    sc = load_scenario(good)
    assert sc.concurrency == "replace" and getattr(sc.trigger, "dst_gap", None) == "skip"
