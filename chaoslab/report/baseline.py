"""The gate's baseline: what the last passing gate measured, and how a new gate compares.

Where it lives: a JSON file the pipeline keeps (``--baseline FILE``, e.g. restored from a
CI cache or artifact of the last release), or chaoslab's store,
``<chaoslab home>/gate/<suite>/baseline.json`` (``store_path``; ``chaoslab gate`` passes
the home). Only a gate that passes replaces it (written atomically), so the baseline is
always "the last passing gate".

What is a regression (``Tolerance``, every field overridable in the suite's
``tolerance:`` mapping)::

    score     the score dropped by more than this many points              (default 5)
    ratio     an availability / within-threshold ratio fell, or an error
              rate rose, by more than this absolute amount                 (default 0.01)
    latency   a latency estimate (ms) rose by more than this fraction ...  (default 0.25)
    latency_ms ... and by more than this many milliseconds                (default 10)
    ttr_s     a time to recover rose by more than this many seconds        (default 2)

SLIs are compared objective by objective and window by window (``p99[during]``), for
experiments present in both gates and results with an estimate in both. A missing
baseline gives the status ``no-baseline`` — reported as such, never as a pass.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaoslab.errors import InvalidInput, Problem

SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    score: float = 5.0
    ratio: float = 0.01
    latency: float = 0.25
    latency_ms: float = 10.0
    ttr_s: float = 2.0

    @classmethod
    def parse(cls, raw: Any, path: str = "tolerance", file: str | None = None) -> Tolerance:
        """From the suite's ``tolerance:`` mapping; raises ``InvalidInput`` with field paths."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput([Problem(file=file, path=path, message="expected a mapping")])
        names = {f.name for f in fields(cls)}
        problems: list[Problem] = []
        kw: dict[str, float] = {}
        for key, value in raw.items():
            if key not in names:
                problems.append(
                    Problem(
                        file=file,
                        path=f"{path}.{key}",
                        message=f"unknown tolerance {key!r}",
                        hint=", ".join(sorted(names)),
                    )
                )
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(
                    Problem(
                        file=file,
                        path=f"{path}.{key}",
                        message=f"expected a non-negative number, got {value!r}",
                    )
                )
            else:
                kw[key] = float(value)
        if problems:
            raise InvalidInput(problems)
        return cls(**kw)


@dataclass(frozen=True, kw_only=True)
class SLIPoint:
    estimate: float
    unit: str  # "ms", "s" or "" (ratio)
    better: str  # "higher" | "lower"


