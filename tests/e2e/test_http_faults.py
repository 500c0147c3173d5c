"""HTTP faults from an experiment, as a user runs it: ``http.abort`` on one route of the
lab, judged per route ("checkout breaks, the catalogue holds" in one verdict)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli import ROOT, chaoslab


def test_http_abort_on_one_route_breaks_that_route_only(tmp_path: Path) -> None:
    proc = chaoslab(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(ROOT / "experiments" / "lab-http-abort-checkout.yaml"),
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert result["verdict"] == "deviated"
    slo = {(r["objective"], r["window"]): r for r in result["slo"]}
    failed = sorted(key for key, r in slo.items() if r["verdict"] == "fail")
    assert failed == [("checkout-availability", "during")]
    during = slo[("checkout-availability", "during")]
    # Half the checkout requests aborted on each replica; the balancer's retries over the
    # three replicas leave about 1/8 failing: far from 0 and far from 1/2.
    assert 0.75 < during["estimate"] < 0.97, during
    assert slo[("catalogue-availability", "during")]["estimate"] == 1.0
    assert slo[("catalogue-availability", "during")]["samples"] > 300
    assert "on route checkout" in during["detail"]["slo"]
    journal = json.loads(Path(result["journal"]).read_text())
    faults = journal["chaoslab"]["faults"]
    assert len([f for f in faults if f["kind"] == "fault-reverted"]) == 3
    status = chaoslab("lab", "status", "--output", "json", cwd=tmp_path)
    assert json.loads(status.stdout)["running"] is False


def test_objective_on_an_unknown_route_is_invalid_input(tmp_path: Path) -> None:
    text = (ROOT / "experiments" / "lab-http-abort-checkout.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("route: catalogue,", "route: catalog,"))
    proc = chaoslab("validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "slo[1].route" in proc.stdout + proc.stderr and "catalog" in proc.stdout + proc.stderr
