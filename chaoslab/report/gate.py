"""The resilience gate: run a suite of experiments, score it, compare it, decide.

A suite file (YAML or JSON)::

    name: checkout-resilience
    experiments:
      - {path: experiments/replica-kill.yaml, weight: 3, key: true}
      - {path: experiments/slow-replica.yaml, weight: 1, name: slow-replica}
    thresholds: {pass: 90, warn: 70}
    tolerance: {score: 5, ratio: 0.01, latency: 0.25, latency_ms: 10, ttr_s: 2}

Paths are relative to the suite file. Experiments run one after the other, each in its
own ``chaoslab run`` subprocess (``[sys.executable, -m, chaoslab.cli, run, --output,
json, --run-dir, DIR, PATH]``): a crash, a leak or a signal in one run cannot corrupt the
gate or the next run, and each run keeps its own journal the gate then reads. Before
anything runs, every experiment is validated (one ``chaoslab validate`` subprocess): a
typo fails the gate as invalid input with nothing run.

Decision (``GateExit``; the first that applies wins)::

    2   invalid input   the suite, an experiment or the baseline file is wrong
    130 interrupted     SIGINT/SIGTERM stopped the gate (the running experiment reverted)
    5   infra error     a run errored, crashed, timed out, or left a fault NOT CLEAN
    1   fail            a key experiment deviated or was aborted, or the score is in the
                        fail class (see ``chaoslab.report.score``)
    3   regression      the score dropped, or an SLI worsened, beyond the tolerance
                        compared with the last passing gate
    4   inconclusive    a key experiment was inconclusive, the inconclusive runs decide
                        the class, or ``--require-baseline`` and there is none
    10  warning         the score is in the warn class
    0   pass

With no baseline the comparison reads "no baseline" everywhere (console, JUnit, summary);
it is never reported as a pass by comparison. Only a passing gate (exit 0) becomes the
new baseline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import InvalidInput, Problem
from chaoslab.report import baseline as bl
from chaoslab.report.exitcodes import GateExit as GateExit  # re-exported: callers import it from here
from chaoslab.report.score import FAILED, INFRASTRUCTURE, Class, Score, Scored, Thresholds, score
from chaoslab.report.view import JournalError, RunView, load_journal


class GateInterrupted(Exception):
    """SIGINT/SIGTERM reached the gate (raised by the CLI's signal handler)."""


@dataclass(frozen=True, kw_only=True)
class SuiteEntry:
    path: Path
    name: str
    weight: float = 1.0
    key: bool = False


@dataclass(frozen=True, kw_only=True)
class Suite:
    name: str
    entries: tuple[SuiteEntry, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
    tolerance: bl.Tolerance = field(default_factory=bl.Tolerance)
    source: str | None = None


def _unique_names(entries: list[SuiteEntry], file: str | None) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for i, e in enumerate(entries):
        if e.name in seen:
            problems.append(
                Problem(
                    file=file,
                    path=f"experiments[{i}].name",
                    message=f"duplicate name {e.name!r}",
                    hint="give each entry a distinct `name:`; the baseline is keyed by it",
                )
            )
        seen.add(e.name)
    return problems


def _thresholds(raw: Any, file: str | None) -> Thresholds:
    if raw is None:
        return Thresholds()
    if not isinstance(raw, Mapping):
        raise InvalidInput([Problem(file=file, path="thresholds", message="expected {pass: 90, warn: 70}")])
    problems = []
    values: dict[str, float] = {}
    for key in raw:
        if key not in ("pass", "warn"):
            problems.append(
                Problem(
                    file=file,
                    path=f"thresholds.{key}",
                    message=f"unknown threshold {key!r}",
                    hint="pass, warn",
                )
            )
            continue
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 100:
            problems.append(
                Problem(file=file, path=f"thresholds.{key}", message=f"expected 0..100, got {v!r}")
            )
        else:
            values[key] = float(v)
    if problems:
        raise InvalidInput(problems)
    try:
        return Thresholds(pass_at=values.get("pass", 90.0), warn_at=values.get("warn", 70.0))
    except ValueError as exc:
        raise InvalidInput([Problem(file=file, path="thresholds", message=str(exc))]) from exc


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is reported with its field path."""
    from chaoslab.model.reader import load_document

    p = Path(path)
    document = load_document(str(p))
    doc = document.data
    file = str(p)
    if not isinstance(doc, Mapping):
        raise InvalidInput([Problem(file=file, message="a suite is a mapping with name and experiments")])
    problems: list[Problem] = []
    for key in doc:
        if key not in ("name", "experiments", "thresholds", "tolerance", "description"):
            problems.append(
                Problem(
                    file=file,
                    path=str(key),
                    message=f"unknown field {key!r}",
                    hint="name, experiments, thresholds, tolerance, description",
                )
            )
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(
            Problem(file=file, path="name", message="the suite needs a name (the baseline is kept by it)")
        )
    raw_entries = doc.get("experiments")
    entries: list[SuiteEntry] = []
    if not isinstance(raw_entries, list) or not raw_entries:
        problems.append(
            Problem(file=file, path="experiments", message="expected a non-empty list of experiments")
        )
        raw_entries = []
    for i, e in enumerate(raw_entries):
        where = f"experiments[{i}]"
        if isinstance(e, str):
            e = {"path": e}
        if not isinstance(e, Mapping) or not isinstance(e.get("path"), str):
            problems.append(
                Problem(file=file, path=where, message="expected {path: FILE, weight: 1, key: false}")
            )
            continue
        for key in e:
            if key not in ("path", "weight", "key", "name"):
                problems.append(
                    Problem(
                        file=file,
                        path=f"{where}.{key}",
                        message=f"unknown field {key!r}",
                        hint="path, weight, key, name",
                    )
                )
        weight = e.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            problems.append(
                Problem(
                    file=file, path=f"{where}.weight", message=f"expected a positive number, got {weight!r}"
                )
            )
            weight = 1
        key = e.get("key", False)
        if not isinstance(key, bool):
            problems.append(Problem(file=file, path=f"{where}.key", message="expected true or false"))
            key = False
        exp_path = (p.parent / e["path"]).resolve()
        if not exp_path.is_file():
            problems.append(
                Problem(file=file, path=f"{where}.path", message=f"no such experiment file: {exp_path}")
            )
        entry_name = e.get("name", Path(e["path"]).stem)
        entries.append(SuiteEntry(path=exp_path, name=str(entry_name), weight=float(weight), key=key))
    problems += _unique_names(entries, file)
    thresholds = tolerance = None
    try:
        thresholds = _thresholds(doc.get("thresholds"), file)
    except InvalidInput as exc:
        problems += exc.problems
    try:
        tolerance = bl.Tolerance.parse(doc.get("tolerance"), file=file)
    except InvalidInput as exc:
        problems += exc.problems
    if problems or thresholds is None or tolerance is None:
        raise InvalidInput(
            [msgspec.structs.replace(q, line=q.line or document.line(q.path)) for q in problems]
        )
    return Suite(
        name=str(name), entries=tuple(entries), thresholds=thresholds, tolerance=tolerance, source=file
    )


def suite_from_paths(
    paths: Sequence[str], *, name: str, thresholds: Thresholds, tolerance: bl.Tolerance
) -> Suite:
    """An ad-hoc suite from command-line paths: weight 1 each, none key."""
    problems = [Problem(file=p, message="no such experiment file") for p in paths if not Path(p).is_file()]
    entries = [SuiteEntry(path=Path(p).resolve(), name=Path(p).stem) for p in paths]
    problems += _unique_names(entries, None)
    if problems:
        raise InvalidInput(problems)
    return Suite(name=name, entries=tuple(entries), thresholds=thresholds, tolerance=tolerance)


# --- running -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One experiment's result in the gate."""

    entry: SuiteEntry
    verdict: str
    reason: str
    run_dir: Path
    duration_s: float
    view: RunView | None = None
    journal_path: Path | None = None
    exit_code: int | None = None
    infra_error: str | None = None  # the run could not be read at all (crash, timeout)

    @property
    def failed(self) -> bool:
        return self.verdict in FAILED

    @property
    def infrastructure(self) -> bool:
        return self.infra_error is not None or self.verdict in INFRASTRUCTURE


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chaoslab.cli", *args]


def validate_all(suite: Suite) -> None:
    """Validate every experiment in one subprocess; raise InvalidInput with its problems."""
    proc = subprocess.run(
        _cli("validate", "--output", "json", *(str(e.path) for e in suite.entries)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 0:
        return
    try:
        doc = json.loads(proc.stdout)
        problems = [
            Problem(**p) if isinstance(p, dict) else Problem(message=str(p)) for p in doc.get("problems", [])
        ]
    except (json.JSONDecodeError, TypeError, AttributeError):
        problems = [
            Problem(message=f"`chaoslab validate` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        ]
    raise InvalidInput(problems or [Problem(message="validation failed")])


def run_experiment(entry: SuiteEntry, run_dir: Path, *, timeout_s: float) -> Outcome:
    """Run one experiment in a subprocess and read its journal.

    On timeout or interruption the child gets SIGTERM (it reverts everything and writes
    its journal) and up to 60 s to finish before SIGKILL; the ledger recovers after that.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stderr_path = run_dir / "chaoslab-run.log"
    with stderr_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            _cli("run", "--output", "json", "--run-dir", str(run_dir), str(entry.path)),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        timed_out = False
        try:
            try:
                stdout, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                stdout = _stop(proc)
        except BaseException:
            _stop(proc)
            raise
    duration = time.monotonic() - t0
    journal_path = run_dir / "journal.json"
    view: RunView | None = None
    try:
        view = RunView.from_journal(load_journal(journal_path))
    except JournalError:
        view = None
    if timed_out:
        return Outcome(
            entry=entry,
            verdict=view.verdict if view else "error",
            reason=f"timed out after {timeout_s:g} s",
            run_dir=run_dir,
            duration_s=duration,
            view=view,
            journal_path=journal_path if view else None,
            exit_code=proc.returncode,
            infra_error=f"timed out after {timeout_s:g} s",
        )
    if view is None:
        # No journal: invalid input (nothing ran) or a crash of the runner itself.
        verdict = "invalid-input" if proc.returncode == 2 else "error"
        try:
            reason = str(json.loads(stdout or "{}").get("problems") or "")
        except (json.JSONDecodeError, AttributeError):
            reason = ""
        tail = stderr_path.read_text("utf-8", "replace").strip()[-400:]
        return Outcome(
            entry=entry,
            verdict=verdict,
            reason=reason or f"no journal written (exit {proc.returncode})",
            run_dir=run_dir,
            duration_s=duration,
            exit_code=proc.returncode,
            infra_error=None
            if verdict == "invalid-input"
            else f"no journal (exit {proc.returncode}): {tail}",
        )
    return Outcome(
        entry=entry,
        verdict=view.verdict,
        reason=view.reason,
        run_dir=run_dir,
        duration_s=duration,
        view=view,
        journal_path=journal_path,
        exit_code=proc.returncode,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the run (it reverts), give it 60 s, then SIGKILL. Returns what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


# --- deciding --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GateResult:
    suite: Suite
    outcomes: tuple[Outcome, ...]
    score: Score
    klass: Class
    comparison: bl.Comparison
    exit: GateExit
    reason: str
    started: float
    finished: float
    output_dir: Path
    snapshot: bl.Snapshot
    baseline_updated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite.name,
            "result": self.exit.name.lower().replace("_", "-"),
            "exit_code": int(self.exit),
            "reason": self.reason,
            "score": self.score.value,
            "score_range": [self.score.low, self.score.high],
            "class": str(self.klass),
            "thresholds": {"pass": self.suite.thresholds.pass_at, "warn": self.suite.thresholds.warn_at},
            "baseline": {
                "status": self.comparison.status,
                "source": self.comparison.source,
                "score": self.comparison.baseline_score,
                "created": self.comparison.baseline_created,
                "regressions": [r.message for r in self.comparison.regressions],
                "notes": list(self.comparison.notes),
                "updated": self.baseline_updated,
            },
            "experiments": [
                {
                    "name": o.entry.name,
                    "path": str(o.entry.path),
                    "weight": o.entry.weight,
                    "key": o.entry.key,
                    "verdict": o.verdict,
                    "reason": o.reason,
                    "duration_s": round(o.duration_s, 3),
                    "journal": str(o.journal_path) if o.journal_path else None,
                    "infra_error": o.infra_error,
                    "slo": [
                        {
                            "objective": r.objective,
                            "window": r.window,
                            "verdict": r.verdict,
                            "estimate": r.estimate,
                            "lower": r.lower,
                            "upper": r.upper,
                            "unit": r.unit,
                            "target": r.describe,
                            "critical": r.detail.get("critical", True) is not False,
                        }
                        for r in (o.view.slo if o.view else ())
                    ],
                }
                for o in self.outcomes
            ],
            "started": self.started,
            "finished": self.finished,
        }


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
    outcomes: Sequence[Outcome],
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


def snapshot_of(suite: Suite, outcomes: Sequence[Outcome], sc: Score, label: str = "") -> bl.Snapshot:
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
    baseline_path = options.baseline_path or bl.store_path(suite.name)
    stored = bl.load(baseline_path)  # a corrupt baseline is invalid input, before anything runs
    if options.validate:
        validate_all(suite)
    started = time.time()
    outcomes: list[Outcome] = []
    interrupted = False
    total = len(suite.entries)
    for i, entry in enumerate(suite.entries, 1):
        run_dir = options.output_dir / "runs" / f"{i:02d}-{entry.name}"
        say(
            f"[{i}/{total}] {entry.name} ({entry.path.name}, weight {entry.weight:g}"
            f"{', key' if entry.key else ''}) …"
        )
        try:
            outcome = run_experiment(entry, run_dir, timeout_s=options.timeout_s)
        except (KeyboardInterrupt, GateInterrupted):
            interrupted = True
            # The run reverted and wrote its journal on SIGTERM: keep what it measured.
            try:
                view: RunView | None = RunView.from_journal(load_journal(run_dir / "journal.json"))
            except JournalError:
                view = None
            outcome = Outcome(
                entry=entry,
                verdict="interrupted",
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
            Outcome(
                entry=entry,
                verdict="interrupted",
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
    gate_json.write_text(json.dumps(result.to_dict(), indent=2), "utf-8")
    written["json"] = gate_json
    for o in result.outcomes:
        if o.view is not None:
            page = o.run_dir / "report.html"
            page.write_text(render_html(o.view), "utf-8")
    return written
