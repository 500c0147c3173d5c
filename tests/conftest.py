"""Shared test fixtures.

Real components: a test that needs one calls ``require(ok, reason)``. Locally a missing
component skips with a loud reason; in CI (``CI=true``) it fails, because a green CI
must mean the real thing was exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``chaoslab ARGS`` in a child process (this checkout first on the path), captured."""
    return subprocess.run(
        [sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def require(ok: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a real component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(f"MISSING COMPONENT (would fail in CI): {reason}")


@pytest.fixture(autouse=True)
def chaoslab_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own chaoslab state directory."""
    home = tmp_path_factory.mktemp("chaoslab-home")
    monkeypatch.setenv("CHAOSLAB_HOME", str(home))
    yield home
