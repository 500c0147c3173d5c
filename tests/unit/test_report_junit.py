"""chaoslab's JUnit XML against what its consumers check: the Jenkins xUnit plugin's
``junit-10.xsd`` (validated with xmlschema against ``data/junit-10.xsd``, written for
these tests from that definition) and GitLab's JUnit reader (modelled below from its
parser: ``testsuites`` → ``testsuite`` → ``testcase``, status from the first of
failure/error/skipped, the suite's total time the sum of its cases' times)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from chaoslab.gate import GateExit, GateResult, Suite, SuiteEntry, SuiteRun
from chaoslab.report import baseline as bl
from chaoslab.report.junit import gate_junit, invalid_junit, run_junit, write_junit
from chaoslab.report.score import Scored, Thresholds, score
from chaoslab.report.view import RunView
from tests.journals import make_journal

xmlschema = pytest.importorskip("xmlschema", reason="pip install xmlschema (a dev dependency)")

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).with_name("data") / "junit-10.xsd"))


def _valid(tree: ET.ElementTree[ET.Element], tmp_path: Path) -> ET.Element:
    """Write the tree as chaoslab does and validate the file, not the in-memory tree."""
    path = tmp_path / "junit.xml"
    write_junit(tree, path)
    errors = [str(e.reason) for e in SCHEMA.iter_errors(str(path))]
    assert errors == [], errors
    return ET.parse(path).getroot()


def _gitlab_cases(root: ET.Element) -> list[dict[str, Any]]:
    """What GitLab's reader keeps of each case: suite, classname, name, time, status."""
    assert root.tag in ("testsuites", "testsuite")
    suites = root.findall("testsuite") if root.tag == "testsuites" else [root]
    out = []
    for suite in suites:
        for case in suite.findall("testcase"):
            status = next(
                (
                    s
                    for tag, s in (("failure", "failed"), ("error", "error"), ("skipped", "skipped"))
                    if case.find(tag) is not None
                ),
                "success",
            )
            out.append(
                {
                    "suite": suite.get("name"),
                    "classname": case.get("classname"),
                    "name": case.get("name"),
                    "time": float(case.get("time", "0")),
                    "status": status,
                }
            )
    return out


def _check_counts_and_times(root: ET.Element) -> None:
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        for key, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            assert int(suite.get(key, "-1")) == sum(c.find(tag) is not None for c in cases), key
        case_total = sum(float(c.get("time", "0")) for c in cases)
        assert case_total <= float(suite.get("time", "0")) + 1e-9
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key, "-1")) == sum(int(s.get(key, "0")) for s in root.findall("testsuite"))
    assert "skipped" not in root.attrib  # not an attribute of <testsuites> in junit-10.xsd


@pytest.mark.parametrize(
    "kwargs",
    [
        {"verdict": "deviated"},
        {"verdict": "passed"},
        {"verdict": "aborted", "guard": True},
        {"verdict": "aborted", "halt": True},
        {"verdict": "not-clean", "clean": False},
        {"verdict": "inconclusive"},
    ],
)
def test_run_junit_is_valid_junit_10_and_gitlab_readable(kwargs: dict[str, Any], tmp_path: Path) -> None:
    view = RunView.from_journal(make_journal(**kwargs))
    root = _valid(run_junit(view), tmp_path)
    _check_counts_and_times(root)
    cases = _gitlab_cases(root)
    assert cases and all(c["classname"] and c["name"] for c in cases)
    verdict = next(c for c in cases if c["name"] == "verdict")
    assert (
        verdict["status"]
        == {
            "passed": "success",
            "deviated": "failed",
            "aborted": "failed",
            "not-clean": "error",
            "inconclusive": "skipped",
        }[kwargs["verdict"]]
    )


