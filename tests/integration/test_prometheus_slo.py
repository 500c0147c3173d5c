"""SLOs read from a real Prometheus scraping the real lab, checked against the load
generator's own request records.

One Prometheus (Debian's binary, temp config and TSDB, 1 s scrapes) scrapes the lab's
three replicas. Traffic through the lab's balancer: 100 req/s of ``/`` for 34 s; in the
last 14 s also 25 req/s of ``/missing`` (404: not good) and 2 req/s of ``/work?ms=150``
(served in ≥ 150 ms: not within 100 ms). Every number chaoslab reads from Prometheus —
events, SLI, budget remaining, burn rates over the scaled windows, the alert pairs that
fire, the gate's decision and the allowance — is compared with the same quantity
computed from the generators' per-request records.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaoslab.errors import SLIError
from chaoslab.lab import control
from chaoslab.model.openslo import load_slo_files
from chaoslab.model.sections import SLOFiles, decode_slo_files
from chaoslab.sli.budget import budget_status
from chaoslab.sli.budget_gate import allowance_for, check_budget, spent_since, steady_state_from_files
from chaoslab.sli.loadgen import LoadGenerator
from chaoslab.sli.prometheus import PrometheusClient, PrometheusSLI, PrometheusSource
from tests.conftest import require, wait_until
from tests.integration import promfixture

REPO = Path(__file__).resolve().parents[2]
CLI = [
    sys.executable,
    "-c",
    "from chaoslab.cli import main; from chaoslab.sli.slo_cli import register; register(main); main()",
]
GOOD = 'lab_requests_total{path!~"/metrics|/health",code=~"[23].."}'
TOTAL = 'lab_requests_total{path!~"/metrics|/health"}'


@dataclass(frozen=True)
class Lab:
    url: str  # Prometheus
    lb: str
    base: Path


@dataclass(frozen=True)
class Traffic:
    records: list[tuple[float, float, int, str]]  # (unix scheduled time, latency, code, path)
    t0: float
    at: float  # evaluation time, inside the error phase


def section(raw: dict[str, Any]) -> SLOFiles:
    """The experiment's SLO-file keys, decoded as the loader does."""
    decoded = decode_slo_files(raw)
    assert isinstance(decoded, SLOFiles), decoded
    return decoded


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require(promfixture.available(), "Debian package 'prometheus' (prometheus + promtool)")
    base = tmp_path_factory.mktemp("promlab")
    state = control.up(3, 1.0, base)
    try:
        targets = [f"127.0.0.1:{c.port}" for c in state.components.values() if c.kind == "replica"]
        with promfixture.running_prometheus(targets, base / "prom") as url:
            yield Lab(url=url, lb=control.lb_url(state, ""), base=base)
    finally:
        control.down(base)


def _records(gen: LoadGenerator, path: str) -> list[tuple[float, float, int, str]]:
    return [(gen.epoch + s, lat, c, path) for s, lat, c in zip(gen.sched, gen.latency, gen.code, strict=True)]


@pytest.fixture(scope="module")
def traffic(lab: Lab) -> Traffic:
    ok = LoadGenerator(url=lab.lb + "/", rate=100, max_duration_s=34.0, timeout_s=2.0, name="ok")
    bad = LoadGenerator(url=lab.lb + "/missing", rate=25, max_duration_s=14.0, timeout_s=2.0, name="bad")
    slow = LoadGenerator(url=lab.lb + "/work?ms=150", rate=2, max_duration_s=14.0, timeout_s=5.0, name="slow")
    ok.start()
    t0 = ok.epoch
    time.sleep(20.0)  # the traffic's shape, not a barrier: 20 s of good requests only
    bad.start()
    slow.start()
    for gen in (ok, bad, slow):
        assert gen.wait(30), f"load generator {gen.name} did not finish"
        gen.stop()
    at = t0 + 33.0  # the error phase is [t0 + 20, t0 + 34)
    done = max(time.time(), at)  # every request has been answered (and counted) by now
    wait_until(
        lambda: (promfixture.last_scraped(lab.url) or 0.0) > done,
        timeout_s=15,
        interval_s=0.2,
        what="a scrape of every replica after the last request",
    )
    records = _records(ok, "/") + _records(bad, "/missing") + _records(slow, "/work")
    assert {c for _, _, c, p in records if p == "/missing"} == {404}
    assert {c for _, _, c, p in records if p != "/missing"} == {200}
    return Traffic(records=records, t0=t0, at=at)


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def _ratio_slo(tmp: Path, name: str, objective: float, good: str = GOOD, total: str = TOTAL) -> Path:
    return _write(
        tmp,
        f"{name}.yaml",
        f"""slos:
  - name: {name}
    objective: {objective}
    window: 1d
    ratio:
      good: '{good}'
      total: '{total}'
""",
    )


