"""The HTML report: one self-contained file that works offline.

Built from a ``RunView`` (the journal alone). Everything is inline: CSS in a ``<style>``
element, charts as inline SVG, no script and no external resource at all, so the file
opens from a CI artifact, a mail attachment or an air-gapped laptop, and shows the same
thing in ten years.

Why hand-written SVG rather than a charting library: the JavaScript charting libraries
(Chart.js, Plotly, ECharts) draw in the browser, so the report would either fetch them
from a CDN (not offline) or embed hundreds of kilobytes of minified code in every report;
matplotlib would add a heavy native dependency (tens of MB) to a CLI tool to draw four
polylines and produce raster images that blur when zoomed. The charts here are axes,
polylines, shaded rectangles and labels: about 200 lines of SVG text, crisp at any zoom,
printable, with native hover tooltips through ``<title>`` elements and no JavaScript.

The line colours are module constants (``COLOURS``) so tests can look for them in a
screenshot; changing one means changing the test's expectation, on purpose.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from chaoslab.report.text import safe_output
from chaoslab.report.view import ActivityRow, RunView, fmt_seconds, fmt_value
from chaoslab.verdict import Verdict

COLOURS = {
    "p50": "#1f77b4",
    "p95": "#2ca02c",
    "p99": "#9467bd",
    "error_rate": "#d62728",
    "throughput": "#17becf",
    "fault": "#ff7f0e",
    "abort": "#e6007e",
}

VERDICT_COLOURS = {
    Verdict.PASSED: ("#e6f4ea", "#137333"),
    Verdict.DEVIATED: ("#fce8e6", "#a50e0e"),
    Verdict.ABORTED: ("#fce8e6", "#a50e0e"),
    Verdict.NOT_CLEAN: ("#3c0a0a", "#ffffff"),
    Verdict.ERROR: ("#fce8e6", "#a50e0e"),
    Verdict.INVALID_INPUT: ("#fef7e0", "#7a4f01"),
    Verdict.INCONCLUSIVE: ("#fef7e0", "#7a4f01"),
    Verdict.INTERRUPTED: ("#fef7e0", "#7a4f01"),
}

CHART_W = 1100
MARGIN_L, MARGIN_R = 72, 24

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#202124;background:#fff}
main{max-width:1120px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dadce0}
.banner{padding:14px 18px;border-radius:6px;margin:8px 0 12px}
.banner .v{font-size:26px;font-weight:700;text-transform:uppercase;letter-spacing:.03em}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}
.kpi{border:1px solid #dadce0;border-radius:6px;padding:6px 12px;min-width:120px}
.kpi b{display:block;font-size:18px}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{border-bottom:1px solid #e8eaed;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f8f9fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#137333;font-weight:600}.fail{color:#a50e0e;font-weight:700}
.inconclusive{color:#7a4f01;font-weight:600}
.muted{color:#5f6368}code{font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#3c4043}
"""


