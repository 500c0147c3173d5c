"""A chaoslab driver activity as Chaos Toolkit sees it.

Journals record every activity in Chaos Toolkit's shape, so the tools that read CTK
experiments and journals (``chaos validate``, ``chaos report``) accept them. A driver
activity (``do: proxy.latency``) has no CTK provider of its own, so it is written as a
python provider calling ``operation`` below, with the step as written kept under the
activity's ``chaoslab`` key::

    {"type": "action", "name": "slow-replica-1",
     "provider": {"type": "python", "module": "chaoslab.drivers.ctk", "func": "operation",
                  "arguments": {"do": "proxy.latency", "target": "lab:replica-1",
                                "args": {"latency": "300ms"}, "duration": 8.0}},
     "chaoslab": {"do": "proxy.latency", "target": "lab:replica-1", ...}}

Run by Chaos Toolkit itself, ``operation`` fails the activity with a message saying so:
a chaoslab fault is only safe under chaoslab's runner (revert record in the ledger
before it is applied, a lease the target enforces, a verified revert), which a bare
function call cannot give. ``chaoslab run`` executes these activities through the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODULE = __name__
FUNC = "operation"


def operation(
    do: str,
    target: str | None = None,
    args: Mapping[str, Any] | None = None,
    duration: float | None = None,
) -> Any:
    """Refuse to run a chaoslab driver operation outside chaoslab's runner."""
    from chaoslib.exceptions import ActivityFailed

    where = f" on {target}" if target else ""
    raise ActivityFailed(
        f"{do}{where} is a chaoslab driver operation: run this experiment with `chaoslab run`, "
        "which records, leases and verifies the revert of every fault"
    )
