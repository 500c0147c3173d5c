"""Reading a gate's suite: a file, or experiment paths from the command line.

The file's shape is in ``chaoslab.gate``'s docstring; every problem is reported with its
field path, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import InvalidInput, Problem
from chaoslab.report import baseline as bl
from chaoslab.report.gateresult import Suite, SuiteEntry
from chaoslab.report.score import Thresholds


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
