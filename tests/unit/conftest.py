"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoslab.scheduler.store import SQLStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()
