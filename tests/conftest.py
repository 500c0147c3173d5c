"""Shared test fixtures.

Real components: a test that needs one calls ``require(ok, reason)``. Locally a missing
component skips with a loud reason; in CI (``CI=true``) it fails, because a green CI
must mean the real thing was exercised.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
