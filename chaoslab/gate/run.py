"""Running a gate: validate, run each experiment in a child, score, compare, decide.

The decision order is in ``chaoslab.gate``'s docstring.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.engine.child import chaoslab_command, run_child, verdict_of_exit
from chaoslab.errors import InvalidInput, Problem
from chaoslab.paths import child_env
from chaoslab.report import baseline as bl
from chaoslab.report.exitcodes import GateExit
from chaoslab.report.gateresult import GateResult, Suite, SuiteEntry, SuiteRun
from chaoslab.report.score import Class, Score, Scored, score
from chaoslab.report.view import JournalError, RunView, load_journal
from chaoslab.units import finite_tree
from chaoslab.verdict import Verdict


class GateInterrupted(Exception):
    """SIGINT/SIGTERM reached the gate (raised by the CLI's signal handler)."""


def validate_all(suite: Suite, home: Path) -> None:
    """Validate every experiment in one child ``chaoslab validate``; raise InvalidInput with its problems."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ended = run_child(
            chaoslab_command("validate", "--output", "json", *(str(e.path) for e in suite.entries)),
            stdout=out,
            stderr=err,
            timeout_s=120,
            grace_s=5,
            env=child_env(home),
        )
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if ended.returncode == 0:
        return
    try:
        doc = json.loads(stdout)
        problems = [
            Problem(**p) if isinstance(p, dict) else Problem(message=str(p)) for p in doc.get("problems", [])
        ]
    except (json.JSONDecodeError, TypeError, AttributeError):
        tail = stderr.strip()[-500:]
        problems = [Problem(message=f"`chaoslab validate` failed ({ended.returncode}): {tail}")]
    raise InvalidInput(problems or [Problem(message="validation failed")])


def run_experiment(entry: SuiteEntry, run_dir: Path, *, timeout_s: float, home: Path) -> SuiteRun:
    """Run one experiment in a child ``chaoslab run`` and read its journal.

    On timeout or interruption the child gets SIGTERM (it reverts everything and writes
    its journal) and up to 60 s to finish before SIGKILL; the ledger recovers after that.
    Its stdout (the JSON result) is kept in ``RUN_DIR/result.json``, its stderr in
    ``RUN_DIR/chaoslab-run.log``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stdout_path = run_dir / "result.json"
    stderr_path = run_dir / "chaoslab-run.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        ended = run_child(
            chaoslab_command("run", "--output", "json", "--run-dir", str(run_dir), str(entry.path)),
            stdout=out,
            stderr=err,
            timeout_s=timeout_s,
            grace_s=60,
            env=child_env(home),
        )
    duration = time.monotonic() - t0
    journal_path = run_dir / "journal.json"
    view: RunView | None = None
    try:
        view = RunView.from_journal(load_journal(journal_path))
    except JournalError:
        view = None
    if ended.timed_out:
        return SuiteRun(
            entry=entry,
            verdict=view.verdict if view else Verdict.ERROR,
            reason=f"timed out after {timeout_s:g} s",
            run_dir=run_dir,
            duration_s=duration,
            view=view,
            journal_path=journal_path if view else None,
            exit_code=ended.returncode,
            infra_error=f"timed out after {timeout_s:g} s",
        )
    if view is None:
        # No journal: invalid input (nothing ran) or a crash of the runner itself.
        verdict = verdict_of_exit(ended.returncode)
        if verdict is not Verdict.INVALID_INPUT:
            verdict = Verdict.ERROR  # whatever it said, without a journal there is nothing to judge
        try:
            reason = str(json.loads(stdout_path.read_text("utf-8", "replace") or "{}").get("problems") or "")
        except (json.JSONDecodeError, AttributeError):
            reason = ""
        tail = stderr_path.read_text("utf-8", "replace").strip()[-400:]
        return SuiteRun(
            entry=entry,
            verdict=verdict,
            reason=reason or f"no journal written (exit {ended.returncode})",
            run_dir=run_dir,
            duration_s=duration,
            exit_code=ended.returncode,
            infra_error=None
            if verdict is Verdict.INVALID_INPUT
            else f"no journal (exit {ended.returncode}): {tail}",
        )
    return SuiteRun(
        entry=entry,
        verdict=view.verdict,
        reason=view.reason,
        run_dir=run_dir,
        duration_s=duration,
        view=view,
        journal_path=journal_path,
        exit_code=ended.returncode,
    )


