"""HTML, postmortem, JUnit and job summary rendered from a journal alone."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chaoslab.report import write_reports
from chaoslab.report.html import COLOURS, nice_ticks, render_html
from chaoslab.report.junit import run_junit
from chaoslab.report.postmortem import render_postmortem
from chaoslab.report.summary import run_summary
from chaoslab.report.view import RunView
from tests.journals import make_journal

# The CLI with the report commands registered (idempotent once chaoslab.cli registers them).
BOOT = (
    "from chaoslab.cli import main; from chaoslab.report.cli import register; "
    "'report' in main.commands or register(main); main(prog_name='chaoslab')"
)


def test_html_is_self_contained() -> None:
    page = render_html(RunView.from_journal(make_journal(guard=True, verdict="aborted")))
    assert "<script" not in page
    # No fetched resource of any kind: the only URL is the SVG namespace.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|img|iframe)\b", page)


def test_html_chart_has_percentile_lines_fault_window_and_abort() -> None:
    view = RunView.from_journal(make_journal(guard=True, verdict="aborted"))
    page = render_html(view)
    for name in ("p50", "p95", "p99", "error rate", "requests/s"):
        assert f'class="series-{name}"' in page, name
    assert f'stroke="{COLOURS["p99"]}"' in page and f'stroke="{COLOURS["throughput"]}"' in page
    # The p99 path climbs to its maximum (400 ms) in the slow seconds: the highest point
    # (smallest y) is the 6th sample.
    d = re.search(r'class="series-p99" d="([^"]+)"', page)
    assert d is not None
    ys = [float(p.split(",")[1]) for p in re.findall(r"[\d.]+,[\d.]+", d.group(1))]
    assert len(ys) == 20 and ys.index(min(ys)) == 5
    assert page.count('class="fault-window"') == 1
    assert 'class="abort"' in page and "guard tripped: error rate 25% for 2s" in page


def test_html_without_guard_has_no_abort_marker() -> None:
    page = render_html(RunView.from_journal(make_journal()))
    assert 'class="abort"' not in page


def test_html_tables_carry_slo_numbers_faults_and_environment() -> None:
    page = render_html(RunView.from_journal(make_journal(clean=False)))
    slo = page[page.index('id="slo"') : page.index("</table>", page.index('id="slo"'))]
    assert "400.0 ms" in slo and "[390.0 ms, 410.0 ms]" in slo and ">1000<" in slo
    assert ">120<" in slo and "inconclusive" in slo
    assert "1500%" in slo  # error budget used by p99 in during
    assert "NOT CLEAN" in page and "toxic chaoslab-f1 still present" in page
    assert "time to detect" in page and "800 ms" in page  # 0.8 s
    assert 'id="environment"' in page and "20270115-080000-abcdef" in page
    assert 'id="activity-timeline"' in page and "slow-replica-1" in page


def test_html_escapes_user_text() -> None:
    page = render_html(RunView.from_journal(make_journal(title="<img src=x onerror=alert(1)>")))
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_html_without_series_says_so() -> None:
    doc = make_journal()
    doc["chaoslab"]["series"] = []
    page = render_html(RunView.from_journal(doc))
    assert "No SLI series in this journal" in page


def test_nice_ticks() -> None:
    assert nice_ticks(0, 20, 10) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert nice_ticks(0, 0.9, 4) == [0, 0.2, 0.4, 0.6, 0.8]


def test_postmortem_has_every_section_and_the_runbook() -> None:
    text = render_postmortem(
        RunView.from_journal(
            make_journal(
                runbook={"url": "https://runbooks.example/slow", "steps": ["Drain replica-1", "Page DB team"]}
            )
        )
    )
    # The SRE book's template (appendix D), in its order.
    headings = re.findall(r"^##+ (.+)$", text, re.M)
    assert headings == [
        "Summary",
        "Impact",
        "Root Causes",
        "Trigger",
        "Resolution",
        "Detection",
        "Action Items",
        "Lessons Learned",
        "What went well",
        "What went wrong",
        "Where we got lucky",
        "Timeline",
        "Supporting Information",
        "Runbook",
    ]
    assert text.startswith("# Postmortem (draft): slow replica\n")
    # T0 is 2027-01-15 08:00:00 UTC.
    assert "**Date:** 2027-01-15 (run started 2027-01-15 08:00:00.000 UTC)" in text
    assert "**Authors:** _to fill in_" in text and "**Status:** Draft" in text
    assert "<https://runbooks.example/slow>" in text
    assert "1. Drain replica-1\n2. Page DB team" in text
    assert "1000%" in text  # availability during: 10× its budget
    assert "missed in the during window: estimate 400.0 ms" in text
    # Timeline rows carry the wall-clock time and the offset.
    assert "| 2027-01-15 08:00:05.200 | T+5.2s | fault injected: `proxy.latency on lab:replica-1` |" in text
    assert (
        "`proxy.latency on lab:replica-1` injected at 2027-01-15 08:00:05.200 UTC (T+5.2s), lease 10 s."
        in text
    )
    # Action items carry a type and owner/tracking columns.
    assert "| action item | type | owner | tracking |" in text
    assert re.search(
        r"\| Find the contributing factors .* \| investigate \| _to fill in_ \| _to fill in_ \|", text
    )
    assert "Blameless" in text


def test_postmortem_after_a_halt_names_the_operator_not_the_guard() -> None:
    text = render_postmortem(RunView.from_journal(make_journal(verdict="aborted", halt=True)))
    assert "the guard stopped" not in text.lower()
    assert "an operator halted the run with `chaoslab halt`" in text
    assert "at 2027-01-15 08:00:08.000 UTC (T+8.0s)" in text and "The guard did not stop it." in text
    assert "| 2027-01-15 08:00:08.000 | T+8.0s | halted by an operator (`chaoslab halt`) |" in text
    guarded = render_postmortem(RunView.from_journal(make_journal(verdict="aborted", guard=True)))
    assert "the guard stopped the experiment" in guarded and "chaoslab halt" not in guarded


def test_html_marks_an_operator_halt_apart_from_a_guard_abort() -> None:
    page = render_html(RunView.from_journal(make_journal(verdict="aborted", halt=True)))
    assert 'class="halt"' in page and 'id="halted"' in page
    assert "halted by an operator (chaoslab halt) at 2027-01-15 08:00:08 UTC" in page
    assert 'class="abort"' not in page  # the guard did not trip
    guarded = render_html(RunView.from_journal(make_journal(verdict="aborted", guard=True)))
    assert 'class="abort"' in guarded and 'class="halt"' not in guarded


def test_html_does_not_show_a_probe_outside_its_tolerance_as_passed() -> None:
    doc = make_journal()
    doc["steady_states"] = {
        "before": {
            "steady_state_met": False,
            "probes": [
                {
                    "activity": {"type": "probe", "name": "health"},
                    "status": "succeeded",
                    "start": "2027-01-15T08:00:00",
                    "end": "2027-01-15T08:00:01",
                    "tolerance_met": False,
                }
            ],
        }
    }
    view = RunView.from_journal(doc)
    assert any(a.tolerance_met is False for a in view.activities)
    page = render_html(view)
    assert '<td class="fail">succeeded, outside tolerance</td>' in page


def test_postmortem_runbook_missing_becomes_an_action_item() -> None:
    text = render_postmortem(RunView.from_journal(make_journal()))
    assert "declares no runbook" in text
    assert "Write a runbook" in text


def test_run_junit_cases_and_failure_messages() -> None:
    root = run_junit(RunView.from_journal(make_journal(clean=False))).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names[:4] == [
        "SLO availability [baseline]",
        "SLO availability [during]",
        "SLO p99 [during]",
        "SLO p99 [after]",
    ]
    assert "revert proxy.latency on lab:replica-1" in names and names[-1] == "verdict"
    p99 = suite.findall("testcase")[2].find("failure")
    assert p99 is not None
    assert p99.get("message") == (
        "p99 [during]: fail — estimate 400.0 ms, bounds [390.0 ms, 410.0 ms], "
        "1000 samples; target p99 ≤ 250ms"
    )
    assert suite.findall("testcase")[3].find("skipped") is not None  # inconclusive
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "6",
        "3",
        "1",
        "1",
    )


def test_summary_is_short_markdown_with_the_numbers() -> None:
    text = run_summary(RunView.from_journal(make_journal()))
    assert text.startswith("### ❌ chaoslab: slow replica — **deviated**")
    assert "| p99 (p99 ≤ 250ms) | during | ❌ fail | 400.0 ms | [390.0 ms, 410.0 ms] | 1000 |" in text


def test_write_reports_from_a_journal_file(tmp_path: Path) -> None:
    import json

    jpath = tmp_path / "journal.json"
    jpath.write_text(json.dumps(make_journal()))
    out = write_reports(
        jpath,
        html=tmp_path / "r.html",
        markdown=tmp_path / "pm.md",
        junit=tmp_path / "j.xml",
        summary=tmp_path / "s.md",
    )
    assert set(out) == {"html", "markdown", "junit", "summary"}
    ET.parse(tmp_path / "j.xml")
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_report_cli_defaults_and_bad_journal(tmp_path: Path) -> None:
    import json

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "journal.json").write_text(json.dumps(make_journal()))
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "report.html").is_file() and (run_dir / "postmortem.md").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "report", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "not a chaoslab journal" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--html", "--markdown", "--junit", "--summary"])
def test_report_cli_writes_only_what_is_asked(tmp_path: Path, flag: str) -> None:
    import json

    (tmp_path / "journal.json").write_text(json.dumps(make_journal()))
    out = tmp_path / "out.file"
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "report", str(tmp_path / "journal.json"), flag, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 200
    assert not (tmp_path / "report.html").exists()
