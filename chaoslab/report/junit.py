"""JUnit XML for CI test report views (GitHub, GitLab, Jenkins), built with ``xml.etree``.

Mapping of outcomes to JUnit elements (the same for a run and for a gate):

- passed → a plain ``<testcase>``
- deviated, aborted, an SLO ``fail`` → ``<failure>`` whose message carries the SLO numbers
  (estimate, bounds, samples, target), so the CI page says *why* without opening files
- error, not-clean, interrupted, invalid-input → ``<error>``: the tooling or the
  environment failed, not the system under test
- inconclusive → ``<skipped>`` with the reason: shown as neither green nor red, because
  the samples support no claim either way

A gate writes one ``<testsuite>`` with one ``<testcase>`` per experiment, and a second
``<testsuite>`` (``… baseline``) with one case for the comparison with the last passing
gate ("no baseline" is a skipped case, never a pass).

The dialect is the one the Jenkins xUnit plugin validates (``junit-10.xsd``) and the one
GitLab's reader expects: ``<testsuites>`` carries only name, time, tests, failures and
errors (``skipped`` is counted on each ``<testsuite>``); every case has a ``classname``,
a ``name`` and a ``time`` in seconds. Times add up, because consumers (GitLab, Jenkins)
sum the cases' times: in a run, SLO cases take 0 s (a judgement, not a step), each
revert case its revert's duration, and the ``verdict`` case the rest of the run, so the
cases' times sum to the suite's time, the run's duration.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab.report.text import xml_tree
from chaoslab.report.view import RunView, SLORow, fmt_value
from chaoslab.verdict import Verdict

if TYPE_CHECKING:
    from chaoslab.report.gateresult import GateResult

_ERROR_VERDICTS = frozenset({Verdict.ERROR, Verdict.NOT_CLEAN, Verdict.INTERRUPTED, Verdict.INVALID_INPUT})
_FAIL_VERDICTS = frozenset({Verdict.DEVIATED, Verdict.ABORTED})


def slo_line(r: SLORow) -> str:
    bounds = (
        f"[{fmt_value(r.lower, r.unit)}, {fmt_value(r.upper, r.unit)}]"
        if r.lower is not None or r.upper is not None
        else "[–]"
    )
    return (
        f"{r.objective} [{r.window}]: {r.verdict} — estimate {fmt_value(r.estimate, r.unit)}, "
        f"bounds {bounds}, {r.samples} samples; target {r.describe}"
    )


def _run_text(view: RunView) -> str:
    lines = [f"verdict: {view.verdict} — {view.reason}"]
    lines += [slo_line(r) for r in view.slo]
    for f in view.faults:
        state = (
            "never reverted"
            if f.end is None
            else ("clean" if f.clean else "NOT CLEAN" if f.clean is False else "not checked")
        )
        lines.append(f"fault {f.label}: {state}")
    return "\n".join(lines)


def _seconds(time_s: float) -> str:
    """A time as junit-10.xsd's "surefire time" allows it: non-negative, no exponent."""
    return f"{max(0.0, time_s):.3f}"


def _case(parent: ET.Element, *, classname: str, name: str, time_s: float) -> ET.Element:
    return ET.SubElement(parent, "testcase", classname=classname, name=name, time=_seconds(time_s))


def _mark(case: ET.Element, verdict: str, message: str, text: str) -> str:
    """Add the failure/error/skipped child for ``verdict``; return the counter it bumps."""
    if verdict in _FAIL_VERDICTS or verdict == "fail":
        ET.SubElement(case, "failure", message=message, type=verdict).text = text
        return "failures"
    if verdict in _ERROR_VERDICTS:
        ET.SubElement(case, "error", message=message, type=verdict).text = text
        return "errors"
    if verdict == "inconclusive":
        ET.SubElement(case, "skipped", message=message).text = text
        return "skipped"
    return ""


def _suite(parent: ET.Element, name: str, timestamp: float) -> ET.Element:
    return ET.SubElement(
        parent,
        "testsuite",
        name=name,
        timestamp=datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _finish(suite: ET.Element, counts: dict[str, int], time_s: float) -> None:
    suite.set("tests", str(len(suite.findall("testcase"))))
    for key in ("failures", "errors", "skipped"):
        suite.set(key, str(counts.get(key, 0)))
    suite.set("time", _seconds(time_s))


def _root_totals(root: ET.Element) -> None:
    # junit-10.xsd allows no ``skipped`` on <testsuites>: it is counted per suite only.
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in root.findall("testsuite"))))
    root.set("time", _seconds(sum(float(s.get("time", "0")) for s in root.findall("testsuite"))))


