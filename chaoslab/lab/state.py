"""The lab's side of the ``lab:NAME`` target seam: it writes the state file drivers read.

The file's shape and its reader (``LabState``, ``Component``) belong to the drivers
(``chaoslab.drivers.targets``), so that drivers never import the lab.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaoslab.drivers.targets import STATE_FILE, STATE_VERSION, Component, LabState

__all__ = ["STATE_FILE", "STATE_VERSION", "Component", "LabState", "write_state"]


def write_state(directory: Path, raw: Mapping[str, Any]) -> None:
    """Atomically replace the state file (readers never see a half-written file)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lab.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"version": STATE_VERSION, **raw}, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / STATE_FILE)