def _expected(traffic: Traffic, window_s: float) -> tuple[int, int]:
    """(bad, total) user requests scheduled in [at − window, at) by the generators' records."""
    lo = traffic.at - window_s
    rows = [r for r in traffic.records if lo <= r[0] < traffic.at]
    return sum(1 for r in rows if not 200 <= r[2] < 400), len(rows)


def test_budget_and_burn_rates_match_the_request_records(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    (slo,) = load_slo_files([_ratio_slo(tmp_path, "avail", 0.99)])
    with PrometheusClient(lab.url) as client:
        # The lab's Prometheus scrapes every second: windows down to 4 s are usable.
        st = budget_status(PrometheusSLI(client, slo), traffic.at, scrape_interval_s=1.0)
    # The SLO window (1 d) holds all the traffic.
    bad, total = _expected(traffic, 86400)
    print(f"records: {bad} bad of {total}; prometheus: {st.counts.bad:.1f} of {st.counts.total:.1f}")
    assert st.counts.total == pytest.approx(total, rel=0.05)
    assert st.counts.bad == pytest.approx(bad, rel=0.08)
    expected_remaining = 1 - (bad / total) / 0.01
    print(f"budget remaining: expected {expected_remaining:.3f}, prometheus {st.budget_remaining:.3f}")
    assert st.budget_remaining == pytest.approx(expected_remaining, abs=0.1 * abs(expected_remaining) + 0.05)
    assert st.exhausted
    # Burn rates over the windows scaled to 1 d (5m→10s, 30m→1m, 1h→2m, 2h→4m ...).
    assert st.burn_windows_s["5m"] == 10 and st.burn_windows_s["1h"] == 120
    for name, seconds in st.burn_windows_s.items():
        b, n = _expected(traffic, seconds)
        want = (b / n) / 0.01
        got = st.burn[name]
        print(f"burn {name} ({seconds:g}s): records {want:.2f}x, prometheus {got}")
        assert got is not None
        assert got == pytest.approx(want, rel=0.12, abs=0.3)
    # The 10 s window sees only the error phase (~19.7x); 1m and longer also the calm.
    assert st.burn["5m"] is not None and st.burn["5m"] > 14.4 > (st.burn["1h"] or 0) > 6
    assert set(st.firing) == {"page 6h/30m", "ticket 1d/2h", "ticket 3d/6h"}


def test_latency_sli_counts_the_slow_requests(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "lat.yaml",
        """slos:
  - name: fast
    objective: 0.95
    window: 1d
    latency: {metric: lab_request_duration_seconds, threshold: 100ms}
""",
    )
    (slo,) = load_slo_files([path])
    with PrometheusClient(lab.url) as client:
        sli = PrometheusSLI(client, slo)
        assert sli.bucket_le() == "0.1"
        ev = sli.events(120.0, traffic.at)
    slow = sum(1 for r in traffic.records if r[3] == "/work" and traffic.at - 120 <= r[0] < traffic.at)
    print(f"slow requests: records {slow}, prometheus bad {ev.bad:.1f} of {ev.total:.1f}")
    assert slow >= 20
    assert ev.bad == pytest.approx(slow, abs=max(3.0, 0.15 * slow))
    # The histogram also counts the lab's own /health and /metrics requests (all fast).
    assert ev.total > sum(1 for r in traffic.records if traffic.at - 120 <= r[0] < traffic.at) * 0.9


def test_threshold_without_bucket_boundary_is_an_error(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "lat120.yaml",
        """slos:
  - name: fast
    objective: 0.95
    window: 1d
    latency: {metric: lab_request_duration_seconds, threshold: 120ms}
""",
    )
    (slo,) = load_slo_files([path])
    with PrometheusClient(lab.url) as client, pytest.raises(SLIError) as info:
        budget_status(PrometheusSLI(client, slo), traffic.at)
    msg = str(info.value)
    assert "no histogram bucket boundary at 0.12s" in msg
    assert "0.1s or 0.25s" in msg


def test_missing_series_is_an_error_not_a_pass(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    path = _ratio_slo(
        tmp_path,
        "ghost",
        0.99,
        good='lab_requests_total{path="/never",code="200"}',
        total='lab_requests_total{path="/never"}',
    )
    (slo,) = load_slo_files([path])
    with PrometheusClient(lab.url) as client, pytest.raises(SLIError, match="no data"):
        budget_status(PrometheusSLI(client, slo), traffic.at)


def test_timeslices_count_the_bad_slices(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "slices.yaml",
        f"""slos:
  - name: slices
    objective: 0.5
    window: 1d
    budgeting: timeslices
    timeslice: {{window: 5s, target: 0.9}}
    ratio: {{good: '{GOOD}', total: '{TOTAL}'}}
""",
    )
    (slo,) = load_slo_files([path])
    with PrometheusClient(lab.url) as client:
        ev = PrometheusSLI(client, slo).timeslices(traffic.t0, traffic.at)
    # Slices end at t0+5 ... t0+30; the two ending at t0+25 and t0+30 lie in the error
    # phase (ratio 0.8 < 0.9), the others see no 404 at all.
    per_slice = []
    for k in range(1, 7):
        lo, hi = traffic.t0 + 5 * (k - 1), traffic.t0 + 5 * k
        rows = [r for r in traffic.records if lo <= r[0] < hi]
        per_slice.append(sum(1 for r in rows if r[2] == 200) / len(rows))
    assert [v >= 0.9 for v in per_slice] == [True, True, True, True, False, False]
    assert ev.unit == "slices" and ev.total in (5.0, 6.0) and ev.bad == 2.0


def test_ratio_timeslices_is_the_mean_of_the_slice_ratios(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    """OpenSLO RatioTimeslices (the spec's examples/budgeting-method/ratio-timeslices.yaml shape)."""
    path = _write(
        tmp_path,
        "ratio-slices.yaml",
        f"""apiVersion: openslo/v1
kind: SLO
metadata: {{name: ratio-slices}}
spec:
  service: lab
  indicator:
    metadata: {{name: lab-ok}}
    spec:
      ratioMetric:
        good: {{metricSource: {{type: Prometheus, spec: {{query: '{GOOD}'}}}}}}
        total: {{metricSource: {{type: Prometheus, spec: {{query: '{TOTAL}'}}}}}}
  timeWindow: [{{duration: 1d, isRolling: true}}]
  budgetingMethod: RatioTimeslices
  objectives: [{{op: gt, target: 0.5, timeSliceWindow: 1m}}]
""",
    )
    (slo,) = load_slo_files([path])
    # 5 s slices (shorter than the spec's shorthand allows) so the run has several.
    slo = dataclasses.replace(slo, objective=dataclasses.replace(slo.objective, time_slice_window_s=5.0))
    with PrometheusClient(lab.url) as client:
        ev = PrometheusSLI(client, slo).timeslices(traffic.t0, traffic.at)
    per_slice = []
    for k in range(1, 7):
        lo, hi = traffic.t0 + 5 * (k - 1), traffic.t0 + 5 * k
        rows = [r for r in traffic.records if lo <= r[0] < hi]
        per_slice.append(sum(1 for r in rows if r[2] == 200) / len(rows))
    assert ev.unit == "slices" and ev.total in (5.0, 6.0)
    expected = sum(per_slice[-int(ev.total) :]) / ev.total
    assert ev.ratio == pytest.approx(expected, abs=0.03)
    # Two of the slices are at 0.8: the mean is below 1, unlike a count of good slices at 0.5.
    assert ev.ratio is not None and ev.ratio < 0.97


def test_budget_gate_refuses_with_numbers_and_override_lets_it_run(
    lab: Lab, traffic: Traffic, tmp_path: Path
) -> None:
    _ratio_slo(tmp_path, "avail", 0.99)
    exp = {"slo_files": ["avail.yaml"], "prometheus": lab.url, "allowance": {"budget_share": 0.05}}
    decision = check_budget(section(exp), tmp_path, at=traffic.at, scrape_interval_s=1.0)
    assert not decision.allowed and decision.refused
    text = decision.format()
    assert "avail: error budget exhausted: " in text and "remaining)" in text
    assert "avail: page-level burn active (page 6h/30m;" in text
    assert decision.statuses[0].counts.bad > 0
    overridden = check_budget(
        section({**exp, "budget_gate": {"override": True, "reason": "drill"}}), tmp_path, at=traffic.at
    )
    assert (
        overridden.allowed and overridden.overridden and "overridden explicitly: drill" in overridden.format()
    )
    # Prometheus down: not knowing is a refusal too.
    down = check_budget(section({**exp, "prometheus": "http://127.0.0.1:9"}), tmp_path, at=traffic.at)
    assert not down.allowed and "cannot reach Prometheus" in down.format()


def test_allowance_is_a_share_of_the_remaining_budget(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    _ratio_slo(tmp_path, "loose", 0.8)
    exp = {"slo_files": ["loose.yaml"], "prometheus": lab.url, "allowance": {"budget_share": 0.05}}
    decision = check_budget(section(exp), tmp_path, at=traffic.at)
    assert decision.allowed and not decision.refused, decision.format()
    (allow,) = decision.allowances
    bad, total = _expected(traffic, 86400)
    want = 0.05 * (0.2 * total - bad)
    print(f"allowance: records {want:.1f} bad events, prometheus {allow.bad_events:.1f}")
    assert allow.bad_events == pytest.approx(want, rel=0.1)
    assert allowance_for(decision.statuses[0], 0.5).bad_events == pytest.approx(10 * allow.bad_events)
    # What a run spent: the error phase's 404s, counted by Prometheus.
    (slo,) = load_slo_files([tmp_path / "loose.yaml"])
    with PrometheusClient(lab.url) as client:
        spent = spent_since(PrometheusSLI(client, slo), traffic.t0 + 20.0, traffic.at)
    b, _ = _expected(traffic, 13.0)
    assert spent == pytest.approx(b, rel=0.15)
    assert allow.exceeded(spent) == (spent > allow.bad_events)


def test_prometheus_source_serves_experiment_objectives(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    _ratio_slo(tmp_path, "avail", 0.99)
    objectives, sources = steady_state_from_files(
        section({"slo_files": ["avail.yaml"], "prometheus": lab.url}), tmp_path
    )
    (obj,) = objectives
    src = sources[obj.source]
    assert isinstance(src, PrometheusSource)
    src.start()
    c = src.counts(traffic.t0 + 21.0, traffic.at)
    b, n = _expected(traffic, 12.0)
    assert c.total == pytest.approx(n, rel=0.15) and (c.total - c.good) == pytest.approx(b, rel=0.15)
    rows = [r for r in src.series(traffic.t0 + 5, traffic.at) if r.n]
    assert rows and max(r.n for r in rows) == pytest.approx(127, rel=0.2)  # 100 + 25 + 2 req/s
    newest = src.last_sample_at()
    assert newest is not None and time.time() - newest < 5
    src.stop()


def test_cli_status_and_rules(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    files = [
        str(REPO / "experiments/slos/lab-availability.yaml"),
        str(REPO / "experiments/slos/lab-latency.yaml"),
    ]
    proc = subprocess.run(
        [*CLI, "slo", "status", *files, "--prometheus", lab.url, "--scrape-interval", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "lab-availability: target 99% over 1d" in proc.stdout
    assert "lab-latency" in proc.stdout and "budget remaining" in proc.stdout
    assert "5m≈10s" in proc.stdout and "firing:" in proc.stdout
    out = tmp_path / "rules.yaml"
    proc = subprocess.run(
        [*CLI, "slo", "rules", *files, "--out-file", str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([promfixture.PROMTOOL, "check", "rules", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    # Invalid input: file, line and field, exit code 2, no traceback.
    bad = _write(tmp_path, "bad.yaml", "slos:\n  - name: x\n    objective: 99\n    window: 1m\n")
    proc = subprocess.run(
        [*CLI, "slo", "status", str(bad), "--prometheus", lab.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{bad}:3 at slos[0].objective" in proc.stderr
    assert "slos[0].ratio" in proc.stderr


def test_stale_data_is_an_error(lab: Lab, traffic: Traffic, tmp_path: Path) -> None:
    """Last in the module: takes the lab down, so its series go stale in Prometheus."""
    (slo,) = load_slo_files([_ratio_slo(tmp_path, "avail", 0.99)])
    with PrometheusClient(lab.url) as client:
        sli = PrometheusSLI(client, slo)
        assert sli.freshness().newest is not None
        control.down(lab.base)

        def stale() -> str | None:
            try:
                sli.freshness()
            except SLIError as exc:
                return str(exc)
            return None

        error = wait_until(stale, timeout_s=10, interval_s=0.5, what="Prometheus to call the data stale")
        assert "stale data" in error
        with pytest.raises(SLIError, match="stale"):
            budget_status(sli)
    assert math.isfinite(traffic.at)
