"""Scenario files: what runs, when, where it may not, and what must hold first.

A game-day scenario (YAML or JSON)::

    name: lab-weekday-gameday           # unique; the store keys history by it
    description: Kill a replica on weekday mornings
    timezone: Europe/Berlin             # IANA name; default UTC
    trigger: {cron: "0 11 * * mon-fri", jitter: 10m}   # or {interval: 1h, jitter: 5m}
                                        # cron: dst_gap: shift (default) | skip
    concurrency: forbid                 # a slot due while the last one runs: forbid
                                        # (skip it, recorded "busy"), allow, or replace
    windows:                            # allowed; none means any time
      - {days: mon-fri, start: "10:00", end: "16:00"}
    blackouts:
      - {date: 2025-12-24}
      - {from: 2025-12-20, to: 2026-01-02, reason: holiday freeze}   # dates inclusive
    misfire: {policy: run-once, grace: 15m}   # or {policy: skip}
    gates:
      - {type: error-budget, slo: [slos/lab.yaml], min_remaining: 25%, prometheus: http://…}
      - {type: no-firing-alerts, prometheus: http://127.0.0.1:9090, match: {severity: page}}
    targets: [lab:replica-1]            # for the locks-free gate
    notify:
      - {webhook: https://hooks.slack.com/…, on: [start, finish, abort]}
      - {webhook_env: CHAOSLAB_SLACK_WEBHOOK}
    steps:                              # experiments in order
      - experiment: ../experiments/lab-kill-replica.yaml   # relative to this file
        vars: {replica: replica-2}      # passed as --var name=value
        continue_on: [passed]           # verdicts after which the next step runs
        timeout: 10m

A monkey scenario has ``monkey:`` instead of ``trigger``/``steps`` (see ``monkey``)::

    monkey:
      targets:
        - {target: lab:replica-1, labels: {chaos: opt-in}}
      select: {chaos: opt-in}
      mean_time_between_kills: 30m
      min_gap: 10m
      leashed: true

The loader reports every problem at once, each with file, line and field path.
Durations take ``ms``, ``s``, ``m``, ``h`` and ``d`` (days).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chaoslab.drivers.vocabulary import KILL_LIKE, resolve
from chaoslab.errors import InvalidInput, Problem
from chaoslab.model.reader import Document, load_document
from chaoslab.scheduler.calendar import Blackout, Calendar, Window, day_range, whole_days
from chaoslab.scheduler.checks import Check, ErrorBudgetCheck, NoFiringAlertsCheck, default_checks
from chaoslab.scheduler.monkey import MonkeySpec, MonkeyTarget, MonkeyTrigger
from chaoslab.scheduler.triggers import DST_GAP_POLICIES, CronTrigger, IntervalTrigger, Trigger
from chaoslab.units import parse_duration
from chaoslab.verdict import Verdict

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
NOTIFY_EVENTS = ("start", "finish", "abort")
MISFIRE_POLICIES = ("skip", "run-once")
# What a due slot does while an earlier slot of its scenario still runs (the names and
# meanings of Kubernetes' CronJob concurrencyPolicy): skip it, run beside it, or stop the
# running one (it reverts) and run.
CONCURRENCY_POLICIES = ("forbid", "allow", "replace")
TOP_KEYS = frozenset(
    {"name", "description", "timezone", "trigger", "windows", "blackouts", "misfire", "gates",
     "targets", "notify", "steps", "monkey", "concurrency"}
)  # fmt: skip
DEFAULT_GRACE_S = 15 * 60.0


@dataclass(frozen=True, kw_only=True)
class Step:
    """One experiment of a scenario, run by ``chaoslab run`` in a subprocess."""

    experiment: Path  # absolute
    name: str
    vars: Mapping[str, str] = field(default_factory=dict)
    continue_on: frozenset[str] = frozenset({Verdict.PASSED.value})
    timeout_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class Misfire:
    """What to do with a slot found late: ``skip`` it, or ``run-once`` if late < grace.

    With ``run-once``, several late slots of one scenario are coalesced: only the latest
    runs, the others are recorded as missed.
    """

    policy: str = "skip"
    grace_s: float = DEFAULT_GRACE_S


@dataclass(frozen=True, kw_only=True)
class Notify:
    url: str | None = None
    url_env: str | None = None
    events: frozenset[str] = frozenset(NOTIFY_EVENTS)


@dataclass(frozen=True, kw_only=True)
class GateSpec:
    """A gate as written in the file; ``build`` makes the ``Check``."""

    type: str
    options: Mapping[str, Any]
    base: Path

    def build(self) -> Check:
        if self.type == "no-firing-alerts":
            return NoFiringAlertsCheck(
                url=str(self.options["prometheus"]),
                match={str(k): str(v) for k, v in (self.options.get("match") or {}).items()},
            )
        slo = self.options.get("slo") or []
        files = tuple((self.base / str(p)).resolve() for p in ([slo] if isinstance(slo, str) else slo))
        prom = self.options.get("prometheus")
        return ErrorBudgetCheck(
            slo_files=files,
            min_remaining=_ratio(self.options.get("min_remaining", 0.0)),
            prometheus_url=str(prom) if prom else None,
        )


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A validated scenario. Exactly one of ``steps`` and ``monkey`` is set."""

    name: str
    description: str
    path: Path
    tz: ZoneInfo
    trigger: Trigger
    jitter_s: float = 0.0
    calendar: Calendar
    misfire: Misfire = field(default_factory=Misfire)
    concurrency: str = "forbid"
    gate_specs: tuple[GateSpec, ...] = ()
    targets: tuple[str, ...] = ()
    notify: tuple[Notify, ...] = ()
    steps: tuple[Step, ...] = ()
    monkey: MonkeySpec | None = None

    @property
    def kind(self) -> str:
        return "monkey" if self.monkey is not None else "gameday"

    def gates(self) -> list[Check]:
        """Always-on safety gates first, then the scenario's own."""
        return [*default_checks(), *(g.build() for g in self.gate_specs)]

    def lock_targets(self) -> tuple[str, ...]:
        if self.monkey is not None:
            return self.monkey.opted_in()
        return self.targets


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file. Raises ``InvalidInput`` with every problem."""
    doc = load_document(path)
    loader = _Loader(doc)
    scenario = loader.scenario()
    if loader.problems or scenario is None:
        raise InvalidInput(loader.problems)
    return scenario


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Scenario files under ``paths`` (files as given; directories: their top-level
    ``*.yaml``/``*.yml``/``*.json``), sorted, without duplicates."""
    out: dict[Path, None] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if (
                    child.is_file()
                    and child.suffix in (".yaml", ".yml", ".json")
                    and not child.name.startswith(".")
                ):
                    out[child] = None
        else:
            out[p] = None
    return list(out)


