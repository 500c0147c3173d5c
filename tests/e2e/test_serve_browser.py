"""The control room in a real browser against real runs on the lab.

``chaoslab serve`` runs as a user starts it (a subprocess on 127.0.0.1, port 0, the ready
line read from its stderr); ``chaoslab run`` runs lab experiments beside it; Debian's
headless ``chromium`` is driven by Playwright's Python package (``executable_path``: no
browser is downloaded). What a person would check:

- the live chart on the Now page gains points while the run goes, and the fault appears
  in the active-faults table and disappears once reverted;
- the big red button, pressed from the page after logging in, stops a running
  experiment within 1 s (every fault reverted and checked clean, and its ``run-finished``
  event written; the runner process exits after writing its journal), and the halt
  file and the audit log say who pressed it; release from the page lifts it;
- a browser that did not log in cannot halt: the button is disabled, and a forced form
  post is refused (401) and recorded, with nothing halted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoslab.lab import control
from chaoslab.safety.halt import is_halted
from tests.conftest import ROOT, poll, read_events_tolerant, require, wait_for_event, wait_until

pytestmark = [pytest.mark.chromium, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "e2e-control-room-token-0123456789"

EXPERIMENT = """
title: {title}
description: latency on replica-1 while the control room watches
tags: [lab, e2e]
lab: true
load: {{target: "lab:lb", path: /, rate: 100, timeout: 2s}}
windows: {{baseline: {baseline}, recovery: 1s, after: 2s}}
slo:
  - {{name: availability, sli: availability, objective: 0.9}}
method:
  - name: slow-replica-1
    do: proxy.latency
    target: lab:replica-1
    with: {{latency: 150ms}}
    duration: {duration}
"""


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require(CHROMIUM.exists(), "Debian package chromium at /usr/bin/chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python package playwright (dev extra)")
    base = tmp_path_factory.mktemp("serve-lab")
    control.up(3, 1.0, base)
    try:
        yield base
    finally:
        control.down(base)


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "CHAOSLAB_HOME": str(home), "PYTHONPATH": str(ROOT), "CHAOSLAB_SERVE_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def server(lab_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    runs = tmp_path_factory.mktemp("serve-runs")
    log = runs.parent / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaoslab.cli",
                "serve",
                "--port",
                "0",
                "--runs",
                str(runs),
                "--halt-grace",
                "5s",
            ],
            cwd=runs,
            env=env_for(lab_home),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def announced() -> str | None:
            """The URL the server prints once it listens (None while it starts)."""
            found = re.search(r"control room on (http://\S+/)", log.read_text())
            if found is None and proc.poll() is not None:
                raise AssertionError(f"chaoslab serve exited: {log.read_text()}")
            return found.group(1).rstrip("/") if found else None

        url = poll(announced, timeout_s=60, interval_s=0.05)
        assert url is not None, log.read_text()
        yield url, runs
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def browser(lab_home: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def start_run(
    home: Path, runs: Path, name: str, *, duration: str, baseline: str = "2s"
) -> subprocess.Popen[str]:
    exp = runs.parent / f"{name}.yaml"
    exp.write_text(EXPERIMENT.format(title=f"control room {name}", duration=duration, baseline=baseline))
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(runs / name), str(exp)],
        cwd=runs,
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(run_dir: Path) -> list[dict[str, Any]]:
    return read_events_tolerant(run_dir / "events.ndjson")


def drawn(page: Any) -> int:
    """Points of the p99 line of the Now page's chart."""
    return len((page.get_attribute("#running polyline.p99", "points") or "").split())


def points(page: Any) -> int:
    return int(page.get_attribute("#running figure.chart", "data-points") or 0)


def test_now_page_charts_a_live_run_and_shows_its_fault_come_and_go(
    server: tuple[str, Path], lab_home: Path, browser: Any
) -> None:
    url, runs = server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(url + "/")
    assert page.text_content("#running-count") == "0"
    run = start_run(lab_home, runs, "live", duration="10s")
    try:
        # The page notices the new run by itself (it polls /api/now) and starts its chart.
        page.wait_for_selector("#running article figure.chart", timeout=30_000)
        # (polled from here: the page's CSP forbids the eval that wait_for_function uses)
        # The first ticks of a run carry no samples yet (the load is starting): wait for
        # drawn p99 points, then for more of them while the run is still going.
        wait_until(lambda: drawn(page) >= 2, timeout_s=30, interval_s=0.05, what="two points of the p99 line")
        first = drawn(page)
        wait_until(lambda: drawn(page) > first, timeout_s=10, interval_s=0.05, what="the chart to grow")
        assert run.poll() is None, "the chart must update while the run goes"
        assert points(page) >= drawn(page) > first
        # The fault appears in the active-faults table (from the ledger), with its lease...
        row = page.wait_for_selector("#faults tbody tr[data-fault]", timeout=30_000)
        assert row is not None
        text = row.text_content() or ""
        # The phase follows the stream too: the page was rendered during the baseline (when
        # the run appeared) and shows the method without a reload.
        assert page.text_content("#running .phase", timeout=2000) in ("method", "during")
        assert "lab:replica-1" in text and "proxy.latency" in text
        injected = wait_for_event(runs / "live" / "events.ndjson", "fault-injected")

        assert injected["fault_id"] in text
        # ...and disappears when it is reverted, while the run is still going (after window).
        page.wait_for_selector("#faults tbody tr[data-fault]", state="detached", timeout=30_000)
        assert any(e["kind"] == "fault-reverted" for e in events(runs / "live"))
        run.communicate(timeout=60)
        assert run.returncode == 0, run.returncode
        # The run page replays the whole stream and shows the verdict it ended with.
        run_id = wait_for_event(runs / "live" / "events.ndjson", "run-started")["run_id"]
        page.goto(f"{url}/runs/{run_id}")
        page.wait_for_selector("figure.chart[data-finished]", timeout=20_000)
        assert page.text_content("#verdict") == "passed"
        page.click("text=full report")
        assert "control room live" in page.content()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        page.close()


