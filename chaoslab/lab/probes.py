"""Probes about the lab, callable from a Chaos Toolkit python provider (or a test).

They read this lab's own state (``CHAOSLAB_HOME``), so two labs on one machine never
count each other's processes.
"""

from __future__ import annotations

from chaoslab.lab.control import status


def healthy_replicas() -> int:
    """How many replicas are alive and answer their health endpoint right now."""
    comps = status().get("components", {}).values()
    return sum(1 for c in comps if c.get("kind") == "replica" and c.get("healthy"))


def lab_healthy() -> bool:
    """The supervisor, the balancer, the proxy and every replica are up and healthy."""
    return bool(status().get("healthy"))