@dataclass(frozen=True, kw_only=True)
class ExperimentSnapshot:
    verdict: str
    weight: float
    key: bool
    sli: Mapping[str, SLIPoint] = field(default_factory=dict)  # "objective[window]" -> point


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One gate's measurements: what is stored as a baseline and what is compared."""

    suite: str
    score: float
    created: str
    experiments: Mapping[str, ExperimentSnapshot]
    label: str = ""  # e.g. the commit or release the pipeline passed in

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "suite": self.suite,
            "score": self.score,
            "created": self.created,
            "label": self.label,
            "experiments": {
                name: {
                    "verdict": e.verdict,
                    "weight": e.weight,
                    "key": e.key,
                    "sli": {
                        k: {"estimate": p.estimate, "unit": p.unit, "better": p.better}
                        for k, p in e.sli.items()
                    },
                }
                for name, e in self.experiments.items()
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], file: str | None = None) -> Snapshot:
        try:
            if raw.get("schema") != SCHEMA:
                raise ValueError(
                    f"unsupported baseline schema {raw.get('schema')!r} (this chaoslab reads {SCHEMA})"
                )
            exps = {}
            for name, e in raw["experiments"].items():
                exps[str(name)] = ExperimentSnapshot(
                    verdict=str(e["verdict"]),
                    weight=float(e["weight"]),
                    key=bool(e["key"]),
                    sli={
                        str(k): SLIPoint(
                            estimate=float(p["estimate"]), unit=str(p["unit"]), better=str(p["better"])
                        )
                        for k, p in (e.get("sli") or {}).items()
                    },
                )
            return cls(
                suite=str(raw["suite"]),
                score=float(raw["score"]),
                created=str(raw["created"]),
                label=str(raw.get("label", "")),
                experiments=exps,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(
                [
                    Problem(
                        file=file,
                        message=f"not a chaoslab gate baseline: {exc}",
                        hint="delete it to start over; the next passing gate writes a new one",
                    )
                ]
            ) from exc


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def store_path(suite: str, base: Path) -> Path:
    """The baseline file for ``suite`` (name made filesystem-safe) in the store under
    chaoslab's home ``base``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", suite).strip("._") or "suite"
    return base / "gate" / safe / "baseline.json"


def load(path: Path) -> Snapshot | None:
    """The stored baseline, or None if there is none yet. A corrupt file is invalid input."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput([Problem(file=str(path), message=f"baseline is not JSON: {exc}")]) from exc
    if not isinstance(raw, Mapping):
        raise InvalidInput([Problem(file=str(path), message="baseline must be a JSON object")])
    return Snapshot.from_dict(raw, file=str(path))


def save(path: Path, snapshot: Snapshot) -> None:
    """Write atomically: a crash mid-write never leaves a torn baseline behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(snapshot.to_dict(), indent=2, sort_keys=True), "utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True, kw_only=True)
class Regression:
    experiment: str
    what: str  # "score" or "objective[window]"
    baseline: float
    current: float
    message: str


@dataclass(frozen=True, kw_only=True)
class Comparison:
    status: str  # "no-baseline" | "ok" | "regression"
    baseline_score: float | None = None
    baseline_created: str = ""
    baseline_label: str = ""
    source: str = ""  # where the baseline was read from
    regressions: tuple[Regression, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def regressed(self) -> bool:
        return self.status == "regression"

    def headline(self) -> str:
        if self.status == "no-baseline":
            return (
                f"no baseline (none at {self.source}): nothing to compare with; "
                "this is not a pass by comparison"
            )
        if self.status == "ok":
            return (
                f"no regression against the baseline of {self.baseline_created} "
                f"(score {self.baseline_score:g})"
            )
        return f"{len(self.regressions)} regression(s) against the baseline of {self.baseline_created}"


def _fmt(x: float, unit: str) -> str:
    return f"{x:.1f} ms" if unit == "ms" else f"{x:.1f} s" if unit == "s" else f"{x:.4f}"


def _worse(base: SLIPoint, cur: SLIPoint, tol: Tolerance) -> str | None:
    """Why ``cur`` is worse than ``base`` beyond tolerance, or None."""
    b, c = base.estimate, cur.estimate
    if cur.unit == "ms":
        if c > b * (1 + tol.latency) and c - b > tol.latency_ms:
            return (
                f"rose by {c - b:.1f} ms (+{(c / b - 1) * 100 if b else float('inf'):.0f}%); "
                f"tolerance {tol.latency * 100:g}% and {tol.latency_ms:g} ms"
            )
        return None
    if cur.unit == "s":
        return f"rose by {c - b:.1f} s; tolerance {tol.ttr_s:g} s" if c - b > tol.ttr_s else None
    if cur.better == "lower":
        return f"rose by {c - b:.4f}; tolerance {tol.ratio:g}" if c - b > tol.ratio else None
    return f"fell by {b - c:.4f}; tolerance {tol.ratio:g}" if b - c > tol.ratio else None


def compare(current: Snapshot, baseline: Snapshot | None, tol: Tolerance, *, source: str = "") -> Comparison:
    if baseline is None:
        return Comparison(status="no-baseline", source=source)
    regressions: list[Regression] = []
    notes: list[str] = []
    drop = baseline.score - current.score
    if drop > tol.score:
        regressions.append(
            Regression(
                experiment="",
                what="score",
                baseline=baseline.score,
                current=current.score,
                message=f"score dropped {drop:.1f} points ({baseline.score:g} → {current.score:g}); "
                f"tolerance {tol.score:g}",
            )
        )
    for name, cur in current.experiments.items():
        base = baseline.experiments.get(name)
        if base is None:
            notes.append(f"{name}: new experiment, not in the baseline")
            continue
        if cur.verdict != base.verdict:
            notes.append(f"{name}: verdict {base.verdict} → {cur.verdict}")
        for k, point in cur.sli.items():
            bpoint = base.sli.get(k)
            if bpoint is None or bpoint.unit != point.unit:
                continue
            why = _worse(bpoint, point, tol)
            if why:
                regressions.append(
                    Regression(
                        experiment=name,
                        what=k,
                        baseline=bpoint.estimate,
                        current=point.estimate,
                        message=f"{name}: {k} {_fmt(bpoint.estimate, point.unit)} → "
                        f"{_fmt(point.estimate, point.unit)}, {why}",
                    )
                )
    for name in baseline.experiments:
        if name not in current.experiments:
            notes.append(f"{name}: in the baseline but not run now")
    return Comparison(
        status="regression" if regressions else "ok",
        baseline_score=baseline.score,
        baseline_created=baseline.created,
        baseline_label=baseline.label,
        source=source,
        regressions=tuple(regressions),
        notes=tuple(notes),
    )
