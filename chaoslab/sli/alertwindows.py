"""Sloth's AlertWindows files: the burn-rate windows of one SLO period, written by hand.

Sloth ships windows for 30- and 28-day SLOs and asks for a file like this one for any
other period (``sloth generate --slo-period-windows-path``); chaoslab reads the same
files (``slo rules|status --windows FILE``)::

    apiVersion: sloth.slok.dev/v1
    kind: AlertWindows
    spec:
      sloPeriod: 7d
      page:
        quick: {errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h}
        slow: {errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h}
      ticket:
        quick: {errorBudgetPercent: 20, shortWindow: 2h, longWindow: 1d}
        slow: {errorBudgetPercent: 42, shortWindow: 6h, longWindow: 3d}

Each window's factor is Sloth's: ``errorBudgetPercent / 100 × sloPeriod / longWindow``.
An SLO whose period has a file uses its windows (still widened to four scrapes); other
periods keep chaoslab's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.errors import InvalidInput, Problem
from chaoslab.units import parse_duration

API_VERSION = "sloth.slok.dev/v1"
KIND = "AlertWindows"
SLOTS = (("page", "quick"), ("page", "slow"), ("ticket", "quick"), ("ticket", "slow"))


@dataclass(frozen=True, kw_only=True)
class AlertWindows:
    """The windows of one SLO period: (severity, speed) → (budget share, long s, short s)."""

    period_s: float
    source: str
    windows: Mapping[tuple[str, str], tuple[float, float, float]]


def load_alert_windows(paths: Sequence[str | Path]) -> dict[float, AlertWindows]:
    """Every file's windows by SLO period (seconds). Raises ``InvalidInput`` with every problem."""
    from chaoslab.model.reader import load_documents

    problems: list[Problem] = []
    out: dict[float, AlertWindows] = {}
    for path in paths:
        name = str(path)
        try:
            docs = load_documents(path, what="alert windows file")
        except InvalidInput as exc:
            problems += exc.problems
            continue
        if not docs:
            problems.append(Problem(file=name, message="the file holds no AlertWindows document"))
        for doc in docs:
            report = _Report(problems, name, doc)
            parsed = _parse(doc.data, report.bad, name)
            if parsed is None:
                continue
            if parsed.period_s in out:
                report.bad(
                    "spec.sloPeriod",
                    f"a second AlertWindows for the same period (also in {out[parsed.period_s].source})",
                )
                continue
            out[parsed.period_s] = parsed
    if problems:
        raise InvalidInput(problems)
    return out


@dataclass(frozen=True)
class _Report:
    problems: list[Problem]
    name: str
    doc: Any

    def bad(self, field: str, message: str) -> None:
        self.problems.append(Problem(file=self.name, path=field, line=self.doc.line(field), message=message))


def _parse(data: Any, bad: Any, name: str) -> AlertWindows | None:
    if not isinstance(data, Mapping):
        bad("", "expected an AlertWindows mapping (apiVersion, kind, spec)")
        return None
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        bad("apiVersion", f"expected apiVersion: {API_VERSION} and kind: {KIND} (Sloth's AlertWindows)")
        return None
    spec = data.get("spec")
    if not isinstance(spec, Mapping):
        bad("spec", "expected spec: {sloPeriod, page: {quick, slow}, ticket: {quick, slow}}")
        return None
    ok = True
    try:
        period = parse_duration(spec.get("sloPeriod"), positive=True)
    except ValueError as exc:
        bad("spec.sloPeriod", str(exc))
        return None
    windows: dict[tuple[str, str], tuple[float, float, float]] = {}
    for severity, speed in SLOTS:
        field = f"spec.{severity}.{speed}"
        raw = spec.get(severity, {}).get(speed) if isinstance(spec.get(severity), Mapping) else None
        if not isinstance(raw, Mapping):
            bad(field, "expected {errorBudgetPercent, shortWindow, longWindow}")
            ok = False
            continue
        pct = raw.get("errorBudgetPercent")
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
            bad(f"{field}.errorBudgetPercent", f"expected a percentage in (0, 100], got {pct!r}")
            ok = False
            continue
        try:
            short = parse_duration(raw.get("shortWindow"), positive=True)
            long = parse_duration(raw.get("longWindow"), positive=True)
        except ValueError as exc:
            bad(field, str(exc))
            ok = False
            continue
        if short > long:
            bad(f"{field}.shortWindow", "the short window must not be longer than the long window")
            ok = False
            continue
        windows[(severity, speed)] = (float(pct) / 100.0, long, short)
    if not ok:
        return None
    return AlertWindows(period_s=period, source=name, windows=windows)
