"""Probes about the lab, callable from a Chaos Toolkit python provider (or a test).

An entry point like the CLI: an experiment file calls these functions by name, so they
read the lab's home from ``CHAOSLAB_HOME`` (``StatePaths.from_environment``) unless the
activity passes ``home`` in its arguments. Two labs on one machine never count each
other's processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaoslab.lab.control import status
from chaoslab.paths import StatePaths


def _status(home: str | None) -> dict[str, Any]:
    return status(Path(home) if home else StatePaths.from_environment().home)


def healthy_replicas(home: str | None = None) -> int:
    """How many replicas are alive and answer their health endpoint right now."""
    comps = _status(home).get("components", {}).values()
    return sum(1 for c in comps if c.get("kind") == "replica" and c.get("healthy"))


def lab_healthy(home: str | None = None) -> bool:
    """The supervisor, the balancer, the proxy and every replica are up and healthy."""
    return bool(_status(home).get("healthy"))
