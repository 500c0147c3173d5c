"""``chaoslab plan``: what a run would do, with targets resolved, touching nothing.

Faults are planned with ``Driver.prepare``, which by contract resolves targets and
builds the revert record without any side effect on a target.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chaoslab.drivers.base import DriverContext, LeaseKind, check_args, with_defaults
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.faults import LEASE_MARGIN_S
from chaoslab.errors import ChaoslabError, InvalidInput
from chaoslab.model.experiment import Activity, ActivityKind, Experiment
from chaoslab.paths import home


class _LaterResolved(Exception):
    """A lab target while the lab is down: the run starts the lab, then resolves it."""


def _lab_running() -> bool:
    from chaoslab.paths import lab_dir

    return (lab_dir() / "lab.json").exists()


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
        d["args"] = dict(a.args)
    if a.timeout_s:
        d["timeout_s"] = a.timeout_s
    if a.background:
        d["background"] = True
    return d


def make_plan(exp: Experiment, *, registry: DriverRegistry) -> dict[str, Any]:
    ctx = DriverContext(run_id="plan", state_dir=home() / "plan", dry=True)
    method = []
    problems = []
    for a in exp.method:
        d = _describe(a)
        if a.is_fault:
            assert a.driver and a.operation
            driver = registry.get(a.driver)
            op = driver.operation(a.operation)
            assert op is not None
            args = dict(a.args)
            problems.extend(check_args(op, args, f"{a.path}.with"))
            lease = None
            if op.lease is LeaseKind.TARGET:
                lease = (a.duration_s or exp.runtime.lease_s) + LEASE_MARGIN_S
            try:
                if exp.needs_lab and str(a.target).startswith("lab:") and not _lab_running():
                    raise _LaterResolved()
                record = driver.prepare(ctx, op, with_defaults(op, args), a.target, lease)
            except _LaterResolved:
                d["resolved_target"] = f"{a.target} (resolved when the run has started the lab)"
            except ChaoslabError as exc:
                d["error"] = str(exc)
                if isinstance(exc, InvalidInput):
                    problems.extend(exc.problems)
            else:
                d["resolved"] = record.data
                d["resolved_target"] = record.target
            d["duration_s"] = a.duration_s
            d["lease"] = (
                "heals by itself (no lease)" if op.lease is LeaseKind.NONE else f"{lease:g}s on the target"
            )
        method.append(d)
    if problems:
        raise InvalidInput(problems)
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
            line += f" → {a['driver']} on {escape(str(a.get('resolved_target') or a['target']))}"
            if "lease" in a:
                line += f"; lease: {a['lease']}"
            if a.get("duration_s"):
                line += f"; held {a['duration_s']:g}s"
        c.print(line)
        if a.get("resolved"):
            c.print(f"      resolved: {escape(str(a['resolved']))}")
        if a.get("error"):
            c.print(f"      [red]{escape(a['error'])}[/]")
    c.print("[bold blue]rollbacks[/] (always run)" if plan["rollbacks"] else "[bold blue]rollbacks[/]: none")
    for r in plan["rollbacks"]:
        c.print(f"  • {escape(r['name'])}")
