"""What a driver contributes to the contract suite: a list of ``FaultCase``.

To add a driver, create ``tests/contract/cases_<driver>.py`` with a module-level
``CASES: list[FaultCase]``; ``test_contract.py`` collects every ``cases_*.py`` module.

A case says how to build a real target (``make_target``), which fault to inject on it,
and how to see the fault *on the target* independently of the driver (``observe``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord


@dataclass(frozen=True, kw_only=True)
class Target:
    """A live target: the selector given to the driver, args it contributes (a port, a
    path), and whatever ``observe`` needs (``handle``)."""

    selector: str | None
    handle: Any = None
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FaultCase:
    """One fault operation of one driver, run through every contract check.

    - ``make_target(tmp_path)``: context manager yielding a ``Target``; it must stop
      everything it started.
    - ``observe(target, record)``: True while the fault is visible on the target.
    - ``lease_s``: the lease given to ``prepare`` (``None`` for faults without lease).
    - ``heal_s``: for faults without lease, how long the target may take to heal.
    - ``available()``: (ok, reason); when not ok the case is skipped locally and, if
      ``required_in_ci``, fails in CI.
    """

    id: str
    driver: str
    op: str
    make_target: Callable[[Path], AbstractContextManager[Target]]
    observe: Callable[[Target, RevertRecord], bool]
    args: Mapping[str, Any] = field(default_factory=dict)
    lease_s: float | None = 3.0
    heal_s: float = 10.0
    available: Callable[[], tuple[bool, str]] = lambda: (True, "")
    required_in_ci: bool = True