# --- deciding --------------------------------------------------------------------------------


def invalid_result(suite_name: str, problems: Sequence[str]) -> dict[str, Any]:
    """gate.json for a gate that refused its input: the keys of ``GateResult.to_dict``, nothing run."""
    now = time.time()
    return {
        "suite": suite_name,
        "result": "invalid-input",
        "exit_code": int(GateExit.INVALID_INPUT),
        "reason": "invalid input: " + (problems[0] if problems else "invalid input"),
        "problems": list(problems),
        "score": None,
        "score_range": None,
        "class": None,
        "thresholds": None,
        "baseline": None,
        "experiments": [],
        "started": now,
        "finished": now,
    }


def decide(
    outcomes: Sequence[SuiteRun],
    sc: Score,
    klass: Class,
    comparison: bl.Comparison,
    *,
    require_baseline: bool = False,
    interrupted: bool = False,
) -> tuple[GateExit, str]:
    """The gate's exit and a one-line reason (see the module docstring for the order)."""
    invalid = [o for o in outcomes if o.verdict == "invalid-input"]
    if invalid:
        return GateExit.INVALID_INPUT, "invalid experiment: " + ", ".join(o.entry.name for o in invalid)
    if interrupted:
        return GateExit.INTERRUPTED, "the gate was interrupted"
    infra = [o for o in outcomes if o.infrastructure]
    if infra:
        return GateExit.INFRA_ERROR, "infrastructure: " + "; ".join(
            f"{o.entry.name} {o.verdict}" + (f" ({o.infra_error[:120]})" if o.infra_error else "")
            for o in infra
        )
    key_failed = [o for o in outcomes if o.entry.key and o.failed]
    if key_failed:
        return GateExit.FAIL, "key experiment failed: " + ", ".join(
            f"{o.entry.name} {o.verdict}" for o in key_failed
        )
    if klass is Class.FAIL:
        return GateExit.FAIL, f"score {sc.value:g} is below the warn threshold"
    if comparison.regressed:
        return GateExit.REGRESSION, "; ".join(r.message for r in comparison.regressions[:3])
    key_unsure = [o for o in outcomes if o.entry.key and o.verdict == "inconclusive"]
    if key_unsure:
        return GateExit.INCONCLUSIVE, "key experiment inconclusive: " + ", ".join(
            o.entry.name for o in key_unsure
        )
    if klass is Class.INCONCLUSIVE:
        return GateExit.INCONCLUSIVE, (
            f"score {sc.value:g} (range {sc.low:g}–{sc.high:g}): the inconclusive runs decide the outcome"
        )
    if require_baseline and comparison.status == "no-baseline":
        return GateExit.INCONCLUSIVE, "no baseline to compare with (--require-baseline)"
    suffix = " (no baseline to compare with)" if comparison.status == "no-baseline" else ""
    if klass is Class.WARN:
        return GateExit.WARNING, f"score {sc.value:g} is below the pass threshold{suffix}"
    return GateExit.PASS, f"score {sc.value:g}{suffix}"


def snapshot_of(suite: Suite, outcomes: Sequence[SuiteRun], sc: Score, label: str = "") -> bl.Snapshot:
    exps = {}
    for o in outcomes:
        points = {}
        for r in o.view.slo if o.view else ():
            if r.estimate is not None:
                points[r.key] = bl.SLIPoint(estimate=r.estimate, unit=r.unit, better=r.better)
        exps[o.entry.name] = bl.ExperimentSnapshot(
            verdict=o.verdict, weight=o.entry.weight, key=o.entry.key, sli=points
        )
    return bl.Snapshot(suite=suite.name, score=sc.value, created=bl.now_iso(), experiments=exps, label=label)


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    output_dir: Path
    home: Path  # chaoslab's home, whose store keeps the baseline (``chaoslab gate`` passes it)
    baseline_path: Path | None = None  # None: chaoslab's store
    update_baseline: bool = True
    require_baseline: bool = False
    timeout_s: float = 1800.0
    label: str = ""
    validate: bool = True


