"""Live console progress: a consumer of the event stream.

``ConsoleProgress`` turns events into lines made of styled spans; a sink prints them. On a
terminal the sink is rich (colour, tables); into a pipe or a CI log, where rich would
print the same characters without colour anyway, a plain sink writes them directly and
rich is never imported (it is a third of a short run's start-up). ``FORCE_COLOR`` asks
for rich anyway, as it does for rich itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Any, Protocol

from chaoslab.engine import events as ev
from chaoslab.engine.journal import guard_timing

Span = str | tuple[str, str]  # plain text, or (text, rich style)
"""One piece of a console line."""


class Sink(Protocol):
    def line(self, *spans: Span) -> None: ...

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Span]]) -> None: ...


class PlainSink:
    """Text without styles, for pipes and logs."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def line(self, *spans: Span) -> None:
        self.stream.write(_text(spans) + "\n")
        self.stream.flush()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Span]]) -> None:
        cells = [list(columns), *([_text([c]) for c in row] for row in rows)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        out = [title.center(sum(widths) + len(widths) - 1).rstrip()]
        out += [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()


class RichSink:
    """Colour and tables on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console

        self.console = Console(file=stream, highlight=False)

    def line(self, *spans: Span) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(*spans))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Span]]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(*columns, title=title, box=None, header_style="bold")
        for row in rows:
            table.add_row(*(Text.assemble(c) for c in row))
        self.console.print(table)


def sink_for(stream: IO[str]) -> Sink:
    """Rich on a terminal (or with FORCE_COLOR), plain text elsewhere."""
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("FORCE_COLOR") or (isatty is not None and isatty()):
        return RichSink(stream)
    return PlainSink(stream)


def _text(spans: Sequence[Span]) -> str:
    return "".join(s if isinstance(s, str) else s[0] for s in spans)


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

_MARKS = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "timed-out": ("⏱", "red"),
    "abandoned": ("⏹", "red"),
}


class ConsoleProgress:
    """Prints the run as it happens. Live SLI values every ``tick_every`` seconds."""

    def __init__(self, sink: Sink, tick_every: int = 2) -> None:
        self.sink = sink
        self.tick_every = tick_every
        self._ticks = 0
        self._slo: list[ev.SLOEvaluated] = []
        self._phases: set[ev.Phase] = set()
        self._guard: list[ev.Event] = []  # what guard_timing folds

    def __call__(self, event: ev.Event) -> None:
        out = self.sink.line
        if isinstance(event, ev.GuardStopped | ev.CleanChecked):
            self._guard.append(event)
        if isinstance(event, ev.SLITick):
            self._ticks += 1
            if self._ticks % self.tick_every == 0:
                out(("  · " + _tick_line(event), "dim"))
            return
        if isinstance(event, ev.PhaseStarted):
            if event.phase in self._phases and event.phase is not ev.Phase.REVERT:
                return
            self._phases.add(event.phase)
        if isinstance(event, ev.RunStarted):
            out(("chaoslab", "bold"), " run ", (event.run_id, "cyan"), f": {event.title}")
        elif isinstance(event, ev.PhaseStarted) and event.phase in _PHASE_TITLES:
            out((f"▸ {_PHASE_TITLES[event.phase]}", "bold blue"))
        elif isinstance(event, ev.ActivityFinished):
            if event.phase is ev.Phase.DURING:
                return
            mark = _MARKS.get(event.status, ("?", ""))
            if event.tolerance_met is False:
                # The probe ran, but its value missed the tolerance: that is not a tick.
                mark = _MARKS["failed"]
            tol: Span = ""
            if event.tolerance_met is not None:
                tol = (
                    (" (within tolerance)", "green")
                    if event.tolerance_met
                    else (" (outside tolerance)", "red")
                )
            took = event.end - event.start
            out("  ", mark, f" {event.activity_type} ", (event.name, "bold"), f" {took:.2f}s", tol)
            if event.error:
                out(("      " + event.error.splitlines()[-1][:300], "red"))
        elif isinstance(event, ev.HypothesisChecked) and event.phase is ev.Phase.DURING and not event.met:
            out(("  ! steady state not met during the method", "yellow"))
        elif isinstance(event, ev.FaultInjected):
            lease = f", lease {event.lease_s:g}s" if event.lease_s else ", no lease (heals by itself)"
            out("  ", ("⚡", "magenta"), f" {event.driver}.{event.operation} on {event.target}{lease}")
            if event.picked:
                out(f"      picked {len(event.picked)}: {', '.join(event.picked)}")
        elif isinstance(event, ev.FaultReverted):
            ttr = (
                f", recovered in {event.time_to_recover_s:.2f}s"
                if event.time_to_recover_s is not None
                else ""
            )
            result: tuple[Span, ...] = (
                (("reverted", "green"),) if event.ok else (("revert failed", "red"), f" {event.detail}")
            )
            out(f"  ↺ {event.driver}.{event.operation} ", *result, f" in {event.duration_s:.2f}s{ttr}")
        elif isinstance(event, ev.CleanChecked):
            if event.clean:
                out("  ", ("✓ clean", "green"), f" {event.driver} fault {event.fault_id}")
            else:
                out(
                    "  ",
                    ("✗ NOT CLEAN", "bold red"),
                    f" {event.driver} fault {event.fault_id}: {'; '.join(event.residue)}",
                )
        elif isinstance(event, ev.SLOEvaluated):
            self._slo.append(event)
            out(
                f"  SLO {event.objective} [{event.window}] ",
                (event.verdict, _SLO_STYLE.get(event.verdict, "white")),
                f" {_estimate(event)} (n={event.samples})",
                *(() if event.detail.get("critical", True) else ((" non-critical", "dim"),)),
            )
        elif isinstance(event, ev.GuardTripped):
            out((f"■ guard tripped: {event.reason} — reverting every fault now", "bold red"))
        elif isinstance(event, ev.GuardArmed):
            out(("  guard: ", "dim"), (guard_armed_line(event.test), "dim"))
        elif isinstance(event, ev.ControlFailed):
            out((f"  ! control {event.control}.{event.hook} failed: {event.error[:300]}", "yellow"))
        elif isinstance(event, ev.Interrupted):
            out((f"■ {event.signal}: reverting and running rollbacks before exit", "bold red"))
        elif isinstance(event, ev.RunFinished):
            if self._slo:
                slo_table(self.sink, self._slo)
            timing = guard_timing(self._guard)
            if timing is not None:
                out(("guard: ", "bold"), guard_timing_line(timing))
            out(
                (f"verdict: {event.verdict.upper()}", _VERDICT_STYLE.get(event.verdict, "bold")),
                f" (exit {event.exit_code}) — {event.reason} [{event.duration_s:.1f}s]",
            )


def guard_armed_line(test: Mapping[str, Any]) -> str:
    if test.get("test") is None:
        return "fixed limits only (no sequential test)"
    return f"{test['test']}, tolerated rate {test['tolerated_rate']:.3g}, false-abort risk {test['risk']:g}"


def guard_timing_line(t: Mapping[str, Any]) -> str:
    """One line: onset → detect → clean (every run with a guard)."""
    if t.get("onset_ts") is None:
        return f"no bad request among {t.get('requests', 0)} while faults were active" + (
            f"; tripped: {t['reason']}" if t.get("tripped") else ""
        )
    detect = t.get("time_to_detect_s")
    clean = t.get("time_to_clean_s")
    parts = [f"{t.get('bad', 0)} of {t.get('requests', 0)} requests bad"]
    parts.append(f"onset → detected {detect * 1000:.0f} ms" if detect is not None else "onset → not tripped")
    parts.append(f"onset → clean {clean * 1000:.0f} ms" if clean is not None else "clean: not verified")
    return "; ".join(parts)


_SLO_STYLE = {"pass": "green", "fail": "red", "inconclusive": "magenta"}


def _estimate(e: ev.SLOEvaluated) -> str:
    if e.estimate is None:
        return "—"
    unit = str(e.detail.get("unit", ""))
    return _value(e.estimate, unit)


def _value(x: float, unit: str) -> str:
    if unit == "ms" or unit == "s":
        return f"{x:.4g}{unit}"
    if unit == "×":  # a latency ratio against the baseline
        return f"{x:.3g}×"
    if unit == "Δ":  # a change of a ratio against the baseline
        return f"{x:+.2%}"
    return f"{x:.2%}" if 0 <= x <= 1 else f"{x:.4g}"


def _bounds(e: ev.SLOEvaluated) -> str:
    if e.lower is None or e.upper is None:
        return "—"
    unit = str(e.detail.get("unit", ""))
    return f"[{_value(e.lower, unit)}, {_value(e.upper, unit)}]"


def slo_table(sink: Sink, results: Sequence[ev.SLOEvaluated]) -> None:
    sink.table(
        "SLOs",
        ("objective", "window", "verdict", "estimate", "95% bounds", "samples", "objective is"),
        [
            (
                e.objective,
                e.window,
                (e.verdict, _SLO_STYLE.get(e.verdict, "white")),
                _estimate(e),
                _bounds(e),
                str(e.samples),
                str(e.detail.get("slo", "")) + ("" if e.detail.get("critical", True) else " (non-critical)"),
            )
            for e in results
        ],
    )


def _tick_line(t: ev.SLITick) -> str:
    parts = [f"{t.rate:.0f} req/s" if t.rate is not None else "— req/s"]
    if t.availability is not None:
        parts.append(f"availability {t.availability:.2%}")
    if t.p50_ms is not None:
        parts.append(f"p50 {t.p50_ms:.1f}ms")
    if t.p99_ms is not None:
        parts.append(f"p99 {t.p99_ms:.1f}ms")
    return ", ".join(parts)
