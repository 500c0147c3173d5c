"""The control room's Budgets page against a real Prometheus scraping the lab.

Debian's ``prometheus`` scrapes the lab's replicas every second while requests go
through the balancer; the page must show each SLO file's budget left and burn rates, as
``chaoslab slo status`` computes them.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from chaoslab.lab import control
from chaoslab.serve.app import Control, create_app
from chaoslab.serve.auth import Auth
from chaoslab.serve.views import Sources
from tests.conftest import poll, require
from tests.integration import promfixture

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)  # see tests/unit/test_serve.py
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_budgets_page_shows_budget_left_and_burn_rates_from_prometheus(tmp_path: Path) -> None:
    require(promfixture.available(), "Debian package 'prometheus' (prometheus + promtool)")
    state = control.up(3, 1.0, tmp_path / "lab")
    try:
        targets = [f"127.0.0.1:{c.port}" for c in state.components.values() if c.kind == "replica"]
        with promfixture.running_prometheus(targets, tmp_path / "prom") as url:
            lb = control.lb_url(state, "")
            sources = Sources(
                home=tmp_path / "lab",
                run_roots=(tmp_path,),
                slo_files=(REPO / "experiments/slos/lab-availability.yaml",),
                prometheus_url=url,
            )
            page = ""
            with httpx.Client(timeout=2.0) as lab:

                def budget_shown() -> bool:
                    """20 more requests, then the page as a fresh app renders it (the page
                    caches Prometheus's answer for 15 s). Measured once the SLI is: before
                    two scrapes hold the traffic, the budget shows as untouched with no
                    SLI ("SLI —"), which is true but not what this test is after."""
                    nonlocal page
                    for _ in range(20):
                        lab.get(lb + "/")
                    app = create_app(Control(sources=sources, auth=Auth("x" * 20), open_views=True))
                    page = TestClient(app).get("/budgets").text
                    return "of the budget left" in page and "SLI —" not in page

                poll(budget_shown, timeout_s=60, interval_s=1.0)
    finally:
        control.down(tmp_path / "lab")
    assert "of the budget left" in page, page
    assert "<h2>lab-availability</h2>" in page
    left = float(page.split("<b>", 1)[1].split("%", 1)[0])
    assert left == 100.0  # every request was answered 2xx: nothing of the budget is spent
    assert "SLI 100.000%" in page
    burn = page[page.index('class="burn"') : page.index("</table>", page.index('class="burn"'))]
    # burn rates measured (0.0: traffic, none bad), not "no traffic", in some window
    assert re.search(r"<td>0\.0</td>", burn), burn