@safe_output
def render_html(view: RunView) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    e = html.escape
    bg, fg = VERDICT_COLOURS.get(view.verdict, ("#f1f3f4", "#202124"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(view.title)} — {e(view.verdict)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{e(view.title)}</h1>",
        f'<div class="muted">run <code>{e(view.run_id)}</code> · started {e(_iso(view.start))} · '
        f"{view.duration_s:.1f} s</div>",
        f'<div class="banner" id="verdict" style="background:{bg};color:{fg}">'
        f'<div class="v">{e(view.verdict)}</div><div>{e(view.reason)}</div>'
        + (
            f'<div class="halt" id="halted">halted by an operator (chaoslab halt) at {e(_iso(view.halt_ts))}'
            "; every fault was reverted</div>"
            if view.halt_ts is not None
            else ""
        )
        + "</div>",
        _kpis(view),
        "<h2>Timeline</h2>",
        render_timeline_svg(view),
        "<h2>Service level objectives</h2>",
        _slo_table(view),
        "<h2>Activities</h2>",
        render_activity_svg(view),
        _activity_table(view),
        "<h2>Faults: revert and clean check</h2>",
        _fault_table(view),
        "<h2>Environment</h2>",
        _env_table(view),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _kpis(view: RunView) -> str:
    budget = view.budget_consumed
    items = [
        ("time to detect", fmt_seconds(view.time_to_detect_s)),
        ("time to recover", fmt_seconds(view.time_to_recover_s)),
        ("breach → clean", fmt_seconds(view.breach_to_clean_s)),
        ("first bad request → clean", fmt_seconds(view.onset_to_clean_s)),
        ("faults", str(len(view.faults))),
        ("not clean", str(len(view.not_clean))),
        ("max error budget used", "–" if budget is None else f"{budget * 100:.0f}%"),
    ]
    cells = "".join(
        f'<div class="kpi"><span class="muted">{html.escape(k)}</span><b>{html.escape(v)}</b></div>'
        for k, v in items
    )
    guard = (
        f'<p class="muted">guard: {html.escape(view.guard_test)}; {html.escape(view.guard_timing or "")}</p>'
        if view.guard_test
        else ""
    )
    return f'<div class="kpis">{cells}</div>{guard}'


def _verdict_cell(v: str) -> str:
    cls = {"pass": "pass", "fail": "fail"}.get(v, "inconclusive")
    return f'<td class="{cls}">{html.escape(v)}</td>'


def _slo_table(view: RunView) -> str:
    if not view.slo:
        return '<p class="muted">No SLO was judged (the experiment declares no <code>slo:</code>).</p>'
    rows = []
    for r in view.slo:
        bounds = (
            f"[{fmt_value(r.lower, r.unit)}, {fmt_value(r.upper, r.unit)}]"
            if r.lower is not None or r.upper is not None
            else "–"
        )
        budget = "–" if r.budget_consumed is None else f"{r.budget_consumed * 100:.0f}%"
        rows.append(
            f"<tr><td>{html.escape(r.window)}</td><td>{html.escape(r.objective)}</td>"
            f"<td>{html.escape(r.describe)}</td>{_verdict_cell(r.verdict)}"
            f'<td class="num">{html.escape(fmt_value(r.estimate, r.unit))}</td>'
            f'<td class="num">{html.escape(bounds)}</td><td class="num">{r.samples}</td>'
            f'<td class="num">{budget}</td></tr>'
        )
    head = (
        "<tr><th>window</th><th>objective</th><th>target</th><th>verdict</th><th>estimate</th>"
        "<th>confidence bounds</th><th>samples</th><th>error budget used</th></tr>"
    )
    return f'<table id="slo">{head}{"".join(rows)}</table>'


def _rel(view: RunView, ts: float | None) -> str:
    return "–" if ts is None else f"+{ts - view.start:.2f} s"


def _activity_status(a: ActivityRow) -> str:
    if a.tolerance_met is False:
        return f"{a.status}, outside tolerance"
    return a.status


def _activity_table(view: RunView) -> str:
    if not view.activities:
        return '<p class="muted">No activity ran.</p>'
    rows = "".join(
        f"<tr><td>{html.escape(a.phase)}</td><td>{html.escape(a.name)}</td><td>{html.escape(a.type)}</td>"
        f'<td class="{"pass" if a.status == "succeeded" and a.tolerance_met is not False else "fail"}">'
        f"{html.escape(_activity_status(a))}</td>"
        f'<td class="num">{_rel(view, a.start)}</td>'
        f'<td class="num">{fmt_seconds(None if a.start is None or a.end is None else a.end - a.start)}</td>'
        f"<td>{html.escape(a.error[:300])}</td></tr>"
        for a in view.activities
    )
    head = (
        "<tr><th>phase</th><th>activity</th><th>type</th><th>status</th><th>start</th>"
        "<th>took</th><th>error</th></tr>"
    )
    return f'<table id="activities">{head}{rows}</table>'


def _fault_table(view: RunView) -> str:
    if not view.faults:
        return '<p class="muted">No fault was injected.</p>'
    rows = []
    for f in view.faults:
        if f.clean is None:
            clean = '<td class="inconclusive">not checked</td>'
        else:
            clean = '<td class="pass">clean</td>' if f.clean else '<td class="fail">NOT CLEAN</td>'
        reverted = (
            '<td class="fail">never reverted</td>'
            if f.end is None
            else '<td class="pass">ok</td>'
            if f.reverted_ok
            else '<td class="fail">failed</td>'
        )
        rows.append(
            f"<tr><td>{html.escape(f.driver)}.{html.escape(f.operation)}</td><td>{html.escape(f.target)}</td>"
            f'<td class="num">{_rel(view, f.start)}</td><td class="num">{_rel(view, f.end)}</td>{reverted}'
            f'<td class="num">{fmt_seconds(f.revert_duration_s)}</td>'
            f'<td class="num">{fmt_seconds(f.time_to_recover_s)}</td>{clean}'
            f"<td>{html.escape('; '.join(f.residue) or f.revert_detail)}</td></tr>"
        )
    head = (
        "<tr><th>fault</th><th>target</th><th>injected</th><th>reverted</th><th>revert</th><th>took</th>"
        "<th>recovered in</th><th>clean check</th><th>residue / detail</th></tr>"
    )
    return f'<table id="faults">{head}{"".join(rows)}</table>'


def _env_table(view: RunView) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
        for k, v in view.environment.items()
    )
    if view.tags:
        rows += f"<tr><th>tags</th><td>{html.escape(', '.join(view.tags))}</td></tr>"
    if view.interruptions:
        rows += f"<tr><th>interruptions</th><td>{html.escape('; '.join(view.interruptions))}</td></tr>"
    return f'<table id="environment">{rows}</table>'


# --- SVG ---------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 × 10^k)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    # The 1-2-5 step whose tick count is closest to the one asked for.
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda st: abs((hi - lo) / st - count))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"


