"""Live console progress: a consumer of the event stream, rendered with rich."""

from __future__ import annotations

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
    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: ev.Event) -> None:
        c = self.console
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
                tol = " [green](within tolerance)[/]" if event.tolerance_met else " [red](outside tolerance)[/]"
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
            ttr = f", recovered in {event.time_to_recover_s:.2f}s" if event.time_to_recover_s is not None else ""
            ok = "[green]reverted[/]" if event.ok else f"[red]revert failed[/] {escape(event.detail)}"
            c.print(f"  ↺ {event.driver}.{event.operation} {ok} in {event.duration_s:.2f}s{ttr}")
        elif isinstance(event, ev.CleanChecked):
            if event.clean:
                c.print(f"  [green]✓ clean[/] {event.driver} fault {event.fault_id}")
            else:
                c.print(f"  [bold red]✗ NOT CLEAN[/] {event.driver} fault {event.fault_id}: "
                        f"{escape('; '.join(event.residue))}")
        elif isinstance(event, ev.SLOEvaluated):
            style = {"pass": "green", "fail": "red", "inconclusive": "magenta"}.get(event.verdict, "white")
            est = "—" if event.estimate is None else f"{event.estimate:.4g}"
            c.print(f"  SLO {escape(event.objective)} [{event.window}] [{style}]{event.verdict}[/] "
                    f"estimate {est} (n={event.samples})")
        elif isinstance(event, ev.GuardTripped):
            c.print(f"[bold red]■ guard tripped: {escape(event.reason)} — reverting every fault now[/]")
        elif isinstance(event, ev.Interrupted):
            c.print(f"[bold red]■ {event.signal}: reverting and running rollbacks before exit[/]")
        elif isinstance(event, ev.RunFinished):
            style = _VERDICT_STYLE.get(event.verdict, "bold")
            c.print(f"[{style}]verdict: {event.verdict.upper()}[/] (exit {event.exit_code}) — "
                    f"{escape(event.reason)} [{event.duration_s:.1f}s]")
