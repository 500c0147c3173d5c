"""The HTML report in a real browser: headless Chromium loads it, the screenshot shows the chart.

The first test makes a real run against the lab (``chaoslab run`` in a subprocess: 200
requests/s through the balancer, 300 ms of latency on replica-1 for 3 s), renders the
report with ``chaoslab report`` from the journal alone, and checks the pixels: the line
colours are drawn, the fault window is shaded, and the p99 line climbs far above the
p50 line inside the shaded window. Needs Debian ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoslab.lab import control
from chaoslab.paths import lab_dir
from chaoslab.report.html import COLOURS
from tests.conftest import require
from tests.journals import make_journal

pytestmark = pytest.mark.chromium

BOOT = (
    "from chaoslab.cli import main; from chaoslab.report.cli import register; "
    "'report' in main.commands or register(main); main(prog_name='chaoslab')"
)

EXPERIMENT = """
title: One slow replica (report browser test)
description: 300 ms on replica-1 for 3 s; the p99 objective fails while it lasts.
lab: true
load: {target: "lab:lb", path: /, rate: 200, timeout: 2s}
windows: {baseline: 2s, recovery: 1s, after: 2s}
slo:
  - {name: availability, sli: availability, objective: 0.9}
  - {name: p99-latency, sli: latency, percentile: 99, threshold: 250ms}
method:
  - name: slow-replica-1
    do: proxy.latency
    target: lab:replica-1
    with: {latency: 300ms, jitter: 10ms}
    duration: 3s
runbook: [Check the balancer's upstream latency per replica, Drain the slow replica]
"""


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def blend_on_white(hex_colour: str, opacity: float) -> tuple[int, int, int]:
    r, g, b = rgb(hex_colour)
    return tuple(round(255 * (1 - opacity) + c * opacity) for c in (r, g, b))  # type: ignore[return-value]


def screenshot(html: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian package chromium (headless screenshots)")
    assert chromium is not None
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]


def pixels_near(png: Path, colour: tuple[int, int, int], tol: int = 12) -> list[tuple[int, int]]:
    from PIL import Image

    with Image.open(png) as img:
        rgb_img = img.convert("RGB")
        width = rgb_img.size[0]
        raw = rgb_img.tobytes()
    out = []
    r0, g0, b0 = colour
    for i in range(0, len(raw), 3):
        if abs(raw[i] - r0) <= tol and abs(raw[i + 1] - g0) <= tol and abs(raw[i + 2] - b0) <= tol:
            px = i // 3
            out.append((px % width, px // width))
    return out


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("report-lab")
    control.up(3, 1.0, base)
    try:
        yield base
    finally:
        control.down(base)
        assert not lab_dir(base).exists()


def test_report_of_a_real_lab_run_draws_the_chart_in_chromium(lab_home: Path, tmp_path: Path) -> None:
    exp = tmp_path / "slow.yaml"
    exp.write_text(EXPERIMENT)
    run_dir = tmp_path / "run"
    env = {**os.environ, "CHAOSLAB_HOME": str(lab_home)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaoslab.cli",
            "run",
            "--output",
            "json",
            "--run-dir",
            str(run_dir),
            str(exp),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["verdict"] == "deviated", proc.stderr[-2000:]
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["chaoslab"]["series"], "the run recorded no SLI series"

    # Reports are made from the journal alone: copy it away from the run directory first.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(run_dir / "journal.json", elsewhere / "journal.json")
    html = elsewhere / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BOOT,
            "report",
            str(elsewhere / "journal.json"),
            "--html",
            str(html),
            "--markdown",
            str(elsewhere / "pm.md"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Drain the slow replica" in (elsewhere / "pm.md").read_text()

    png = tmp_path / "shot.png"
    screenshot(html, png, tmp_path / "profile")

    shade = pixels_near(png, blend_on_white(COLOURS["fault"], 0.16), tol=4)
    assert len(shade) > 20_000, "the fault window is not shaded"
    fx0, fx1 = min(x for x, _ in shade), max(x for x, _ in shade)
    assert 50 < fx1 - fx0 < 800

    for name in ("p50", "p99", "throughput", "error_rate"):
        assert len(pixels_near(png, rgb(COLOURS[name]))) > 150, f"{name} line not drawn"

    p50_rows = sorted(y for x, y in pixels_near(png, rgb(COLOURS["p50"])) if x < fx0)
    p99_in_fault = [y for x, y in pixels_near(png, rgb(COLOURS["p99"])) if fx0 + 5 < x < fx1 - 5]
    assert p50_rows and p99_in_fault
    p50_level = p50_rows[len(p50_rows) // 2]
    # During the fault p99 ≈ 300 ms, p50 ≈ 2 ms: the p99 line runs far above the p50 line.
    assert p50_level - min(p99_in_fault) > 100


def test_abort_marker_is_drawn(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    journal.write_text(json.dumps(make_journal(guard=True, verdict="aborted")))
    html = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "report", str(journal), "--html", str(html)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "shot.png"
    screenshot(html, png, tmp_path / "profile")
    abort = pixels_near(png, rgb(COLOURS["abort"]))
    assert len(abort) > 200, "the abort marker is not drawn"
    xs = {x for x, _ in abort}
    shade = pixels_near(png, blend_on_white(COLOURS["fault"], 0.16), tol=4)
    fx0, fx1 = min(x for x, _ in shade), max(x for x, _ in shade)
    # The guard tripped 2.2 s into a 4.9 s fault: the marker is inside the shaded window.
    assert any(fx0 < x < fx1 for x in xs)
