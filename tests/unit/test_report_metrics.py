"""Prometheus exports: the text exposition file, and a push to a real Pushgateway."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaoslab.report.metrics import MetricsError, build_registry, exposition, push, write_metrics_file
from chaoslab.report.view import RunView
from tests.conftest import poll, require
from tests.journals import make_journal


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_file_has_runs_by_verdict_duration_breach_and_budget(tmp_path: Path) -> None:
    view = RunView.from_journal(make_journal(guard=True, verdict="aborted"))
    path = tmp_path / "textfile" / "chaoslab.prom"
    write_metrics_file(path, build_registry([("slow", view)]))
    got = samples(path.read_text())
    assert got[("chaoslab_runs", (("verdict", "aborted"),))] == 1
    assert got[("chaoslab_runs", (("verdict", "passed"),))] == 0
    assert got[("chaoslab_run_verdict", (("experiment", "slow"), ("verdict", "aborted")))] == 1
    assert got[("chaoslab_run_duration_seconds", (("experiment", "slow"),))] == 20.0
    assert got[("chaoslab_run_breach_to_clean_seconds", (("experiment", "slow"),))] == 0.4
    key = (
        "chaoslab_run_error_budget_consumed_ratio",
        (("experiment", "slow"), ("objective", "p99"), ("window", "during")),
    )
    assert got[key] == pytest.approx(15.0)
    assert not any(name == "chaoslab_gate_score" for name, _ in got)


def test_no_breach_metric_without_a_guard_trip() -> None:
    text = exposition(build_registry([("slow", RunView.from_journal(make_journal()))]))
    assert "chaoslab_run_breach_to_clean_seconds{" not in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    require(binary is not None, "Debian package prometheus-pushgateway")
    assert binary is not None
    port = free_port()
    log = (tmp_path / "pgw.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"pushgateway exited: {(tmp_path / 'pgw.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        if poll(ready, timeout_s=10, interval_s=0.1) is None:
            pytest.fail(f"pushgateway did not start: {(tmp_path / 'pgw.log').read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_push_to_a_real_pushgateway(pushgateway: str) -> None:
    view = RunView.from_journal(make_journal())
    push(
        pushgateway,
        build_registry([("slow", view)]),
        job="chaoslab_test",
        grouping_key={"experiment": "slow"},
    )
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    got = samples(text)
    key = (
        "chaoslab_run_verdict",
        (("experiment", "slow"), ("instance", ""), ("job", "chaoslab_test"), ("verdict", "deviated")),
    )
    assert got[key] == 1


def test_push_to_nothing_is_a_metrics_error() -> None:
    registry = build_registry([("slow", RunView.from_journal(make_journal()))])
    with pytest.raises(MetricsError, match="cannot push metrics"):
        push(f"http://127.0.0.1:{free_port()}", registry, timeout_s=2)
