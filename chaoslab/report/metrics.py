"""Run outcomes for Prometheus: a text exposition file and a Pushgateway push.

Uses ``prometheus_client`` (a fresh ``CollectorRegistry`` per call: no global state, two
gates in one process never mix). The file suits node_exporter's textfile collector; the
push suits batch jobs such as CI pipelines.

Metrics (``experiment`` is the gate entry name, or the experiment title for one run)::

    chaoslab_runs{verdict}                                   runs by verdict (every verdict, zeros too)
    chaoslab_run_verdict{experiment,verdict}                 1 for the run's verdict
    chaoslab_run_duration_seconds{experiment}
    chaoslab_run_breach_to_clean_seconds{experiment}         only runs the guard stopped
    chaoslab_run_time_to_recover_seconds{experiment}         when measured
    chaoslab_run_error_budget_consumed_ratio{experiment,objective,window}
                                                             1.0 = the window's whole budget
    chaoslab_run_last_timestamp_seconds{experiment}          when the run ended
    chaoslab_gate_score{suite}                               0..100, gates only
    chaoslab_gate_result{suite,result}                       1 for the gate's result
    chaoslab_gate_exit_code{suite}

Gauges throughout: a push or a textfile replaces the previous values, so counters would
reset on every batch anyway.

Requires ``prometheus_client`` (extra ``chaoslab[metrics]``); imported lazily so the
rest of chaoslab works without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoslab.errors import ChaoslabError
from chaoslab.report.score import CREDIT
from chaoslab.report.view import RunView

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from chaoslab.report.gateresult import GateResult


class MetricsError(ChaoslabError):
    """Writing or pushing metrics failed (the Pushgateway is down, the file is unwritable)."""


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MetricsError("metrics need prometheus_client: pip install 'chaoslab[metrics]'") from exc
    return prometheus_client


def build_registry(runs: Sequence[tuple[str, RunView]], gate: GateResult | None = None) -> CollectorRegistry:
    """A registry holding the metrics above for ``runs`` (name, view) and an optional gate."""
    pc = _client()
    reg = pc.CollectorRegistry()
    g = pc.Gauge
    runs_by = g("chaoslab_runs", "Runs by verdict.", ["verdict"], registry=reg)
    verdict = g("chaoslab_run_verdict", "1 for the run's verdict.", ["experiment", "verdict"], registry=reg)
    duration = g("chaoslab_run_duration_seconds", "Run duration.", ["experiment"], registry=reg)
    b2c = g(
        "chaoslab_run_breach_to_clean_seconds",
        "Guard breach to every fault reverted.",
        ["experiment"],
        registry=reg,
    )
    ttr = g("chaoslab_run_time_to_recover_seconds", "Time to recover.", ["experiment"], registry=reg)
    budget = g(
        "chaoslab_run_error_budget_consumed_ratio",
        "Share of the window's error budget consumed.",
        ["experiment", "objective", "window"],
        registry=reg,
    )
    last = g(
        "chaoslab_run_last_timestamp_seconds", "When the run ended (Unix time).", ["experiment"], registry=reg
    )
    counts = dict.fromkeys(CREDIT, 0)
    for name, view in runs:
        counts[view.verdict] = counts.get(view.verdict, 0) + 1
        verdict.labels(name, view.verdict).set(1)
        duration.labels(name).set(view.duration_s)
        last.labels(name).set(view.end)
        if view.breach_to_clean_s is not None:
            b2c.labels(name).set(view.breach_to_clean_s)
        if view.time_to_recover_s is not None:
            ttr.labels(name).set(view.time_to_recover_s)
        for r in view.slo:
            if r.budget_consumed is not None:
                budget.labels(name, r.objective, r.window).set(r.budget_consumed)
    if gate is not None:
        # Runs that never produced a journal still count, under the verdict the gate gave them.
        named = {n for n, _ in runs}
        for o in gate.outcomes:
            if o.entry.name not in named:
                counts[o.verdict] = counts.get(o.verdict, 0) + 1
        score = g("chaoslab_gate_score", "Resilience score 0..100.", ["suite"], registry=reg)
        result = g("chaoslab_gate_result", "1 for the gate's result.", ["suite", "result"], registry=reg)
        code = g("chaoslab_gate_exit_code", "The gate's exit code.", ["suite"], registry=reg)
        score.labels(gate.suite.name).set(gate.score.value)
        result.labels(gate.suite.name, gate.exit.name.lower()).set(1)
        code.labels(gate.suite.name).set(int(gate.exit))
    for v, n in counts.items():
        runs_by.labels(v).set(n)
    registry: CollectorRegistry = reg
    return registry


def gate_runs(gate: GateResult) -> list[tuple[str, RunView]]:
    return [(o.entry.name, o.view) for o in gate.outcomes if o.view is not None]


def write_metrics_file(path: Path, registry: CollectorRegistry) -> None:
    """Write the exposition text atomically (``write_to_textfile`` renames a temp file)."""
    pc = _client()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pc.write_to_textfile(str(path), registry)
    except OSError as exc:
        raise MetricsError(f"cannot write metrics to {path}: {exc}") from exc


def push(
    url: str,
    registry: CollectorRegistry,
    *,
    job: str = "chaoslab",
    grouping_key: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> None:
    """PUT the registry to a Pushgateway (replaces the group's previous metrics)."""
    pc = _client()
    try:
        pc.push_to_gateway(
            url, job=job, registry=registry, grouping_key=dict(grouping_key or {}), timeout=timeout_s
        )
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise MetricsError(f"cannot push metrics to {url}: {exc}") from exc


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition format, for printing or tests."""
    return str(_client().generate_latest(registry).decode("utf-8"))