def run_junit(view: RunView) -> ET.ElementTree[ET.Element]:
    """One run: a case per SLO result (0 s), a case per fault's revert (its duration), a
    case for the verdict (the rest of the run), so the cases' times sum to the run's."""
    root = ET.Element("testsuites", name="chaoslab")
    suite = _suite(root, view.title, view.start)
    props = ET.SubElement(suite, "properties")
    for k, v in (("run_id", view.run_id), ("verdict", view.verdict)):
        ET.SubElement(props, "property", name=k, value=v)
    counts: dict[str, int] = {}
    cls = f"chaoslab.{view.title}"
    for r in view.slo:
        case = _case(suite, classname=cls, name=f"SLO {r.objective} [{r.window}]", time_s=0.0)
        if bump := _mark(case, r.verdict, slo_line(r), slo_line(r)):
            counts[bump] = counts.get(bump, 0) + 1
    # In whole milliseconds, as written, so the written times add up exactly.
    total_ms = round(max(0.0, view.duration_s) * 1000)
    left_ms = total_ms
    for f in view.faults:
        # Bounded by what is left of the run, so the cases never sum past the suite.
        revert_ms = min(round(max(0.0, f.revert_duration_s or 0.0) * 1000), left_ms)
        left_ms -= revert_ms
        case = _case(suite, classname=cls, name=f"revert {f.label}", time_s=revert_ms / 1000)
        if f.end is None or f.clean is False or f.reverted_ok is False:
            msg = f"{f.label}: " + (
                "never reverted" if f.end is None else f"not clean: {'; '.join(f.residue) or f.revert_detail}"
            )
            ET.SubElement(case, "error", message=msg, type="not-clean").text = msg
            counts["errors"] = counts.get("errors", 0) + 1
    case = _case(suite, classname=cls, name="verdict", time_s=left_ms / 1000)
    if bump := _mark(case, view.verdict, f"{view.verdict}: {view.reason}", _run_text(view)):
        counts[bump] = counts.get(bump, 0) + 1
    _finish(suite, counts, total_ms / 1000)
    _root_totals(root)
    return ET.ElementTree(root)


def gate_junit(result: GateResult) -> ET.ElementTree[ET.Element]:
    root = ET.Element("testsuites", name=f"chaoslab gate {result.suite.name}")
    suite = _suite(root, result.suite.name, result.started)
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("score", f"{result.score.value:g}"),
        ("score_range", f"{result.score.low:g}-{result.score.high:g}"),
        ("result", result.exit.name.lower()),
        ("exit_code", str(int(result.exit))),
        ("baseline", result.comparison.status),
    ):
        ET.SubElement(props, "property", name=k, value=v)
    counts: dict[str, int] = {}
    for o in result.outcomes:
        case = _case(
            suite, classname=f"chaoslab.gate.{result.suite.name}", name=o.entry.name, time_s=o.duration_s
        )
        head = f"{o.verdict}{' (key experiment)' if o.entry.key else ''}: {o.reason}"
        text = _run_text(o.view) if o.view else (o.infra_error or o.reason)
        if o.infra_error and o.view is not None:
            bump = "errors"
            ET.SubElement(
                case, "error", message=f"{o.infra_error}; {head}", type="infrastructure"
            ).text = text
        else:
            verdict = o.verdict if o.infra_error is None else "error"
            bump = _mark(case, verdict, _failure_message(o.view, head), text)
        if bump:
            counts[bump] = counts.get(bump, 0) + 1
        ET.SubElement(case, "system-out").text = f"run dir: {o.run_dir}"
    cases_s = sum(float(c.get("time", "0")) for c in suite.iter("testcase"))
    _finish(suite, counts, max(result.finished - result.started, cases_s))
    comp = result.comparison
    bsuite = _suite(root, f"{result.suite.name} baseline", result.finished)
    case = _case(
        bsuite,
        classname=f"chaoslab.gate.{result.suite.name}",
        name="compared with the last passing gate",
        time_s=0.0,
    )
    bcounts: dict[str, int] = {}
    if comp.status == "no-baseline":
        ET.SubElement(case, "skipped", message=comp.headline()).text = comp.headline()
        bcounts["skipped"] = 1
    elif comp.regressed:
        text = "\n".join(r.message for r in comp.regressions)
        ET.SubElement(
            case, "failure", message=comp.headline() + ": " + comp.regressions[0].message, type="regression"
        ).text = text
        bcounts["failures"] = 1
    if comp.notes:
        ET.SubElement(case, "system-out").text = "\n".join(comp.notes)
    _finish(bsuite, bcounts, 0.0)
    _root_totals(root)
    return ET.ElementTree(root)


def _failure_message(view: RunView | None, head: str) -> str:
    """The head line plus the SLO results that did not pass: what a CI page shows first."""
    if view is None:
        return head
    bad: Sequence[SLORow] = [r for r in view.slo if r.verdict != "pass"]
    return head if not bad else head + " | " + " | ".join(slo_line(r) for r in bad)


def invalid_junit(suite_name: str, problems: Sequence[str]) -> ET.ElementTree[ET.Element]:
    """The gate's JUnit when its input is invalid: one error case, nothing run."""
    root = ET.Element("testsuites", name=f"chaoslab gate {suite_name}")
    suite = ET.SubElement(root, "testsuite", name=suite_name)
    case = _case(suite, classname=f"chaoslab.gate.{suite_name}", name="suite is valid", time_s=0.0)
    text = "\n".join(problems)
    ET.SubElement(
        case, "error", message=f"invalid input: {problems[0] if problems else ''}", type="invalid-input"
    ).text = text
    _finish(suite, {"errors": 1}, 0.0)
    _root_totals(root)
    return ET.ElementTree(root)


def write_junit(tree: ET.ElementTree[ET.Element], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    xml_tree(tree.getroot())  # names and messages with control characters stay valid XML
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
