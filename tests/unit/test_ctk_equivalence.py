"""chaoslab's start-up shortcuts give exactly chaostoolkit-lib's answers.

``scalar_tolerance`` and ``ctkprocess`` exist only to keep chaostoolkit-lib's import off
the trivial run's path; here they are compared with chaostoolkit-lib case by case.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from chaoslib.hypothesis import within_tolerance
from chaoslib.provider.process import run_process_activity, validate_process_activity

from chaoslab.engine.ctkprocess import ProcessActivityFailed, run_process, validate_process
from chaoslab.engine.execute import scalar_tolerance

TOLERANCES: list[Any] = [
    True,
    False,
    0,
    1,
    200,
    "ok",
    "",
    [200, 204],
    [1, 10],
    [1, 2, 3],
    ["a", "b", "c"],
    [],
]
VALUES: list[Any] = [
    True,
    False,
    0,
    1,
    5,
    200,
    204,
    503,
    "ok",
    "",
    "a",
    {"status": 200},
    {"status": 503},
    None,
    2.5,
]


@pytest.mark.parametrize(("tolerance", "value"), list(itertools.product(TOLERANCES, VALUES)))
def test_scalar_tolerance_matches_chaostoolkit(tolerance: Any, value: Any) -> None:
    try:
        expected: Any = bool(within_tolerance(tolerance, value))
    except TypeError as exc:
        expected = type(exc)
    try:
        got: Any = scalar_tolerance(tolerance, value)
    except TypeError as exc:
        got = type(exc)
    assert got == expected


def activity(path: str, arguments: Any = None, timeout: float | None = None) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": "process", "path": path}
    if arguments is not None:
        provider["arguments"] = arguments
    if timeout is not None:
        provider["timeout"] = timeout
    return {"type": "action", "name": "p", "provider": provider, "tolerance": 0}


@pytest.mark.parametrize(
    "act",
    [
        activity("echo", "hello   world"),
        activity("echo", ["a", None, "", 3, "b c"]),
        activity("echo", {"--flag": "value", "-n": ""}),
        activity("sh", ["-c", "echo out; echo err >&2; exit 3"]),
        activity("printf", ["\\xe9t\\xe9"]),
        activity("true"),
    ],
    ids=["shell-string", "list", "dict", "exit-code", "latin1-output", "no-args"],
)
def test_process_provider_matches_chaostoolkit(act: dict[str, Any]) -> None:
    assert run_process(act) == run_process_activity(act, {}, {})


def test_process_timeout_matches_chaostoolkit() -> None:
    act = activity("sleep", ["5"], timeout=0.2)
    with pytest.raises(ActivityFailed, match="took too long"):
        run_process_activity(act, {}, {})
    with pytest.raises(ProcessActivityFailed, match="took too long"):
        run_process(act)


@pytest.mark.parametrize(
    "path", ["true", "no-such-binary-zz", str(Path(sys.executable)), "/etc/hostname", ""]
)
def test_process_validation_matches_chaostoolkit(path: str) -> None:
    act = activity(path)
    try:
        validate_process_activity(act)
        expected = None
    except Exception as exc:
        expected = str(exc)
    assert validate_process(act) == expected