def _path(xs: Sequence[float], ys: Sequence[float | None], sx: _Scale, sy: _Scale) -> tuple[str, list[str]]:
    """An SVG path through the points, broken where a value is missing; lone points as dots."""
    d: list[str] = []
    dots: list[str] = []
    run: list[tuple[float, float]] = []

    def flush() -> None:
        if len(run) == 1:
            dots.append(f"{run[0][0]:.1f},{run[0][1]:.1f}")
        elif run:
            d.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in run))
        run.clear()

    for x, y in zip(xs, ys, strict=True):
        if y is None:
            flush()
        else:
            run.append((sx(x), sy(y)))
    flush()
    return " ".join(d), dots


class _Scale:
    """Linear map from data to pixels."""

    def __init__(self, d0: float, d1: float, p0: float, p1: float) -> None:
        self.d0, self.d1, self.p0, self.p1 = d0, d1 if d1 != d0 else d0 + 1.0, p0, p1

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)


def _time_range(view: RunView) -> tuple[float, float]:
    """The x range: the run, widened to the series (the load starts before the run's events)."""
    lo, hi = view.start, max(view.end, view.start + 1.0)
    s = view.main_series
    if s is not None and len(s):
        lo, hi = min(lo, s.t[0]), max(hi, s.t[-1] + 1.0)
    return lo, hi


