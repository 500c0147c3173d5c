"""Make the control-room screenshots in this directory from real lab runs.

Starts the lab and a Prometheus scraping it (Debian's ``prometheus``) in a temporary
CHAOSLAB_HOME, runs two short experiments to completion, starts a third that stays in
its fault while the pages are shot, and has headless Chromium (Debian's, through
Playwright) take each page at laptop width and the Now page at phone width. PNGs are
reduced to a small palette with Pillow.

    .venv/bin/python docs/control-room/shoot.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chaoslab.lab import control  # noqa: E402
from tests.integration import promfixture  # noqa: E402

HERE = Path(__file__).parent
TOKEN = "screenshot-token-0123456789abcdef"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
EXPERIMENT = """
title: {title}
description: latency on replica-1
tags: [lab, proxy, {tag}]
lab: true
load: {{target: "lab:lb", path: /, rate: 200, timeout: 2s}}
windows: {{baseline: 3s, recovery: 1s, after: 3s}}
slo:
  - {{name: availability, sli: availability, objective: 0.9}}
  - {{name: p99-latency, sli: latency, percentile: 99, threshold: {threshold}}}
method:
  - name: slow-replica-1
    do: proxy.latency
    target: lab:replica-1
    with: {{latency: 150ms}}
    duration: {duration}
"""


def run(
    home: Path, runs: Path, name: str, *, title: str, tag: str, threshold: str, duration: str
) -> subprocess.Popen[bytes]:
    exp = runs.parent / f"{name}.yaml"
    exp.write_text(EXPERIMENT.format(title=title, tag=tag, threshold=threshold, duration=duration))
    env = {**os.environ, "CHAOSLAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab.cli", "run", "--run-dir", str(runs / name), str(exp)],
        env=env, stdout=(runs.parent / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def shrink(png: Path) -> None:
    img = Image.open(png).convert("RGB")
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoot-"))
    home, runs = tmp / "home", tmp / "runs"
    runs.mkdir(parents=True)
    state = control.up(3, 1.0, home)
    server = None
    try:
        targets = [f"127.0.0.1:{c.port}" for c in state.components.values() if c.kind == "replica"]
        with promfixture.running_prometheus(targets, tmp / "prom") as prom:
            for name, title, tag, thr in (
                ("a", "Slow replica within the p99 budget", "latency", "500ms"),
                ("b", "Slow replica breaks p99", "latency", "100ms"),
            ):
                run(home, runs, name, title=title, tag=tag, threshold=thr, duration="3s").wait(120)
            log = tmp / "serve.log"
            env = {
                **os.environ,
                "CHAOSLAB_HOME": str(home),
                "CHAOSLAB_SERVE_TOKEN": TOKEN,
                "PYTHONPATH": str(ROOT),
            }
            with log.open("w") as err:
                server = subprocess.Popen(
                    [sys.executable, "-m", "chaoslab.cli", "serve", "--port", "0", "--runs", str(runs),
                     "-s", str(ROOT / "scenarios"), "--prometheus", prom,
                     "--slo", str(ROOT / "experiments/slos/lab-availability.yaml"),
                     "--slo", str(ROOT / "experiments/slos/lab-latency.yaml")],
                    env=env, stdout=subprocess.DEVNULL, stderr=err,
                )  # fmt: skip
            url = None
            for _ in range(600):
                m = re.search(r"control room on (http://\S+)/", log.read_text())
                if m:
                    url = m.group(1)
                    break
                time.sleep(0.05)
            assert url, log.read_text()
            live = run(
                home, runs, "live", title="Slow replica, live", tag="live", threshold="500ms", duration="25s"
            )
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = b.new_page(viewport={"width": 1000, "height": 700})
                page.goto(url + "/")
                try:
                    page.wait_for_selector("#faults tbody tr[data-fault]", timeout=60_000)
                except Exception:
                    print((runs.parent / "live.log").read_text(), log.read_text())
                    raise
                time.sleep(8)
                page.screenshot(path=HERE / "now.png", full_page=True)
                phone = b.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
                phone.goto(url + "/")
                time.sleep(6)
                phone.screenshot(path=HERE / "now-phone.png", full_page=True)
                page.goto(url + "/history")
                page.screenshot(path=HERE / "history.png", full_page=True)
                page.goto(url + "/calendar")
                page.screenshot(path=HERE / "calendar.png", full_page=True)
                page.goto(url + "/budgets")
                page.screenshot(path=HERE / "budgets.png", full_page=True)
                page.goto(url + "/login?next=/halt")
                page.fill("input[name=name]", "alice")
                page.fill("input[name=token]", TOKEN)
                page.click("button:has-text('log in')")
                page.wait_for_url(url + "/halt")
                page.fill("input[name=reason]", "INC-4711: checkout errors")
                page.check("input[name=confirm]")
                page.screenshot(path=HERE / "halt.png", full_page=True)
                page.click("#halt-button")
                page.wait_for_selector("#result", timeout=60_000)
                page.screenshot(path=HERE / "halted.png", full_page=True)
                page.check("input[name=confirm]")
                page.click("#release-button")
                page.wait_for_selector("#result", timeout=60_000)
                live.wait(60)
                page.goto(url + "/history")
                rid = page.get_attribute("#history tbody a", "href")
                page.goto(url + str(rid))
                page.wait_for_selector("figure.chart[data-finished]", timeout=30_000)
                page.screenshot(path=HERE / "run.png", full_page=True)
                b.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        control.down(home)
        shutil.rmtree(tmp, ignore_errors=True)
    for png in HERE.glob("*.png"):
        shrink(png)
        print(f"{png.name}: {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
