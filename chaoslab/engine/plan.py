"""``chaoslab plan``: what a run would do, with targets resolved, touching nothing.

Faults are planned with ``Driver.prepare``, which by contract resolves targets and
builds the revert record without any side effect on a target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers.base import DriverContext, LeaseKind, check_args, with_defaults
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.selection import picked_targets
from chaoslab.engine.faults import LEASE_MARGIN_S
from chaoslab.errors import ChaoslabError, InvalidInput, Problem
from chaoslab.model.experiment import Activity, ActivityKind, Experiment
from chaoslab.paths import StatePaths


class _LaterResolved(Exception):
    """A lab target while the lab is down: the run starts the lab, then resolves it."""


def _lab_running(lab_dir: Path) -> bool:
    return (lab_dir / "lab.json").exists()


def _describe(a: Activity) -> dict[str, Any]:
    d: dict[str, Any] = {"name": a.name, "type": a.type, "path": a.path}
    if a.kind is ActivityKind.PROVIDER:
        prov = a.ctk.get("provider", {})
        d["provider"] = prov.get("type")
        d["call"] = prov.get("module", "") + ("." + prov["func"] if "func" in prov else "") or prov.get(
            "path", prov.get("url", "")
        )
    else:
        d["driver"] = f"{a.driver}.{a.operation}"
        d["target"] = a.target
        written = a.ctk.get("chaoslab") or {}
        if written.get("do") and written.get("do") != d["driver"]:
            # a vocabulary step (do: kill, target: docker:...): shown as written, then resolved
            d["do"] = written["do"]
            d["written_target"] = written.get("target")
        d["args"] = dict(a.args)
    if a.timeout_s:
        d["timeout_s"] = a.timeout_s
    if a.background:
        d["background"] = True
    return d


def _substituted_later(a: Activity) -> bool:
    """Arguments with ``${...}`` are known only once the run has its configuration."""
    return any(isinstance(v, str) and "${" in v for v in a.args.values()) or "${" in str(a.target or "")


def _prepare(
    exp: Experiment, a: Activity, registry: DriverRegistry, ctx: DriverContext
) -> tuple[dict[str, Any], list[Problem]]:
    """Plan one fault with ``Driver.prepare`` (no side effect on any target)."""
    assert a.driver and a.operation
    d: dict[str, Any] = {}
    driver = registry.get(a.driver)
    op = driver.operation(a.operation)
    assert op is not None
    args = dict(a.args)
    problems = [_at(exp, a, p) for p in check_args(op, args, "")]
    lease = None
    if op.lease is LeaseKind.TARGET:
        lease = (a.duration_s or exp.runtime.lease_s) + LEASE_MARGIN_S
    try:
        if _substituted_later(a):
            raise _LaterResolved("its arguments are substituted when the run starts")
        if exp.needs_lab and str(a.target).startswith("lab:") and not _lab_running(ctx.lab_dir):
            raise _LaterResolved("resolved when the run has started the lab")
        record = driver.prepare(ctx, op, with_defaults(op, args), a.target, lease)
    except _LaterResolved as later:
        d["resolved_target"] = f"{a.target} ({later})"
    except ChaoslabError as exc:
        d["error"] = str(exc)
        if isinstance(exc, InvalidInput):
            problems.extend(_at(exp, a, p) for p in exc.problems)
    else:
        d["resolved"] = record.data
        d["resolved_target"] = record.target
        d["picked"] = list(picked_targets(record.data))
    d["duration_s"] = a.duration_s
    d["lease"] = "heals by itself (no lease)" if op.lease is LeaseKind.NONE else f"{lease:g}s on the target"
    return d, problems


def _at(exp: Experiment, a: Activity, p: Problem) -> Problem:
    """A driver's problem placed at the activity's field path in the experiment file."""
    if p.file:
        return p
    if not p.path or p.path == "target":
        where = f"{a.path}.{p.path}" if p.path else a.path
    else:
        where = f"{a.path}.with.{p.path}"
    return msgspec.structs.replace(p, file=exp.source, path=where)


def _with_lines(exp: Experiment, problems: list[Problem]) -> list[Problem]:
    """Line numbers for problems found after loading (the file is read again, bounded)."""
    from chaoslab.model.reader import load_document

    try:
        doc = load_document(exp.source)
    except InvalidInput:
        return problems
    return [
        msgspec.structs.replace(p, line=doc.line(p.path)) if p.file == exp.source and p.line is None else p
        for p in problems
    ]


def check_runnable(exp: Experiment, *, registry: DriverRegistry, state: StatePaths) -> None:
    """Before the first fault of a run: every fault's arguments and target are checked as
    ``plan`` does (``Driver.prepare``, no side effect). A problem raises ``InvalidInput``,
    so "invalid input" still means that nothing was touched. Targets that do not exist
    yet are left to the run (an earlier step or the lab may start them). ``state``: where
    chaoslab's state lives (the session passes its own)."""
    ctx = DriverContext(run_id="precheck", state_dir=state.home / "plan", lab_dir=state.lab, dry=True)
    problems: list[Problem] = []
    for a in exp.method:
        if a.is_fault:
            problems += _prepare(exp, a, registry, ctx)[1]
    if problems:
        raise InvalidInput(_with_lines(exp, problems))


