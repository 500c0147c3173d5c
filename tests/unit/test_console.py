"""Console progress: the same lines on a terminal (rich) and in a pipe (plain, no rich)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from chaoslab.engine import events as ev
from chaoslab.engine.console import ConsoleProgress, PlainSink, RichSink, sink_for

REPO = Path(__file__).resolve().parents[2]


def _events() -> list[ev.Event]:
    return [
        ev.RunStarted(run_id="r1", title="Kill [one] replica", source="x.yaml", pid=1, experiment={}),
        ev.PhaseStarted(run_id="r1", phase=ev.Phase.BASELINE),
        ev.ActivityFinished(
            run_id="r1",
            phase=ev.Phase.BASELINE,
            name="[bold]not markup[/]",
            activity_type="probe",
            status="failed",
            start=0.0,
            end=0.25,
            tolerance_met=False,
            error="Traceback\nValueError: boom [x]",
        ),
        ev.SLOEvaluated(
            run_id="r1",
            objective="availability",
            window="during",
            verdict="fail",
            estimate=0.95,
            lower=0.9,
            upper=0.97,
            samples=400,
            detail={"slo": "≥ 99%"},
        ),
        ev.RunFinished(
            run_id="r1", verdict="deviated", exit_code=1, reason="availability fell", duration_s=3.2
        ),
    ]


def _render(sink_cls: type[PlainSink] | type[RichSink]) -> str:
    buf = io.StringIO()
    progress = ConsoleProgress(sink_cls(buf))
    for e in _events():
        progress(e)
    return buf.getvalue()


def test_plain_lines_carry_every_fact_and_take_brackets_literally() -> None:
    out = _render(PlainSink)
    lines = out.splitlines()
    assert lines[0] == "chaoslab run r1: Kill [one] replica"
    assert "▸ Baseline: checking the steady state" in lines
    assert "  ✗ probe [bold]not markup[/] 0.25s (outside tolerance)" in lines
    assert "      ValueError: boom [x]" in lines
    assert "  SLO availability [during] fail 95.00% (n=400)" in lines
    assert lines[-1] == "verdict: DEVIATED (exit 1) — availability fell [3.2s]"
    # The SLO table: a header row and one aligned row per objective.
    header = next(line for line in lines if line.startswith("objective"))
    row = next(line for line in lines if line.startswith("availability "))
    assert header.index("verdict") == row.index("fail")
    assert header.index("95% bounds") == row.index("[90.00%, 97.00%]")


def test_rich_and_plain_print_the_same_text() -> None:
    # rich into a StringIO (not a terminal) prints no colour: the characters must match
    # the plain sink's, table aside (rich pads its columns its own way).
    plain = _render(PlainSink).splitlines()
    rich = _render(RichSink).splitlines()
    assert plain[:5] == rich[:5]
    assert rich[-1] == plain[-1]


def test_sink_follows_the_stream_and_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert isinstance(sink_for(io.StringIO()), PlainSink)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert isinstance(sink_for(io.StringIO()), RichSink)


def test_a_piped_run_never_imports_rich(tmp_path: Path) -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['chaoslab', 'run', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_module('chaoslab.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('RICH' if any(m == 'rich' or m.startswith('rich.') for m in sys.modules) else 'NO-RICH')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "FORCE_COLOR"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "benchmarks" / "trivial.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verdict: PASSED" in proc.stdout
    assert proc.stdout.strip().endswith("NO-RICH")


def test_a_probe_outside_its_tolerance_has_no_check_mark() -> None:
    buf = io.StringIO()
    progress = ConsoleProgress(PlainSink(buf))
    for met, name in ((False, "outside"), (True, "inside")):
        progress(
            ev.ActivityFinished(
                run_id="r1",
                phase=ev.Phase.BASELINE,
                name=name,
                activity_type="probe",
                status="succeeded",  # the probe ran; only its value decides the tolerance
                start=0.0,
                end=0.1,
                tolerance_met=met,
            )
        )
    lines = buf.getvalue().splitlines()
    assert lines == [
        "  ✗ probe outside 0.10s (outside tolerance)",
        "  ✓ probe inside 0.10s (within tolerance)",
    ]