def load_scenarios(paths: Iterable[str | Path]) -> list[Scenario]:
    """Load every scenario under ``paths``; every problem of every file in one error.

    Two files with the same ``name`` are refused: the name is the key of their history.
    """
    problems: list[Problem] = []
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for file in scenario_files(paths):
        try:
            s = load_scenario(file)
        except InvalidInput as exc:
            problems.extend(exc.problems)
            continue
        if s.name in seen:
            problems.append(
                Problem(
                    file=str(file),
                    path="name",
                    message=f"scenario name {s.name!r} is also used by {seen[s.name]}",
                )
            )
            continue
        seen[s.name] = file
        scenarios.append(s)
    if problems:
        raise InvalidInput(problems)
    return scenarios


def _ratio(value: Any) -> float:
    """``25%`` → 0.25, ``0.25`` → 0.25. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a ratio: {value!r}")
    if isinstance(value, str) and value.strip().endswith("%"):
        r = float(value.strip()[:-1]) / 100.0
    elif isinstance(value, int | float):
        r = float(value)
    else:
        raise ValueError(f"not a ratio: {value!r} (use 25% or 0.25)")
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"{value!r} is not between 0% and 100%")
    return r


class _Loader:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.base = Path(doc.path).resolve().parent

    def bad(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(self.doc.problem(path, message, hint))

    def scenario(self) -> Scenario | None:
        d = self.doc.data
        if not isinstance(d, Mapping):
            self.bad("", "a scenario file must be a mapping")
            return None
        for key in sorted(set(d) - TOP_KEYS):
            self.bad(str(key), f"unknown field {key!r}", hint=f"known fields: {', '.join(sorted(TOP_KEYS))}")
        name = d.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            self.bad("name", "name must be lowercase letters, digits, '.', '_' or '-' (at most 63)")
            name = "?"
        description = d.get("description", "")
        if not isinstance(description, str):
            self.bad("description", "description must be a string")
            description = ""
        tz = self.timezone(d.get("timezone", "UTC"))
        is_monkey = "monkey" in d
        monkey = self.monkey(d["monkey"], name) if is_monkey else None
        trigger: Trigger | None = None
        jitter = 0.0
        if is_monkey:
            for key in ("trigger", "steps"):
                if key in d:
                    self.bad(
                        key, f"a monkey scenario has no {key!r}: the monkey section decides what and when"
                    )
            if monkey is not None:
                trigger = MonkeyTrigger(
                    scenario=name, seed=monkey.seed, mean_s=monkey.mean_s, min_gap_s=monkey.min_gap_s
                )
        else:
            trigger, jitter = self.trigger(d.get("trigger"), tz)
        steps = self.steps(d.get("steps")) if not is_monkey else ()
        calendar = Calendar(
            tz=tz, windows=self.windows(d.get("windows", [])), blackouts=self.blackouts(d, tz)
        )
        misfire = self.misfire(d.get("misfire", {}))
        concurrency = d.get("concurrency", "forbid")
        if concurrency not in CONCURRENCY_POLICIES:
            self.bad(
                "concurrency",
                f"unknown concurrency policy {concurrency!r}",
                hint="forbid (default: skip a slot while the last one runs), allow, or replace",
            )
            concurrency = "forbid"
        gates = self.gates(d.get("gates", []))
        targets = self.strings(d.get("targets", []), "targets")
        notify = self.notify(d.get("notify", []))
        if self.problems or trigger is None:
            return None
        return Scenario(
            name=name,
            description=description,
            path=Path(self.doc.path).resolve(),
            tz=tz,
            trigger=trigger,
            jitter_s=jitter,
            calendar=calendar,
            misfire=misfire,
            concurrency=str(concurrency),
            gate_specs=gates,
            targets=targets,
            notify=notify,
            steps=steps,
            monkey=monkey,
        )

    # --- sections ----------------------------------------------------------------------

    def timezone(self, value: Any) -> ZoneInfo:
        try:
            if not isinstance(value, str):
                raise ValueError
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.bad(
                "timezone", f"unknown time zone {value!r}", hint="an IANA name such as Europe/Berlin or UTC"
            )
            return ZoneInfo("UTC")

    def dur(self, value: Any, path: str, *, minimum: float = 0.0) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.bad(path, str(exc), hint="e.g. 30s, 10m, 2h, 1d")
            return None
        if seconds < minimum:
            self.bad(path, f"must be at least {minimum:g}s")
            return None
        return seconds

    def trigger(self, t: Any, tz: ZoneInfo) -> tuple[Trigger | None, float]:
        if not isinstance(t, Mapping):
            self.bad("trigger", "missing trigger: {cron: '0 11 * * mon-fri'} or {interval: 1h}")
            return None, 0.0
        for key in sorted(set(t) - {"cron", "interval", "jitter", "anchor", "dst_gap"}):
            self.bad(
                f"trigger.{key}", f"unknown field {key!r}", hint="cron, interval, jitter, anchor, dst_gap"
            )
        jitter = self.dur(t.get("jitter", 0), "trigger.jitter") or 0.0
        if ("cron" in t) == ("interval" in t):
            self.bad("trigger", "give exactly one of 'cron' and 'interval'")
            return None, jitter
        if "cron" in t:
            expr = t["cron"]
            why = CronTrigger.problem(expr) if isinstance(expr, str) else "cron must be a string"
            if why:
                self.bad("trigger.cron", why, hint="five fields, e.g. '0 11 * * mon-fri'")
                return None, jitter
            gap = t.get("dst_gap", "shift")
            if gap not in DST_GAP_POLICIES:
                self.bad(
                    "trigger.dst_gap",
                    f"unknown dst_gap {gap!r}",
                    hint="shift (run right after the DST gap, the default) or skip",
                )
                return None, jitter
            return CronTrigger(expression=expr, tz=tz, dst_gap=str(gap)), jitter
        if "dst_gap" in t:
            self.bad("trigger.dst_gap", "dst_gap applies to cron triggers (intervals count UTC seconds)")
        every = self.dur(t["interval"], "trigger.interval", minimum=1.0)
        if every is None:
            return None, jitter
        if every != int(every):
            self.bad("trigger.interval", "an interval must be whole seconds")
            return None, jitter
        if jitter >= every:
            self.bad(
                "trigger.jitter", "jitter must be shorter than the interval (slots would overtake each other)"
            )
        anchor = datetime(1970, 1, 1, tzinfo=UTC)
        if "anchor" in t:
            parsed = self.moment(t["anchor"], "trigger.anchor", tz)
            anchor = parsed.astimezone(UTC) if parsed else anchor
        return IntervalTrigger(every_s=int(every), anchor=anchor), jitter

    def moment(self, value: Any, path: str, tz: ZoneInfo) -> datetime | None:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=tz)
        if isinstance(value, date):
            return datetime.combine(value, time(0), tzinfo=tz)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
        self.bad(path, f"not a date or date-time: {value!r}", hint="2025-12-24 or 2025-12-24T18:00")
        return None

    def windows(self, raw: Any) -> tuple[Window, ...]:
        if not isinstance(raw, list):
            self.bad("windows", "windows must be a list of {days, start, end}")
            return ()
        out: list[Window] = []
        for i, w in enumerate(raw):
            p = f"windows[{i}]"
            if not isinstance(w, Mapping):
                self.bad(p, "a window is a mapping {days: mon-fri, start: '10:00', end: '16:00'}")
                continue
            for key in sorted(set(w) - {"days", "start", "end"}):
                self.bad(f"{p}.{key}", f"unknown field {key!r}")
            days = day_range(str(w.get("days", "mon-sun")))
            if days is None:
                self.bad(f"{p}.days", f"cannot read days {w.get('days')!r}", hint="mon-fri, sat,sun, or tue")
            start = self.clock_time(w.get("start"), f"{p}.start")
            end = self.clock_time(w.get("end"), f"{p}.end")
            if days is not None and start is not None and end is not None:
                out.append(Window(days=days, start=start, end=end))
        return tuple(out)

    def clock_time(self, value: Any, path: str) -> time | None:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 10:00 as a sexagesimal integer (600).
            value = f"{value // 60:02d}:{value % 60:02d}"
        if isinstance(value, str) and (m := re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())):
            h, mi = int(m.group(1)), int(m.group(2))
            if h == 24 and mi == 0:
                return time(0)  # "24:00": midnight at the end of the day
            if h < 24 and mi < 60:
                return time(h, mi)
        self.bad(path, f"not a time of day: {value!r}", hint="HH:MM, e.g. '10:00'")
        return None

    def blackouts(self, d: Mapping[str, Any], tz: ZoneInfo) -> tuple[Blackout, ...]:
        raw = d.get("blackouts", [])
        if not isinstance(raw, list):
            self.bad("blackouts", "blackouts must be a list of {date} or {from, to}")
            return ()
        out: list[Blackout] = []
        for i, b in enumerate(raw):
            p = f"blackouts[{i}]"
            if not isinstance(b, Mapping):
                self.bad(p, "a blackout is {date: 2025-12-24} or {from: …, to: …, reason: …}")
                continue
            for key in sorted(set(b) - {"date", "from", "to", "reason"}):
                self.bad(f"{p}.{key}", f"unknown field {key!r}")
            reason = str(b.get("reason", ""))
            if "date" in b:
                day = self.moment(b["date"], f"{p}.date", tz)
                if day is not None:
                    start, end = whole_days(tz, day, day)
                    out.append(Blackout(start=start, end=end, reason=reason))
                continue
            if "from" not in b or "to" not in b:
                self.bad(p, "a blackout needs 'date', or both 'from' and 'to'")
                continue
            start_m = self.moment(b["from"], f"{p}.from", tz)
            end_m = self.moment(b["to"], f"{p}.to", tz)
            if start_m is None or end_m is None:
                continue
            if _is_date(b["to"]):
                end_m = whole_days(tz, end_m, end_m)[1]  # a date as 'to' includes that day
            if end_m <= start_m:
                self.bad(f"{p}.to", "a blackout must end after it starts")
                continue
            out.append(Blackout(start=start_m, end=end_m, reason=reason))
        return tuple(out)

    def misfire(self, m: Any) -> Misfire:
        if not isinstance(m, Mapping):
            self.bad("misfire", "misfire must be {policy: skip|run-once, grace: 15m}")
            return Misfire()
        for key in sorted(set(m) - {"policy", "grace"}):
            self.bad(f"misfire.{key}", f"unknown field {key!r}")
        policy = m.get("policy", "skip")
        if policy not in MISFIRE_POLICIES:
            self.bad("misfire.policy", f"unknown misfire policy {policy!r}", hint="skip or run-once")
            policy = "skip"
        grace = self.dur(m.get("grace", DEFAULT_GRACE_S), "misfire.grace") or 0.0
        return Misfire(policy=str(policy), grace_s=grace)

    def gates(self, raw: Any) -> tuple[GateSpec, ...]:
        if not isinstance(raw, list):
            self.bad("gates", "gates must be a list of {type: …}")
            return ()
        out: list[GateSpec] = []
        for i, g in enumerate(raw):
            p = f"gates[{i}]"
            if not isinstance(g, Mapping) or "type" not in g:
                self.bad(p, "a gate is a mapping with a 'type' (error-budget or no-firing-alerts)")
                continue
            kind = g["type"]
            if kind == "no-firing-alerts":
                allowed = {"type", "prometheus", "match"}
                if not isinstance(g.get("prometheus"), str) or not g["prometheus"].startswith(
                    ("http://", "https://")
                ):
                    self.bad(f"{p}.prometheus", "the Prometheus base URL (http://host:9090) is required")
                if not isinstance(g.get("match", {}), Mapping):
                    self.bad(f"{p}.match", "match must be a mapping of label names to values")
            elif kind == "error-budget":
                allowed = {"type", "slo", "min_remaining", "prometheus"}
                slo = g.get("slo")
                files = [slo] if isinstance(slo, str) else slo
                if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
                    self.bad(f"{p}.slo", "slo must name one or more SLO files")
                else:
                    for j, f in enumerate(files):
                        if not (self.base / f).is_file():
                            self.bad(
                                f"{p}.slo" + (f"[{j}]" if isinstance(slo, list) else ""), f"no SLO file {f}"
                            )
                try:
                    _ratio(g.get("min_remaining", 0.0))
                except ValueError as exc:
                    self.bad(f"{p}.min_remaining", str(exc))
            else:
                self.bad(f"{p}.type", f"unknown gate {kind!r}", hint="error-budget or no-firing-alerts")
                continue
            for key in sorted(set(g) - allowed):
                self.bad(f"{p}.{key}", f"unknown field {key!r}", hint=", ".join(sorted(allowed)))
            out.append(GateSpec(type=str(kind), options=dict(g), base=self.base))
        return tuple(out)

    def strings(self, raw: Any, path: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            self.bad(path, f"{path} must be a list of non-empty strings")
            return ()
        return tuple(raw)

    def notify(self, raw: Any) -> tuple[Notify, ...]:
        if not isinstance(raw, list):
            self.bad("notify", "notify must be a list of {webhook: URL} or {webhook_env: VAR}")
            return ()
        out: list[Notify] = []
        for i, n in enumerate(raw):
            p = f"notify[{i}]"
            if not isinstance(n, Mapping):
                self.bad(p, "a notification is {webhook: URL, on: [start, finish, abort]}")
                continue
            if True in n:  # YAML 1.1 reads an unquoted `on:` key as the boolean true
                n = {("on" if k is True else k): v for k, v in n.items()}
            for key in sorted(set(n) - {"webhook", "webhook_env", "on"}, key=str):
                self.bad(f"{p}.{key}", f"unknown field {key!r}")
            url, env = n.get("webhook"), n.get("webhook_env")
            if (url is None) == (env is None):
                self.bad(p, "give exactly one of 'webhook' (a URL) and 'webhook_env' (a variable holding it)")
                continue
            if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
                self.bad(f"{p}.webhook", f"not an http(s) URL: {url!r}")
                continue
            events = n.get("on", list(NOTIFY_EVENTS))
            if not isinstance(events, list) or not all(e in NOTIFY_EVENTS for e in events):
                self.bad(f"{p}.on", f"on must list events among {', '.join(NOTIFY_EVENTS)}")
                continue
            out.append(Notify(url=url, url_env=str(env) if env else None, events=frozenset(events)))
        return tuple(out)

    def steps(self, raw: Any) -> tuple[Step, ...]:
        if not isinstance(raw, list) or not raw:
            self.bad("steps", "steps must list at least one {experiment: path}")
            return ()
        verdicts = {v.value for v in Verdict}
        out: list[Step] = []
        for i, s in enumerate(raw):
            p = f"steps[{i}]"
            if isinstance(s, str):
                s = {"experiment": s}
            if not isinstance(s, Mapping):
                self.bad(p, "a step is {experiment: path} (or just the path)")
                continue
            for key in sorted(set(s) - {"experiment", "name", "vars", "continue_on", "timeout"}):
                self.bad(
                    f"{p}.{key}",
                    f"unknown field {key!r}",
                    hint="experiment, name, vars, continue_on, timeout",
                )
            exp = s.get("experiment")
            if not isinstance(exp, str) or not exp:
                self.bad(f"{p}.experiment", "experiment must be a file path (relative to the scenario file)")
                continue
            file = (self.base / exp).resolve()
            if not file.is_file():
                self.bad(f"{p}.experiment", f"no experiment file {exp} (looked at {file})")
                continue
            variables = s.get("vars", {})
            if not isinstance(variables, Mapping):
                self.bad(f"{p}.vars", "vars must be a mapping of names to values")
                variables = {}
            cont = s.get("continue_on", [Verdict.PASSED.value])
            if not isinstance(cont, list) or not all(c in verdicts for c in cont):
                self.bad(
                    f"{p}.continue_on", f"continue_on must list verdicts among {', '.join(sorted(verdicts))}"
                )
                cont = [Verdict.PASSED.value]
            timeout = self.dur(s["timeout"], f"{p}.timeout", minimum=1.0) if "timeout" in s else None
            out.append(
                Step(
                    experiment=file,
                    name=str(s.get("name") or file.stem),
                    vars={str(k): str(v) for k, v in variables.items()},
                    continue_on=frozenset(cont),
                    timeout_s=timeout,
                )
            )
        return tuple(out)

    def monkey(self, m: Any, name: str) -> MonkeySpec | None:
        p = "monkey"
        if not isinstance(m, Mapping):
            self.bad(p, "monkey must be a mapping (targets, select, mean_time_between_kills, min_gap)")
            return None
        known = {"targets", "select", "mean_time_between_kills", "min_gap", "signal", "leashed", "seed",
                 "heal_timeout", "fault", "with"}  # fmt: skip
        for key in sorted(set(m) - known):
            self.bad(f"{p}.{key}", f"unknown field {key!r}", hint=", ".join(sorted(known)))
        fault = m.get("fault", "kill")
        if fault not in KILL_LIKE:
            self.bad(
                f"{p}.fault",
                f"the monkey's fault must be kill-like, got {fault!r}",
                hint=", ".join(KILL_LIKE),
            )
        extra = m.get("with", {})
        if not isinstance(extra, Mapping):
            self.bad(f"{p}.with", "with must be a mapping of platform arguments (inventory, kubeconfig...)")
            extra = {}
        targets: list[MonkeyTarget] = []
        raw_targets = m.get("targets")
        if not isinstance(raw_targets, list) or not raw_targets:
            self.bad(
                f"{p}.targets",
                "list the candidate targets: [{target: lab:replica-1, labels: {chaos: opt-in}}]",
            )
            raw_targets = []
        for i, t in enumerate(raw_targets):
            tp = f"{p}.targets[{i}]"
            if not isinstance(t, Mapping) or not isinstance(t.get("target"), str):
                self.bad(tp, "a target is {target: lab:replica-1, labels: {…}}")
                continue
            labels = t.get("labels", {})
            if not isinstance(labels, Mapping):
                self.bad(f"{tp}.labels", "labels must be a mapping")
                labels = {}
            targets.append(
                MonkeyTarget(target=t["target"], labels={str(k): str(v) for k, v in labels.items()})
            )
            if fault in KILL_LIKE:
                # the fault must exist on the victim's platform (pod:, docker:, ssh:, pid:...)
                _, found = resolve(fault, t["target"], {}, check=False)
                for problem in found:
                    self.bad(f"{tp}.target", problem.message, problem.hint)
        select = m.get("select")
        if not isinstance(select, Mapping) or not select:
            self.bad(f"{p}.select", "select the opted-in targets by label, e.g. {chaos: opt-in}")
            select = {}
        mean = self.dur(m.get("mean_time_between_kills"), f"{p}.mean_time_between_kills", minimum=2.0)
        gap = self.dur(m.get("min_gap", 0), f"{p}.min_gap", minimum=1.0)
        heal = self.dur(m.get("heal_timeout", 30), f"{p}.heal_timeout", minimum=1.0)
        leashed = m.get("leashed", False)
        if not isinstance(leashed, bool):
            self.bad(f"{p}.leashed", "leashed must be true or false")
        if mean is not None and gap is not None and mean < 2 * gap:
            self.bad(
                f"{p}.mean_time_between_kills",
                f"must be at least twice min_gap ({2 * gap:g}s) for kills to stay min_gap apart",
            )
        chosen = {str(k): str(v) for k, v in select.items()}
        if (
            targets
            and chosen
            and not any(all(t.labels.get(k) == v for k, v in chosen.items()) for t in targets)
        ):
            self.bad(f"{p}.select", f"no target carries the labels {chosen}")
        if mean is None or gap is None or mean < 2 * gap:
            return None
        spec = MonkeySpec(
            targets=tuple(targets),
            select=chosen,
            mean_s=int(mean),
            min_gap_s=int(gap),
            signal=str(m.get("signal", "SIGKILL")),
            leashed=bool(leashed),
            seed=str(m.get("seed", name)),
            heal_timeout_s=heal or 30.0,
            fault=str(fault),
            args={str(k): v for k, v in extra.items()},
        )
        return spec


def _is_date(value: Any) -> bool:
    if isinstance(value, datetime):
        return False
    if isinstance(value, date):
        return True
    return isinstance(value, str) and bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()))
