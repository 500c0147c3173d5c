"""Live console progress: a consumer of the event stream, rendered with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from chaoslab.engine import events as ev

_PHASE_TITLES = {
    ev.Phase.BASELINE: "Baseline: checking the steady state",
    ev.Phase.METHOD: "Method: injecting",
    ev.Phase.RECOVERY: "Recovery: observing",
    ev.Phase.AFTER: "After: checking the steady state",
    ev.Phase.REVERT: "Reverting every fault",
    ev.Phase.ROLLBACK: "Rollbacks",
    ev.Phase.VERIFY: "Verifying targets are clean",
}

_VERDICT_STYLE = {
    "passed": "bold green",
    "deviated": "bold yellow",
    "inconclusive": "bold magenta",
    "aborted": "bold red",
    "interrupted": "bold red",
    "error": "bold red",
    "invalid-input": "bold red",
    "not-clean": "bold white on red",
}


class ConsoleProgress:
    """Prints the run as it happens. Live SLI values every ``tick_every`` seconds."""

    def __init__(self, console: Console, tick_every: int = 2) -> None:
        self.console = console
        self.tick_every = tick_every
        self._ticks = 0
        self._slo: list[ev.SLOEvaluated] = []
        self._phases: set[ev.Phase] = set()

    def __call__(self, event: ev.Event) -> None:
        c = self.console
        if isinstance(event, ev.SLITick):
            self._ticks += 1
            if self._ticks % self.tick_every == 0:
                c.print("  [dim]· " + _tick_line(event) + "[/]")
            return
        if isinstance(event, ev.PhaseStarted):
            if event.phase in self._phases and event.phase is not ev.Phase.REVERT:
                return
            self._phases.add(event.phase)
        if isinstance(event, ev.RunStarted):
            c.print(f"[bold]chaoslab[/] run [cyan]{event.run_id}[/]: {escape(event.title)}")
        elif isinstance(event, ev.PhaseStarted) and event.phase in _PHASE_TITLES:
            c.print(f"[bold blue]▸ {_PHASE_TITLES[event.phase]}[/]")
        elif isinstance(event, ev.ActivityFinished):
            if event.phase is ev.Phase.DURING:
                return
            mark = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]", "timed-out": "[red]⏱[/]"}.get(
                event.status, "?"
            )
            tol = ""
            if event.tolerance_met is not None:
                tol = (
                    " [green](within tolerance)[/]" if event.tolerance_met else " [red](outside tolerance)[/]"
                )
            took = event.end - event.start
            c.print(f"  {mark} {event.activity_type} [bold]{escape(event.name)}[/] {took:.2f}s{tol}")
            if event.error:
                c.print(f"      [red]{escape(event.error.splitlines()[-1][:300])}[/]")
        elif isinstance(event, ev.HypothesisChecked) and event.phase is ev.Phase.DURING and not event.met:
            c.print("  [yellow]! steady state not met during the method[/]")
        elif isinstance(event, ev.FaultInjected):
            lease = f", lease {event.lease_s:g}s" if event.lease_s else ", no lease (heals by itself)"
            c.print(f"  [magenta]⚡[/] {event.driver}.{event.operation} on {escape(event.target)}{lease}")
        elif isinstance(event, ev.FaultReverted):
            ttr = (
                f", recovered in {event.time_to_recover_s:.2f}s"
                if event.time_to_recover_s is not None
                else ""
            )
            ok = "[green]reverted[/]" if event.ok else f"[red]revert failed[/] {escape(event.detail)}"
            c.print(f"  ↺ {event.driver}.{event.operation} {ok} in {event.duration_s:.2f}s{ttr}")
        elif isinstance(event, ev.CleanChecked):
            if event.clean:
                c.print(f"  [green]✓ clean[/] {event.driver} fault {event.fault_id}")
            else:
                c.print(
                    f"  [bold red]✗ NOT CLEAN[/] {event.driver} fault {event.fault_id}: "
                    f"{escape('; '.join(event.residue))}"
                )
        elif isinstance(event, ev.SLOEvaluated):
            self._slo.append(event)
            style = _SLO_STYLE.get(event.verdict, "white")
            c.print(
                f"  SLO {escape(event.objective)} {escape('[' + event.window + ']')} "
                f"[{style}]{event.verdict}[/] {escape(_estimate(event))} (n={event.samples})"
            )
        elif isinstance(event, ev.GuardTripped):
            c.print(f"[bold red]■ guard tripped: {escape(event.reason)} — reverting every fault now[/]")
        elif isinstance(event, ev.Interrupted):
            c.print(f"[bold red]■ {event.signal}: reverting and running rollbacks before exit[/]")
        elif isinstance(event, ev.RunFinished):
            if self._slo:
                c.print(slo_table(self._slo))
            style = _VERDICT_STYLE.get(event.verdict, "bold")
            c.print(
                f"[{style}]verdict: {event.verdict.upper()}[/] (exit {event.exit_code}) — "
                f"{escape(event.reason)} [{event.duration_s:.1f}s]"
            )


_SLO_STYLE = {"pass": "green", "fail": "red", "inconclusive": "magenta"}


def _estimate(e: ev.SLOEvaluated) -> str:
    if e.estimate is None:
        return "—"
    unit = str(e.detail.get("unit", ""))
    if unit == "ms" or unit == "s":
        return f"{e.estimate:.4g}{unit}"
    return f"{e.estimate:.2%}" if 0 <= e.estimate <= 1 else f"{e.estimate:.4g}"


def _bounds(e: ev.SLOEvaluated) -> str:
    if e.lower is None or e.upper is None:
        return "—"
    unit = str(e.detail.get("unit", ""))
    if unit in ("ms", "s"):
        return f"[{e.lower:.4g}{unit}, {e.upper:.4g}{unit}]"
    return f"[{e.lower:.2%}, {e.upper:.2%}]"


def slo_table(results: list[ev.SLOEvaluated]) -> Any:
    from rich.table import Table

    table = Table(title="SLOs", box=None, header_style="bold")
    for col in ("objective", "window", "verdict", "estimate", "95% bounds", "samples", "objective is"):
        table.add_column(col)
    for e in results:
        style = _SLO_STYLE.get(e.verdict, "white")
        table.add_row(
            e.objective,
            e.window,
            f"[{style}]{e.verdict}[/]",
            escape(_estimate(e)),
            escape(_bounds(e)),
            str(e.samples),
            escape(str(e.detail.get("slo", ""))),
        )
    return table


def _tick_line(t: ev.SLITick) -> str:
    parts = [f"{t.rate:.0f} req/s" if t.rate is not None else "— req/s"]
    if t.availability is not None:
        parts.append(f"availability {t.availability:.2%}")
    if t.p50_ms is not None:
        parts.append(f"p50 {t.p50_ms:.1f}ms")
    if t.p99_ms is not None:
        parts.append(f"p99 {t.p99_ms:.1f}ms")
    return ", ".join(parts)