def _panel(
    *,
    title: str,
    top: float,
    height: float,
    xs: Sequence[float],
    lines: Sequence[tuple[str, str, Sequence[float | None]]],
    sx: _Scale,
    y_unit: str,
    x_ticks: Sequence[float],
    t0: float,
) -> str:
    values = [v for _, _, ys in lines for v in ys if v is not None]
    ymax = max(values) if values else 1.0
    ymax = ymax * 1.1 if ymax > 0 else 1.0
    sy = _Scale(0.0, ymax, top + height, top)
    out = [
        f'<text x="{MARGIN_L}" y="{top - 6:.0f}" style="font-weight:600">{html.escape(title)}</text>',
        f'<rect x="{MARGIN_L}" y="{top}" width="{CHART_W - MARGIN_L - MARGIN_R}" height="{height}" '
        'fill="none" stroke="#dadce0"/>',
    ]
    for v in nice_ticks(0.0, ymax, 4):
        y = sy(v)
        out.append(
            f'<line x1="{MARGIN_L}" x2="{CHART_W - MARGIN_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f3f4"/>'
        )
        out.append(
            f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_label(v)}{y_unit}</text>'
        )
    for v in x_ticks:
        x = sx(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + height}" stroke="#f1f3f4"/>')
        out.append(f'<text x="{x:.1f}" y="{top + height + 13}" text-anchor="middle">{v - t0:g}s</text>')
    legend_x = CHART_W - MARGIN_R
    for name, colour, ys in reversed(lines):
        d, dots = _path(xs, ys, sx, sy)
        if d:
            out.append(
                f'<path class="series-{name}" d="{d}" fill="none" stroke="{colour}" stroke-width="2.5" '
                'stroke-linejoin="round"/>'
            )
        for xy in dots:
            cx, cy = xy.split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        legend_x -= 8 + 7 * len(name) + 22
        out.append(f'<rect x="{legend_x}" y="{top - 15}" width="14" height="4" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 18}" y="{top - 10}">{html.escape(name)}</text>')
    return "\n".join(out)


