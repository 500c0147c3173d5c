"""``chaoslab gameday run SCENARIO``: a facilitated game day.

The facilitator sees the plan (every step, its experiment's title and description),
the gates' answers, then each step as it runs (the run's live progress on the terminal).
With ``--confirm`` the tool waits before each step for a line on stdin: ``y`` runs it,
``s`` skips it, ``q`` ends the game day. The runs are recorded in the schedule store's
history like scheduled slots, and a Markdown summary is written at the end (and printed).

Ctrl-C or SIGTERM stops the running step the engine's way: it reverts and writes its
journal; the summary still gets written.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

from chaoslab.errors import ChaoslabError
from chaoslab.scheduler.checks import CheckContext, CheckResult, first_refusal
from chaoslab.scheduler.runs import StepPlan, StepResult, overall, run_step, step_dir
from chaoslab.scheduler.scenario import Scenario
from chaoslab.scheduler.store import SlotRecord, SlotStatus, Store, Update
from chaoslab.scheduler.triggers import slot_key
from chaoslab.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class GamedayResult:
    scenario: str
    slot: str
    started: datetime
    finished: datetime
    gates: tuple[CheckResult, ...]
    refused: CheckResult | None
    results: tuple[StepResult, ...]
    skipped: tuple[str, ...] = ()
    quit_early: bool = False
    report_path: Path | None = None
    steps: tuple[StepPlan, ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        if self.refused is not None:
            return Verdict.ABORTED
        return overall(self.results)


def experiment_title(path: Path) -> tuple[str, str]:
    """Title and description of an experiment file (best effort, for the plan)."""
    from chaoslab.errors import InvalidInput
    from chaoslab.model.reader import load_document

    try:
        data = load_document(path).data
    except InvalidInput:
        return path.name, ""
    if not isinstance(data, dict):
        return path.name, ""
    return str(data.get("title") or path.name).strip(), " ".join(str(data.get("description") or "").split())


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_gameday(
    scenario: Scenario,
    *,
    store: Store,
    runs_root: Path,
    out: TextIO,
    confirm: bool = False,
    ask: Callable[[str], str] | None = None,
    check_gates: bool = True,
    home: Path,
) -> GamedayResult:
    """Run ``scenario``'s steps now, in order, facilitated. See the module docstring.
    ``home``: chaoslab's home (checks, and the steps' runs)."""
    if scenario.monkey is not None:
        raise ValueError(f"{scenario.name} is a monkey scenario; game days run step scenarios")
    started = datetime.now(UTC).replace(microsecond=0)
    slot = slot_key(started)
    root = runs_root / scenario.name / ("gameday-" + slot.replace("-", "").replace(":", ""))
    steps = tuple(
        StepPlan(
            name=s.name,
            experiment=s.experiment,
            vars=s.vars,
            continue_on=s.continue_on,
            timeout_s=s.timeout_s,
        )
        for s in scenario.steps
    )
    say = _printer(out)
    say(f"# Game day: {scenario.name}")
    if scenario.description:
        say(scenario.description)
    say(f"{len(steps)} step(s):")
    for i, st in enumerate(steps, 1):
        title, desc = experiment_title(st.experiment)
        say(f"  {i}. {st.name}: {title}" + (f" — {desc}" if desc else ""))
    gates: list[CheckResult] = []
    refused: CheckResult | None = None
    if check_gates:
        ctx = CheckContext(
            scenario=scenario.name, slot=started, now=started, targets=scenario.lock_targets(), home=home
        )
        refused, gates = first_refusal(scenario.gates(), ctx)
        for g in gates:
            say(f"gate {g.line()}")
    token = uuid.uuid4().hex
    rec = SlotRecord(
        scenario=scenario.name,
        slot=slot,
        run_at=slot,
        kind="gameday",
        status=(SlotStatus.REFUSED if refused else SlotStatus.RUNNING).value,
        scheduler=f"gameday:{uuid.uuid4().hex[:8]}",
        token=token,
        claimed_at=time.time(),
        updated_at=time.time(),
        finished_at=time.time() if refused else None,
        run_dir=str(root),
        detail=refused.line() if refused else "facilitated game day",
    )
    recorded = store.insert(rec)
    results: list[StepResult] = []
    skipped: list[str] = []
    quit_early = False
    stop = threading.Event()
    if refused is None:
        ask = ask or (lambda prompt: _ask_stdin(prompt, out))
        with _stop_on_signals(stop):
            for i, st in enumerate(steps):
                if stop.is_set():
                    break
                say(f"\n## Step {i + 1}/{len(steps)}: {st.name}")
                if confirm:
                    answer = ask(f"Run step {i + 1} ({st.name})? [y]es / [s]kip / [q]uit: ").strip().lower()
                    if answer.startswith("q"):
                        quit_early = True
                        break
                    if answer.startswith("s"):
                        skipped.append(st.name)
                        say("skipped by the facilitator")
                        continue
                step_result = run_step(st, step_dir(root, i, st), stop=stop, stream_stderr=True, home=home)
                results.append(step_result)
                say(
                    f"→ {step_result.verdict} (exit {step_result.exit_code})"
                    + (f": {step_result.reason}" if step_result.reason else "")
                )
                if recorded:
                    store.update(
                        scenario.name, slot, token, Update(steps=json.dumps([r.to_dict() for r in results]))
                    )
                if step_result.verdict not in st.continue_on:
                    say(
                        f"stopping: {st.name} ended {step_result.verdict}, continuing only on "
                        f"{', '.join(sorted(st.continue_on)) or 'nothing'}"
                    )
                    break
    finished = datetime.now(UTC).replace(microsecond=0)
    result = GamedayResult(
        scenario=scenario.name,
        slot=slot,
        started=started,
        finished=finished,
        gates=tuple(gates),
        refused=refused,
        results=tuple(results),
        skipped=tuple(skipped),
        quit_early=quit_early or stop.is_set(),
        steps=steps,
    )
    if recorded and refused is None:
        v = result.verdict if results else Verdict.INTERRUPTED if result.quit_early else Verdict.PASSED
        store.update(
            scenario.name,
            slot,
            token,
            Update(
                status=(SlotStatus.INTERRUPTED if stop.is_set() else SlotStatus.FINISHED).value,
                verdict=v.value,
                exit_code=int(v.exit_code),
                finished_at=time.time(),
                steps=json.dumps([r.to_dict() for r in results]),
            ),
        )
    root.mkdir(parents=True, exist_ok=True)
    report = root / "gameday.md"
    report.write_text(summary_markdown(result), "utf-8")
    say(f"\nsummary: {report}")
    return GamedayResult(**{**result.__dict__, "report_path": report})


def summary_markdown(result: GamedayResult) -> str:
    """The Markdown summary of a game day: gates, every step's verdict, links to journals."""
    lines = [
        f"# Game day summary: {result.scenario}",
        "",
        f"- **Verdict:** {result.verdict.value}",
        f"- **Started:** {result.started.isoformat()}  **Finished:** {result.finished.isoformat()}",
        f"- **Steps run:** {len(result.results)} of {len(result.steps)}",
    ]
    if result.skipped:
        lines.append(f"- **Skipped by the facilitator:** {', '.join(result.skipped)}")
    if result.quit_early:
        lines.append("- **Ended early** by the facilitator or a signal")
    if result.gates:
        lines += ["", "## Gates", ""]
        lines += [f"- {'✅' if g.ok else '⛔'} {g.line()}" for g in result.gates]
    if result.refused is not None:
        lines += ["", f"Nothing ran: {result.refused.line()}"]
    if result.results:
        lines += [
            "",
            "## Steps",
            "",
            "| # | step | verdict | exit | duration | reason | journal |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(result.results, 1):
            dur = f"{r.duration_s:.1f}s" if isinstance(r.duration_s, int | float) else "—"
            reason = (r.reason or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {i} | {r.name} | {r.verdict} | {r.exit_code} | {dur} | {reason}"
                f" | `{r.run_dir}/journal.json` |"
            )
        lines += _report_sections(result)
    return "\n".join(lines) + "\n"


def _report_sections(result: GamedayResult) -> list[str]:
    """Each step's CI summary from ``chaoslab.report`` (journal → Markdown), when installed."""
    try:
        from chaoslab.report.summary import run_summary
        from chaoslab.report.view import RunView
    except ImportError:
        return []
    out: list[str] = []
    for r in result.results:
        journal = Path(r.run_dir) / "journal.json"
        try:
            view = RunView.from_journal(json.loads(journal.read_text("utf-8")))
        except (OSError, ValueError, ChaoslabError):
            continue  # no journal (the run failed before its engine started): the table says why
        out += ["", f"## Step {r.name}", "", run_summary(view).strip()]
    return out


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    return say


def _ask_stdin(prompt: str, out: TextIO) -> str:
    import sys

    out.write(prompt)
    out.flush()
    line = sys.stdin.readline()
    return line if line else "q"  # end of input: stop rather than run unconfirmed steps