def make_plan(
    exp: Experiment, *, registry: DriverRegistry, state: StatePaths, seed: int | None = None
) -> dict[str, Any]:
    """``seed``: the one ``run --seed`` is given; the same seed picks the same targets.
    ``state``: where chaoslab's state lives (``chaoslab plan`` passes the CLI's)."""
    ctx = DriverContext(
        run_id="plan", state_dir=state.home / "plan", lab_dir=state.lab, dry=True, seed=seed or 0
    )
    method = []
    problems: list[Problem] = []
    for a in exp.method:
        d = _describe(a)
        if a.is_fault:
            planned, found = _prepare(exp, a, registry, ctx)
            d.update(planned)
            problems += found
        method.append(d)
    if problems:
        raise InvalidInput(_with_lines(exp, problems))
    rt = exp.runtime
    return {
        "title": exp.title,
        "source": exp.source,
        "needs_lab": exp.needs_lab,
        "load": msgspec.to_builtins(exp.load) if exp.load is not None else None,
        "slo": _describe_slos(exp),
        "strategy": rt.strategy.value,
        "rollback_strategy": rt.rollback.value,
        "steady_state": [_describe(p) for p in (exp.hypothesis.probes if exp.hypothesis else ())],
        "method": method,
        "rollbacks": [_describe(r) for r in exp.rollbacks],
        "activity_timeout_s": rt.activity_timeout_s,
        "recovery_s": rt.recovery_s,
    }


def _describe_slos(exp: Experiment) -> list[str]:
    return [f"{s.name}: {s.describe()} in {', '.join(s.windows)}" for s in exp.slo]


def render_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    c = Console(highlight=False, soft_wrap=True)
    c.print(f"[bold]Plan[/] for {escape(plan['title'])} ({plan['source']}) — nothing will be touched")
    c.print(
        f"hypothesis strategy: {plan['strategy']}; rollbacks: {plan['rollback_strategy']}; "
        f"activity deadline {plan['activity_timeout_s']:g}s"
    )
    if plan["needs_lab"]:
        c.print("needs the lab: it is brought up before and taken down after the run")
    if plan["load"]:
        c.print(f"synthetic load: {plan['load']}")
    for s in plan["slo"]:
        c.print(f"  SLO {escape(str(s))}")
    c.print("[bold blue]steady state[/]")
    for p in plan["steady_state"]:
        c.print(f"  • {escape(p['name'])} ({p.get('provider') or p.get('driver')})")
    c.print("[bold blue]method[/]")
    for a in plan["method"]:
        line = f"  • {a['type']} {escape(a['name'])}"
        if "driver" in a:
            if "do" in a:  # a vocabulary step: as written, then the driver operation it is
                line += f" → {escape(a['do'])} on {escape(str(a['written_target']))} ="
            arrow = " " if "do" in a else " → "
            line += f"{arrow}{a['driver']} on {escape(str(a.get('resolved_target') or a['target']))}"
            if "lease" in a:
                line += f"; lease: {a['lease']}"
            if a.get("duration_s"):
                line += f"; held {a['duration_s']:g}s"
        c.print(line)
        if a.get("picked"):
            c.print(f"      picked {len(a['picked'])}: {escape(', '.join(a['picked']))}")
        if a.get("resolved"):
            c.print(f"      resolved: {escape(str(a['resolved']))}")
        if a.get("error"):
            c.print(f"      [red]{escape(a['error'])}[/]")
    c.print("[bold blue]rollbacks[/] (always run)" if plan["rollbacks"] else "[bold blue]rollbacks[/]: none")
    for r in plan["rollbacks"]:
        c.print(f"  • {escape(r['name'])}")