def render_timeline_svg(view: RunView) -> str:
    """Latency percentiles, error rate and throughput per second; faults shaded; the guard's
    abort and an operator's halt marked."""
    series = view.main_series
    lo, hi = _time_range(view)
    sx = _Scale(lo, hi, MARGIN_L, CHART_W - MARGIN_R)
    x_ticks = [lo + v for v in nice_ticks(0.0, hi - lo, 10)]
    panels = [
        ("latency per second (successful requests)", 230.0),
        ("error rate", 120.0),
        ("throughput", 120.0),
    ]
    gap, top0 = 42.0, 44.0
    height = top0 + sum(h for _, h in panels) + gap * len(panels) + 10
    out = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height:.0f}" '
        f'viewBox="0 0 {CHART_W} {height:.0f}" role="img" aria-label="SLI timeline">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
    ]
    chart_top, chart_bottom = top0, height - gap + 14
    # Windows (baseline/during/after) as labels along the top.
    for name, (w0, w1) in sorted(view.windows.items(), key=lambda kv: kv[1][0]):
        x0, x1 = sx(max(w0, lo)), sx(min(w1, hi))
        if x1 - x0 < 2:
            continue
        out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="12" y2="12" stroke="#5f6368" stroke-width="2"/>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="9" text-anchor="middle">{html.escape(name)}</text>')
    for f in view.faults:
        x0, x1 = sx(f.start), sx(f.end if f.end is not None else hi)
        out.append(
            f'<rect class="fault-window" x="{x0:.1f}" y="{chart_top - 22}" width="{max(2.0, x1 - x0):.1f}" '
            f'height="{chart_bottom - chart_top + 22:.1f}" fill="{COLOURS["fault"]}" fill-opacity="0.16">'
            f"<title>{html.escape(f.label)}: +{f.start - lo:.1f}s → "
            f"{'never reverted' if f.end is None else f'+{f.end - lo:.1f}s'}</title></rect>"
        )
        out.append(
            f'<text x="{x0 + 3:.1f}" y="{chart_top - 24}" style="fill:#b35900">'
            f"fault: {html.escape(f.operation)}</text>"
        )
    if series is None or not len(series):
        out.append(
            f'<text x="{CHART_W / 2}" y="{height / 2}" text-anchor="middle">No SLI series in this journal '
            "(the experiment has no load or SLI source).</text>"
        )
    else:
        xs = [t + 0.5 for t in series.t]  # plot each second at its middle
        top = top0
        specs: list[tuple[str, str, list[tuple[str, str, Sequence[float | None]]]]] = [
            (
                "latency",
                " ms",
                [
                    ("p50", COLOURS["p50"], series.p50_ms),
                    ("p95", COLOURS["p95"], series.p95_ms),
                    ("p99", COLOURS["p99"], series.p99_ms),
                ],
            ),
            (
                "error rate",
                "%",
                [
                    (
                        "error rate",
                        COLOURS["error_rate"],
                        [None if v is None else v * 100 for v in series.error_rate],
                    )
                ],
            ),
            ("throughput", "/s", [("requests/s", COLOURS["throughput"], list(series.rps))]),
        ]
        for (title, h), (_, unit, lines) in zip(panels, specs, strict=True):
            out.append(
                _panel(
                    title=title,
                    top=top,
                    height=h,
                    xs=xs,
                    lines=lines,
                    sx=sx,
                    y_unit=unit,
                    x_ticks=x_ticks,
                    t0=lo,
                )
            )
            top += h + gap
    if view.guard_ts is not None:
        x = sx(view.guard_ts)
        out.append(
            f'<line class="abort" x1="{x:.1f}" x2="{x:.1f}" y1="{chart_top - 22}" y2="{chart_bottom:.1f}" '
            f'stroke="{COLOURS["abort"]}" stroke-width="2.5" stroke-dasharray="6 3">'
            f"<title>guard tripped: {html.escape(view.guard_reason or '')}</title></line>"
        )
        out.append(
            f'<text x="{x + 4:.1f}" y="{chart_top - 10}" style="fill:{COLOURS["abort"]};font-weight:700">'
            "abort</text>"
        )
    if view.halt_ts is not None:
        x = sx(min(max(view.halt_ts, lo), hi))
        out.append(
            f'<line class="halt" x1="{x:.1f}" x2="{x:.1f}" y1="{chart_top - 22}" y2="{chart_bottom:.1f}" '
            f'stroke="{COLOURS["abort"]}" stroke-width="2.5" stroke-dasharray="2 3">'
            "<title>halted by an operator (chaoslab halt)</title></line>"
        )
        out.append(
            f'<text x="{x + 4:.1f}" y="{chart_top - 10}" style="fill:{COLOURS["abort"]};font-weight:700">'
            "halt</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def render_activity_svg(view: RunView) -> str:
    """One row per activity and per fault, on the same time axis as the timeline."""
    rows: list[tuple[str, float, float, str, str]] = []
    for a in view.activities:
        if a.start is None:
            continue
        colour = "#80868b" if a.status == "succeeded" else COLOURS["error_rate"]
        rows.append((f"{a.phase}: {a.name}", a.start, a.end or a.start, colour, a.status))
    lo, hi = _time_range(view)
    for f in view.faults:
        rows.append(
            (
                f"fault: {f.label}",
                f.start,
                f.end if f.end is not None else hi,
                COLOURS["fault"],
                "reverted" if f.end is not None else "never reverted",
            )
        )
    if not rows:
        return ""
    rows.sort(key=lambda r: r[1])
    label_w = 300
    sx = _Scale(lo, hi, label_w, CHART_W - MARGIN_R)
    row_h = 20
    height = 24 + row_h * len(rows)
    out = [
        f'<svg id="activity-timeline" xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" '
        f'viewBox="0 0 {CHART_W} {height}" role="img" aria-label="activity timeline">'
    ]
    for v in nice_ticks(0.0, hi - lo, 10):
        x = sx(lo + v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 14}" stroke="#f1f3f4"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 2}" text-anchor="middle">{v:g}s</text>')
    for i, (label, s, e, colour, status) in enumerate(rows):
        y = 4 + i * row_h
        short = label if len(label) <= 46 else label[:45] + "…"
        out.append(f'<text x="4" y="{y + 13}">{html.escape(short)}</text>')
        x0, x1 = sx(s), sx(e)
        out.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(3.0, x1 - x0):.1f}" height="{row_h - 7}" '
            f'fill="{colour}" rx="2"><title>{html.escape(label)} — {html.escape(status)}, '
            f"{e - s:.2f}s</title></rect>"
        )
    out.append("</svg>")
    return "\n".join(out)
