"""The verdict of a run as a pure fold over its event stream.

The runner subscribes a ``VerdictFold`` to its bus and reports what it folds; the journal
folds the events it collected; ``chaoslab report`` and anything reading ``events.ndjson``
(``chaoslab.engine.journal.verdict_of_log``) fold the log. So two consumers can never
disagree, and the log of a SIGKILLed run still gets a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from chaoslab.engine import events as ev
from chaoslab.verdict import Verdict, worst


class JudgedSLO(Protocol):
    """What an SLO result says (``SLOEvaluated`` events and ``sli.slo.SLOResult`` both do)."""

    @property
    def objective(self) -> str: ...
    @property
    def window(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def estimate(self) -> float | None: ...
    @property
    def samples(self) -> int: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


def slo_note(result: JudgedSLO) -> tuple[Verdict, str] | None:
    """What one SLO result contributes to the verdict; None when it decides nothing
    (it passed, or the objective is not critical: it informs, it does not decide)."""
    if result.detail.get("critical", True) is False:
        return None
    label = f"SLO {result.objective} [{result.window}]"
    if result.verdict == "fail":
        if result.window == "baseline":
            return Verdict.INCONCLUSIVE, f"{label} failed at baseline: the system was not steady"
        unit = str(result.detail.get("unit", ""))
        est = "—" if result.estimate is None else f"{result.estimate:.4g}{unit}"
        return Verdict.DEVIATED, f"{label} failed: {est} against {result.detail.get('slo', '')}"
    if result.verdict == "inconclusive":
        return Verdict.INCONCLUSIVE, f"{label} inconclusive with {result.samples} samples"
    return None


class VerdictFold:
    """The verdict of a run, folded from its events; an event-bus consumer.

    Pure: it reads only the events it is given (``verdict-noted`` findings, whether a
    steady state was judged, faults injected and verified clean, ``run-finished``), so the
    runner, the journal, ``chaoslab report`` and anything reading ``events.ndjson``
    (``chaoslab.engine.journal.verdict_of_log``) compute the same verdict — also for the
    log of a run that was SIGKILLed (no ``run-finished``): faults it injected and never
    verified clean make it NOT CLEAN (``chaoslab recover`` reverts them), otherwise it
    was interrupted.
    """

    def __init__(self) -> None:
        self.notes: list[tuple[Verdict, str]] = []
        self.judged = False
        self.finished = False
        self.injected: dict[str, str] = {}  # fault id -> label
        self.settled: set[str] = set()  # verified clean, or never applied
        self.final: tuple[Verdict, str] | None = None  # what run-finished said

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.VerdictNoted):
            self.notes.append((Verdict(event.verdict), event.reason))
        elif isinstance(event, ev.HypothesisChecked | ev.SLOEvaluated):
            self.judged = True
        elif isinstance(event, ev.FaultInjected):
            self.injected[event.fault_id] = f"{event.driver}.{event.operation} on {event.target}"
        elif isinstance(event, ev.CleanChecked) and event.clean:
            self.settled.add(event.fault_id)
        elif event.kind == "fault-not-applied":
            self.settled.add(str(getattr(event, "fault_id", "")))
        elif isinstance(event, ev.RunFinished):
            self.finished = True
            self.final = (Verdict(event.verdict), event.reason)

    def result(self, *, ended: bool | None = None) -> tuple[Verdict, str]:
        """The verdict and its reason. ``ended`` (default: a ``run-finished`` was seen) says
        the run wound down by itself; the runner passes True just before it emits it.
        Once ``run-finished`` is in the stream, its verdict (this fold, computed by the
        runner) is the answer."""
        if self.final is not None and ended is None:
            return self.final
        notes = list(self.notes)
        if not (self.finished if ended is None else ended):
            left = [label for fid, label in self.injected.items() if fid not in self.settled]
            if left:
                notes.append(
                    (
                        Verdict.NOT_CLEAN,
                        "the run ended without winding down (killed?); never verified clean: "
                        + ", ".join(left)
                        + " (run `chaoslab recover`)",
                    )
                )
            else:
                notes.append((Verdict.INTERRUPTED, "the run ended without winding down (killed?)"))
        if not notes:
            if self.judged:
                return Verdict.PASSED, "the steady state held"
            return Verdict.PASSED, "the method ran; no steady state was checked (no hypothesis probes)"
        verdict = worst(*(v for v, _ in notes))
        reasons = [r for v, r in notes if v is verdict]
        return verdict, "; ".join(dict.fromkeys(reasons))


def fold_verdict(events: Iterable[ev.Event], *, ended: bool | None = None) -> tuple[Verdict, str]:
    """The verdict of a run from its events (see ``VerdictFold``)."""
    fold = VerdictFold()
    for event in events:
        fold(event)
    return fold.result(ended=ended)
