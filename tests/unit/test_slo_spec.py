"""SLO spec validation (field paths) and judging per window on a real series file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaoslab.errors import InvalidInput, SLIError
from chaoslab.model.sections import LoadSpec, decode_load, decode_slos
from chaoslab.sli.base import SecondStats, hist_index
from chaoslab.sli.ctk import slo_check, slo_ok
from chaoslab.sli.series_file import SeriesFileSource
from chaoslab.sli.slo import SLIKind, judge
from chaoslab.verdict import Verdict
from tests.verdicts import verdict_of_slos

EXAMPLE = [
    {"name": "availability", "sli": "availability", "objective": 0.99},
    {"name": "p99", "sli": "latency", "percentile": 99, "threshold": "250ms"},
    {"name": "fast", "sli": "latency", "threshold": "100ms", "objective": 0.95},
    {"name": "errors", "sli": "error-rate", "objective": 0.01},
    {"name": "heal", "sli": "time-to-recover", "threshold": "10s", "of": "availability"},
]


def paths(raw: Any) -> set[str]:
    result = decode_slos(raw)
    assert isinstance(result, list), f"expected problems, got {result}"
    return {p.path for p in result}


def test_example_parses_into_frozen_models() -> None:
    slos = decode_slos(EXAMPLE)
    assert isinstance(slos, tuple)
    avail, p99, fast, errors, heal = slos
    assert avail.sli is SLIKind.AVAILABILITY and avail.objective == 0.99
    assert p99.percentile == 99 and p99.threshold_s == 0.25 and p99.objective is None
    assert fast.objective == 0.95 and fast.threshold_s == pytest.approx(0.1)
    assert errors.sli is SLIKind.ERROR_RATE
    assert heal.of == "availability" and heal.threshold_s == 10 and heal.from_event == "start"
    assert avail.windows == ("baseline", "during", "after") and avail.confidence == 0.95
    with pytest.raises(AttributeError):
        avail.objective = 0.5  # type: ignore[misc]


def test_problems_carry_field_paths() -> None:
    assert paths(
        [
            {"name": "a", "sli": "availability", "objective": 0.99},
            {"name": "b", "sli": "latency", "percentile": 99, "threshold": 250},
        ]
    ) == {"slo[1].threshold"}
    assert paths([{"name": "a", "sli": "uptime"}]) == {"slo[0].sli"}
    assert paths([{"name": "a", "sli": "availability", "objective": 99}]) == {"slo[0].objective"}
    assert paths([{"name": "a", "sli": "availability"}]) == {"slo[0].objective"}
    assert paths([{"sli": "error-rate", "objective": 0.01}]) == {"slo[0].name"}
    assert paths(
        [{"name": "a", "sli": "latency", "threshold": "1s", "percentile": 99, "objective": 0.9}]
    ) == {"slo[0].objective"}
    assert paths([{"name": "a", "sli": "latency", "threshold": "1s"}]) == {"slo[0].percentile"}
    assert paths([{"name": "a", "sli": "latency", "threshold": "1s", "percentile": 100}]) == {
        "slo[0].percentile"
    }
    assert paths(
        [{"name": "a", "sli": "availability", "objective": 0.9, "windows": ["during", "later"]}]
    ) == {"slo[0].windows[1]"}
    assert paths([{"name": "a", "sli": "availability", "objective": 0.9, "confidence": 1}]) == {
        "slo[0].confidence"
    }
    assert paths([{"name": "a", "sli": "availability", "objective": 0.9, "percentile": 9}]) == {
        "slo[0].percentile"
    }
    assert paths({"name": "a"}) == {"slo"}
    assert paths(["availability"]) == {"slo[0]"}


def test_cross_references_are_checked() -> None:
    assert paths(
        [
            {"name": "a", "sli": "availability", "objective": 0.9},
            {"name": "a", "sli": "error-rate", "objective": 0.1},
        ]
    ) == {"slo[1].name"}
    assert paths([{"name": "h", "sli": "time-to-recover", "threshold": "5s", "of": "nope"}]) == {"slo[0].of"}
    loop = [{"name": "h", "sli": "time-to-recover", "threshold": "5s", "of": "h"}]
    assert paths(loop) == {"slo[0].of"}
    assert paths([{"name": "h", "sli": "time-to-recover", "threshold": "5s", "of": "x", "from": "end"}]) == {
        "slo[0].from"
    }


def test_load_spec() -> None:
    spec = decode_load({"target": "lab:lb", "path": "/", "rate": 200, "timeout": "2s"})
    assert spec == LoadSpec(target="lab:lb", path="/", rate=200.0, timeout_s=2.0)
    problems = decode_load({"target": "lb", "rate": 0, "timeout": "soon", "burst": 3})
    assert isinstance(problems, list)
    assert {p.path for p in problems} == {"load.target", "load.rate", "load.timeout", "load.burst"}


# --- judging on a real series file -----------------------------------------------------------

T0 = 1_700_000_000.0


def write_series(path: Path, seconds: list[tuple[int, int, int, float]]) -> None:
    """Rows of (n, good, errors, latency of the good ones), one per second from T0."""
    with path.open("w") as fh:
        for i, (n, good, errors, latency) in enumerate(seconds):
            row = SecondStats(t=T0 + i, n=n, good=good, errors=errors, hist={hist_index(latency): good})
            fh.write(json.dumps(row.to_dict()) + "\n")


def scenario(tmp_path: Path, bad_seconds: int) -> SeriesFileSource:
    # 20 s of baseline, 10 s of faults (the first `bad_seconds` lose half), 20 s after.
    rows = [(200, 200, 0, 0.005)] * 20
    rows += [(200, 100, 100, 0.005)] * bad_seconds + [(200, 200, 0, 0.005)] * (10 - bad_seconds)
    rows += [(200, 200, 0, 0.005)] * 20
    path = tmp_path / "series.ndjson"
    write_series(path, rows)
    return SeriesFileSource(path)


WINDOWS = {"baseline": (T0, T0 + 20), "during": (T0 + 20, T0 + 30), "after": (T0 + 30, T0 + 50)}


def test_judge_windows_and_the_verdict(tmp_path: Path) -> None:
    slos = decode_slos(EXAMPLE)
    assert isinstance(slos, tuple)
    results = judge(slos, scenario(tmp_path, bad_seconds=4), WINDOWS)
    got = {(r.objective, r.window): r for r in results}
    assert got[("availability", "baseline")].verdict == "pass"
    assert got[("availability", "baseline")].samples == 4000
    assert got[("availability", "during")].verdict == "fail"
    assert got[("availability", "during")].estimate == pytest.approx(1 - 400 / 2000)
    assert got[("availability", "after")].verdict == "pass"
    assert got[("errors", "during")].verdict == "fail"
    assert got[("p99", "baseline")].verdict == "pass"
    assert got[("p99", "baseline")].detail["unit"] == "ms"
    assert got[("p99", "during")].verdict == "fail"  # failed requests count as slow
    heal = got[("heal", "during")]
    assert heal.verdict == "pass" and heal.estimate == pytest.approx(4.0)
    assert all(json.dumps(r.to_dict()) for r in results)
    verdict, reason = verdict_of_slos(results)
    assert verdict is Verdict.DEVIATED and "SLO availability [during] failed" in reason


def test_time_to_recover_too_slow_and_too_short(tmp_path: Path) -> None:
    slos = decode_slos(
        [EXAMPLE[0], {"name": "heal", "sli": "time-to-recover", "threshold": "3s", "of": "availability"}]
    )
    assert isinstance(slos, tuple)
    heal = [r for r in judge(slos, scenario(tmp_path, bad_seconds=6), WINDOWS) if r.objective == "heal"][0]
    assert heal.verdict == "fail" and heal.estimate == pytest.approx(6.0)
    # The run ends one second after the damage: recovery cannot be confirmed.
    short = {"baseline": WINDOWS["baseline"], "during": (T0 + 20, T0 + 27)}
    lenient = decode_slos([EXAMPLE[0], EXAMPLE[4]])  # 10 s allowed, 3 s of stability needed
    assert isinstance(lenient, tuple)
    heal = [r for r in judge(lenient, scenario(tmp_path, bad_seconds=6), short) if r.objective == "heal"][0]
    assert heal.verdict == "inconclusive"


def test_baseline_that_does_not_hold_is_inconclusive(tmp_path: Path) -> None:
    path = tmp_path / "series.ndjson"
    write_series(path, [(200, 150, 50, 0.005)] * 30)
    slos = decode_slos([EXAMPLE[0]])
    assert isinstance(slos, tuple)
    # The runner judges the baseline first and, when it does not hold, runs no method.
    verdict, reason = verdict_of_slos(judge(slos, SeriesFileSource(path), {"baseline": WINDOWS["baseline"]}))
    assert verdict is Verdict.INCONCLUSIVE and "failed at baseline" in reason


def test_few_samples_are_inconclusive(tmp_path: Path) -> None:
    path = tmp_path / "series.ndjson"
    write_series(path, [(1, 1, 0, 0.005)] * 50)  # 20 samples in the baseline
    slos = decode_slos(EXAMPLE[:3])
    assert isinstance(slos, tuple)
    results = judge(slos, SeriesFileSource(path), {"baseline": WINDOWS["baseline"]})
    assert [r.verdict for r in results] == ["inconclusive"] * 3


def test_ctk_probe_reads_the_series_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run passes its series file in the configuration chaostoolkit-lib hands over."""
    import time

    now = float(int(time.time()))
    path = tmp_path / "series.ndjson"
    with path.open("w") as fh:
        for i in range(12):
            row = SecondStats(t=now - 12 + i, n=300, good=300, errors=0, hist={hist_index(0.004): 300})
            fh.write(json.dumps(row.to_dict()) + "\n")
    monkeypatch.setenv("CHAOSLAB_SLI_SERIES", str(path))  # the old channel: no longer read
    with pytest.raises(SLIError, match="no SLI series"):
        slo_ok({"sli": "availability", "objective": 0.99}, last="10s")
    config = {"chaoslab_sli_series": str(path)}
    assert slo_ok({"sli": "availability", "objective": 0.99}, last="10s", configuration=config) is True
    result = slo_check(
        {"sli": "latency", "percentile": 99, "threshold": "3ms"}, last="10s", configuration=config
    )
    assert result["verdict"] == "fail" and result["samples"] == 3000
    with pytest.raises(InvalidInput):
        slo_check({"sli": "availability", "objective": 2})
    with pytest.raises(SLIError):
        slo_check({"sli": "availability", "objective": 0.9}, series_file=str(tmp_path / "missing"))