def test_run_junit_times_add_up_to_the_run(tmp_path: Path) -> None:
    view = RunView.from_journal(make_journal())
    root = _valid(run_junit(view), tmp_path)
    cases = _gitlab_cases(root)
    by_name = {c["name"]: c["time"] for c in cases}
    reverts = [t for n, t in by_name.items() if n.startswith("revert ")]
    assert reverts and all(t > 0 for t in reverts)
    # GitLab's suite total is the sum of its cases: it must be the run's duration, once.
    assert sum(c["time"] for c in cases) == pytest.approx(view.duration_s, abs=1e-9 + 0.0005)
    assert by_name["verdict"] == pytest.approx(view.duration_s - sum(reverts), abs=0.001)
    assert by_name["verdict"] < view.duration_s
    assert float(root.find("testsuite").get("time", "0")) == pytest.approx(view.duration_s, abs=0.0005)  # type: ignore[union-attr]
    assert float(root.get("time", "0")) == pytest.approx(view.duration_s, abs=0.0005)


def _gate_result(tmp_path: Path) -> GateResult:
    outcomes = []
    for name, verdict, seconds in (
        ("a", "passed", 12.5),
        ("b", "deviated", 30.25),
        ("c", "inconclusive", 4.0),
    ):
        journal = make_journal(verdict=verdict, title=name)
        outcomes.append(
            SuiteRun(
                entry=SuiteEntry(path=tmp_path / f"{name}.yaml", name=name, weight=1, key=name == "b"),
                verdict=verdict,
                reason=f"{name} reason",
                run_dir=tmp_path / name,
                duration_s=seconds,
                view=RunView.from_journal(journal),
            )
        )
    outcomes.append(
        SuiteRun(
            entry=SuiteEntry(path=tmp_path / "d.yaml", name="d", weight=1, key=False),
            verdict="error",
            reason="crashed",
            run_dir=tmp_path / "d",
            duration_s=1.0,
            infra_error="the runner crashed",
        )
    )
    scored = score([Scored(name=o.entry.name, weight=1, verdict=o.verdict) for o in outcomes])
    return GateResult(
        suite=Suite(name="resilience", entries=tuple(o.entry for o in outcomes)),
        outcomes=tuple(outcomes),
        score=scored,
        klass=scored.classify(Thresholds()),
        comparison=bl.Comparison(status="no-baseline"),
        exit=GateExit.FAIL,
        reason="b deviated",
        started=1_800_000_000.0,
        finished=1_800_000_050.0,
        output_dir=tmp_path,
        snapshot=bl.Snapshot(suite="resilience", score=scored.value, created="now", experiments={}),
    )


def test_gate_junit_is_valid_junit_10_and_gitlab_readable(tmp_path: Path) -> None:
    root = _valid(gate_junit(_gate_result(tmp_path)), tmp_path)
    _check_counts_and_times(root)
    cases = {c["name"]: c for c in _gitlab_cases(root)}
    assert cases["a"]["status"] == "success" and cases["b"]["status"] == "failed"
    assert cases["c"]["status"] == "skipped" and cases["d"]["status"] == "error"
    assert cases["compared with the last passing gate"]["status"] == "skipped"
    assert cases["b"]["time"] == 30.25
    assert float(root.get("time", "0")) == pytest.approx(50.0)


def test_invalid_gate_junit_is_valid_junit_10(tmp_path: Path) -> None:
    root = _valid(invalid_junit("broken", ["suite.yaml: experiments[0].path: no such file"]), tmp_path)
    _check_counts_and_times(root)
    assert [c["status"] for c in _gitlab_cases(root)] == ["error"]


def test_the_schema_rejects_what_jenkins_rejects(tmp_path: Path) -> None:
    # The schema itself must bite: the attribute the old JUnit carried is refused.
    bad = ET.Element("testsuites", skipped="1")
    ET.SubElement(bad, "testsuite", name="s", tests="0", failures="0", errors="0")
    with pytest.raises(AssertionError):
        _valid(ET.ElementTree(bad), tmp_path)
    no_name = ET.Element("testsuites")
    suite = ET.SubElement(no_name, "testsuite", name="s", tests="1", failures="0", errors="0", time="-1")
    ET.SubElement(suite, "testcase", classname="c")
    errors = list(SCHEMA.iter_errors(ET.tostring(no_name, encoding="unicode")))
    assert len(errors) >= 2  # a negative time, a case without a name
