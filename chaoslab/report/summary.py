"""Markdown for a CI job summary page (GitHub ``$GITHUB_STEP_SUMMARY``, GitLab MR notes).

Short by design: the verdict first, then the numbers that decide it, then where the full
reports are. GitHub-flavoured Markdown only (tables, emoji shortcodes avoided: plain
Unicode symbols render everywhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chaoslab.report.text import safe_output
from chaoslab.report.view import RunView, fmt_seconds, fmt_value
from chaoslab.verdict import Verdict

if TYPE_CHECKING:
    from chaoslab.report.gateresult import GateResult

_ICON = {
    Verdict.PASSED: "✅",
    "pass": "✅",
    Verdict.DEVIATED: "❌",
    "fail": "❌",
    Verdict.ABORTED: "🛑",
    Verdict.NOT_CLEAN: "☣️",
    Verdict.ERROR: "⚠️",
    Verdict.INVALID_INPUT: "⚠️",
    Verdict.INCONCLUSIVE: "❔",
    Verdict.INTERRUPTED: "⏹️",
    "warning": "🟡",
    "regression": "📉",
    "infra_error": "⚠️",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _slo_table(view: RunView) -> list[str]:
    if not view.slo:
        return ["_No SLO judged._"]
    out = ["| objective | window | verdict | estimate | bounds | samples |", "|---|---|---|---:|---|---:|"]
    for r in view.slo:
        bounds = (
            f"[{fmt_value(r.lower, r.unit)}, {fmt_value(r.upper, r.unit)}]"
            if r.lower is not None or r.upper is not None
            else "–"
        )
        out.append(
            f"| {_cell(r.objective)} ({_cell(r.describe)}) | {r.window} | {_ICON.get(r.verdict, '')} "
            f"{r.verdict} | {fmt_value(r.estimate, r.unit)} | {bounds} | {r.samples} |"
        )
    return out


@safe_output
def run_summary(view: RunView) -> str:
    lines = [
        f"### {_ICON.get(view.verdict, '')} chaoslab: {_cell(view.title)} — **{view.verdict}**",
        "",
        f"{_cell(view.reason)}",
        "",
        f"Duration {view.duration_s:.1f} s · faults {len(view.faults)} · not clean {len(view.not_clean)} · "
        f"time to detect {fmt_seconds(view.time_to_detect_s)} · time to recover "
        f"{fmt_seconds(view.time_to_recover_s)} · breach → clean {fmt_seconds(view.breach_to_clean_s)}",
        "",
        *_slo_table(view),
        "",
    ]
    return "\n".join(lines)


@safe_output
def gate_summary(result: GateResult) -> str:
    res = result.exit.name.lower()
    sc = result.score
    th = result.suite.thresholds
    comp = result.comparison
    lines = [
        f"## {_ICON.get(res, '')} chaoslab gate `{_cell(result.suite.name)}`: **{res.replace('_', ' ')}** "
        f"(exit {int(result.exit)})",
        "",
        f"{_cell(result.reason)}",
        "",
        f"**Resilience score {sc.value:g}** / 100 (range {sc.low:g}–{sc.high:g}; pass ≥ {th.pass_at:g}, "
        f"warn ≥ {th.warn_at:g})",
        "",
        f"**Baseline:** {_cell(comp.headline())}",
    ]
    for r in comp.regressions:
        lines.append(f"- 📉 {_cell(r.message)}")
    for n in comp.notes:
        lines.append(f"- {_cell(n)}")
    lines += [
        "",
        "| experiment | weight | key | verdict | duration | objectives not met |",
        "|---|---:|:---:|---|---:|---|",
    ]
    for o in result.outcomes:
        bad = ""
        if o.view is not None:
            bad = "; ".join(
                f"{r.objective}[{r.window}] {r.verdict} {fmt_value(r.estimate, r.unit)}"
                for r in o.view.slo
                if r.verdict != "pass"
            )
        if o.infra_error:
            bad = (bad + "; " if bad else "") + o.infra_error[:160]
        lines.append(
            f"| {_cell(o.entry.name)} | {o.entry.weight:g} | {'★' if o.entry.key else ''} | "
            f"{_ICON.get(o.verdict, '')} {o.verdict} | {o.duration_s:.1f} s | {_cell(bad) or '–'} |"
        )
    lines += ["", f"Reports: `{result.output_dir}` (JUnit, gate.json, one report.html per run).", ""]
    if result.baseline_updated:
        lines.insert(-1, f"Baseline updated: `{comp.source}`.")
    return "\n".join(lines)