def run_gate(
    suite: Suite,
    options: GateOptions,
    *,
    progress: Callable[[str], None] | None = None,
) -> GateResult:
    """Validate, run every experiment in order, score, compare, decide; write nothing but runs.

    Raises ``InvalidInput`` (suite/experiments/baseline wrong, nothing run). Reports are
    written by the caller (``write_outputs``), so they are written even on interruption.
    """
    say = progress or (lambda _msg: None)
    baseline_path = options.baseline_path or bl.store_path(suite.name, options.home)
    stored = bl.load(baseline_path)  # a corrupt baseline is invalid input, before anything runs
    if options.validate:
        validate_all(suite, options.home)
    started = time.time()
    outcomes: list[SuiteRun] = []
    interrupted = False
    total = len(suite.entries)
    for i, entry in enumerate(suite.entries, 1):
        run_dir = options.output_dir / "runs" / f"{i:02d}-{entry.name}"
        say(
            f"[{i}/{total}] {entry.name} ({entry.path.name}, weight {entry.weight:g}"
            f"{', key' if entry.key else ''}) …"
        )
        try:
            outcome = run_experiment(entry, run_dir, timeout_s=options.timeout_s, home=options.home)
        except (KeyboardInterrupt, GateInterrupted):
            interrupted = True
            # The run reverted and wrote its journal on SIGTERM: keep what it measured.
            try:
                view: RunView | None = RunView.from_journal(load_journal(run_dir / "journal.json"))
            except JournalError:
                view = None
            outcome = SuiteRun(
                entry=entry,
                verdict=Verdict.INTERRUPTED,
                reason="the gate was interrupted",
                run_dir=run_dir,
                duration_s=0.0,
                view=view,
            )
            outcomes.append(outcome)
            break
        outcomes.append(outcome)
        say(f"[{i}/{total}] {entry.name}: {outcome.verdict} ({outcome.duration_s:.1f} s) {outcome.reason}")
    # Entries never reached count as interrupted (no credit) so the score is not inflated.
    for entry in suite.entries[len(outcomes) :]:
        outcomes.append(
            SuiteRun(
                entry=entry,
                verdict=Verdict.INTERRUPTED,
                reason="not run",
                run_dir=options.output_dir,
                duration_s=0.0,
            )
        )
    sc = score([Scored(name=o.entry.name, weight=o.entry.weight, verdict=o.verdict) for o in outcomes])
    klass = sc.classify(suite.thresholds)
    snap = snapshot_of(suite, outcomes, sc, options.label)
    comparison = bl.compare(snap, stored, suite.tolerance, source=str(baseline_path))
    exit_, reason = decide(
        outcomes, sc, klass, comparison, require_baseline=options.require_baseline, interrupted=interrupted
    )
    updated = False
    if exit_ is GateExit.PASS and options.update_baseline:
        bl.save(baseline_path, snap)
        updated = True
    return GateResult(
        suite=suite,
        outcomes=tuple(outcomes),
        score=sc,
        klass=klass,
        comparison=comparison,
        exit=exit_,
        reason=reason,
        started=started,
        finished=time.time(),
        output_dir=options.output_dir,
        snapshot=snap,
        baseline_updated=updated,
    )


def write_outputs(result: GateResult, *, junit_path: Path, summary_path: Path) -> dict[str, Path]:
    """JUnit, Markdown summary, gate.json and one HTML report per run. Always called."""
    from chaoslab.report.html import render_html
    from chaoslab.report.junit import gate_junit, write_junit
    from chaoslab.report.summary import gate_summary

    written: dict[str, Path] = {}
    result.output_dir.mkdir(parents=True, exist_ok=True)
    write_junit(gate_junit(result), junit_path)
    written["junit"] = junit_path
    summary = gate_summary(result)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(summary, "utf-8")
    written["summary"] = summary_path
    # GitHub Actions shows this file on the run's page; append, as other steps may write too.
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(summary + "\n")
    gate_json = result.output_dir / "gate.json"
    gate_json.write_text(json.dumps(finite_tree(result.to_dict()), indent=2, allow_nan=False), "utf-8")
    written["json"] = gate_json
    for o in result.outcomes:
        if o.view is not None:
            page = o.run_dir / "report.html"
            page.write_text(render_html(o.view), "utf-8")
    return written
