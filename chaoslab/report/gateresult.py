"""What a CI gate found: the suite, each experiment's run, the score and the decision.

The data the renderers (JUnit, the Markdown summary, metrics, gate.json) take; the gate
itself (``chaoslab.gate``), which runs the experiments in child processes, builds it.
Kept here, below the gate, so that rendering a result never imports the code that runs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.report import baseline as bl
from chaoslab.report.exitcodes import GateExit
from chaoslab.report.score import FAILED, INFRASTRUCTURE, Class, Score, Thresholds
from chaoslab.report.view import RunView
from chaoslab.verdict import Verdict


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


@dataclass(frozen=True, kw_only=True)
class SuiteRun:
    """One experiment's run in the gate, as the gate read it back."""

    entry: SuiteEntry
    verdict: Verdict
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


@dataclass(frozen=True, kw_only=True)
class GateResult:
    suite: Suite
    outcomes: tuple[SuiteRun, ...]
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