def test_halt_from_the_page_stops_the_run_within_a_second_and_is_recorded(
    server: tuple[str, Path], lab_home: Path, browser: Any
) -> None:
    url, runs = server
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url + "/login?next=/halt")
    page.fill("input[name=name]", "alice")
    page.fill("input[name=token]", TOKEN)
    page.click("button:has-text('log in')")
    page.wait_for_url(url + "/halt")
    run = start_run(lab_home, runs, "halted", duration="60s", baseline="1s")
    ended: list[float] = []
    waiter = threading.Thread(target=lambda: (run.wait(), ended.append(time.time())), daemon=True)
    waiter.start()
    try:
        wait_for_event(runs / "halted" / "events.ndjson", "fault-injected")
        page.reload()
        page.fill("input[name=reason]", "e2e: INC-21")
        page.check("input[name=confirm]")
        pressed = time.time()
        page.click("#halt-button")
        page.wait_for_selector("#result", timeout=30_000)
        finished = wait_for_event(runs / "halted" / "events.ndjson", "run-finished", timeout_s=10)
        waiter.join(timeout=30)
        state = is_halted(lab_home)
        assert state is not None
        evs = events(runs / "halted")
        reverted = [e for e in evs if e["kind"] == "fault-reverted"]
        clean = [e for e in evs if e["kind"] == "clean-checked"]
        assert reverted and all(e["ok"] for e in reverted) and clean and all(e["clean"] for e in clean)
        press_s = state.since - pressed
        clean_s = max(e["ts"] for e in clean) - pressed
        stop_s = finished["ts"] - pressed
        exit_s = ended[0] - pressed
        print(
            f"halt from the page: halt file after {press_s:.3f}s, faults reverted and clean after"
            f" {clean_s:.3f}s, run-finished after {stop_s:.3f}s, runner process gone after {exit_s:.3f}s"
        )
        assert finished["verdict"] == "aborted" and "halt" in finished["reason"]
        # Stopped: every fault reverted and checked clean, and the verdict written.
        assert stop_s < 1.0, f"the run took {stop_s:.3f}s to stop"
        # The runner then writes its journal and report and exits (bounded, not the promise).
        assert exit_s < 10.0, f"the runner took {exit_s:.3f}s to exit"
        assert run.returncode == 3
        # Recorded: the halt file and the audit log name who pressed the button.
        assert state.by.startswith("alice via chaoslab serve") and state.reason == "e2e: INC-21"
        audit = [json.loads(line) for line in (lab_home / "serve-audit.ndjson").read_text().splitlines()]
        assert (
            audit[-1]["action"] == "halt"
            and audit[-1]["by"] == "alice"
            and audit[-1]["remote"] == "127.0.0.1"
        )
        assert "alice" in (page.text_content("#audit") or "")
        page.goto(url + "/")
        assert page.is_visible("#halt-banner")
        # Release, likewise from the page.
        page.goto(url + "/halt")
        page.check("input[name=confirm]")
        page.click("#release-button")
        page.wait_for_selector("#result", timeout=30_000)
        assert is_halted(lab_home) is None
        audit = [json.loads(line) for line in (lab_home / "serve-audit.ndjson").read_text().splitlines()]
        assert audit[-1]["action"] == "release" and audit[-1]["by"] == "alice"
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
        ctx.close()
        if is_halted(lab_home) is not None:
            from chaoslab.safety.halt import release

            release(lab_home)


def test_a_browser_that_did_not_log_in_cannot_halt(
    server: tuple[str, Path], lab_home: Path, browser: Any
) -> None:
    url, _ = server
    ctx = browser.new_context()
    page = ctx.new_page()
    try:
        page.goto(url + "/halt")
        assert page.is_disabled("#halt-button")
        before = (
            (lab_home / "serve-audit.ndjson").read_text()
            if (lab_home / "serve-audit.ndjson").exists()
            else ""
        )
        # Force the disabled form through anyway.
        page.evaluate("() => { document.getElementById('halt-button').disabled = false; }")
        page.check("input[name=confirm]")
        page.click("#halt-button")
        page.wait_for_selector("#problem", timeout=30_000)
        assert "halt refused: not authenticated" in (page.text_content("#problem") or "")
        status = page.evaluate(
            "async () => (await fetch('/halt', {method: 'POST', body: new URLSearchParams({confirm: 'yes'})})).status"
        )
        assert status == 401
        assert is_halted(lab_home) is None
        after = (lab_home / "serve-audit.ndjson").read_text()[len(before) :].splitlines()
        assert [json.loads(line)["action"] for line in after] == ["halt-refused", "halt-refused"]
    finally:
        ctx.close()
