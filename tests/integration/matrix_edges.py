"""The failure matrix's edge columns: what each fault operation needs to meet them.

tests/integration/test_failure_matrix_edges.py runs every fault operation of the
failure matrix (``matrix_support.op_cases``) through five situations at the edges of a
fault's life. The column bodies are written once, for every driver, so the same
situation must end with the same verdict everywhere; what differs per target is only how
to *make* the situation, and that is what a driver family supplies here, in its own
module (``edges_<family>.py``, a module-level ``HOOKS: dict[str, EdgeHooks]`` keyed by
the matrix case id):

``lease-lapses``
    The runner is alive but renews nothing (SIGSTOP). The target's lease must end the
    fault within ``LAPSE_S + POLL_S`` (+ slack); once resumed the run reports one
    ``lease-lapsed`` event and ends INCONCLUSIVE (exit 4), clean, its entry closed.
    No hook: it applies to every fault with a lease.
``revert-fails``
    ``break_revert(target, record)`` is entered after inject: while it holds, the
    driver's revert of that record cannot succeed (the control plane stops answering, a
    resource is busy, the healer is stopped...). The run must end NOT CLEAN (exit 6)
    with its ledger entry open and the lease kept; once the break is lifted,
    ``chaoslab recover`` (run from another directory) closes it verified clean.
    ``revert_fails_args`` are merged into the fault's args for that cell (e.g. a
    shorter heal timeout for a kill).
``target-unreachable``
    ``unreachable(target, workdir)`` yields a ``Variant`` (selector, args, environment)
    under which the fault cannot reach its target (nobody listens, unknown host key,
    no daemon). The run must end "could not run" (exit 5) with a ``fault-not-applied``
    event, no ``fault-injected``, and no open ledger entry: never NOT CLEAN.
``named-two-ways``
    Run A holds the fault; ``alias(target, workdir)`` yields a ``Variant`` naming the
    *same* target another way (a label instead of a name, a pid instead of a pattern,
    a tag instead of a host name). Run B with it must be refused (exit 5, "locked by"
    and one of A's resolved keys in its reason) and inject nothing; A then ends clean.
``relpath-recover-elsewhere``
    ``relative(target, here, elsewhere)`` yields a ``Variant`` whose paths (a fill
    directory, a pid file, an inventory, a kubeconfig) are relative to ``here``, the
    run's working directory; the experiment and run directory are given relatively too.
    The hook may plant decoys under the same relative names in ``elsewhere`` and check
    them when it exits. The runner is SIGKILLed with the fault held, and
    ``chaoslab recover`` runs from ``elsewhere``: it must close the entry verified clean
    and the target must be clean at once. The ledgered record must hold none of the
    variant's relative strings (``Variant.relative``): identities are absolute.
    A fault with no path argument uses ``Variant()``: the relative experiment and run
    directory are still exercised.

Where a column cannot apply to a fault, the hook is a ``NotApplicable`` with the reason;
the cell is not generated, and the published matrix shows the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import Target

EDGE_COLUMNS = (
    "lease-lapses",
    "revert-fails",
    "target-unreachable",
    "named-two-ways",
    "relpath-recover-elsewhere",
)

# One module per driver family, each with ``HOOKS: dict[str, EdgeHooks]``.
FAMILIES = (
    "tests.integration.edges_local",
    "tests.integration.edges_proxy",
    "tests.integration.edges_docker",
    "tests.integration.edges_ssh",
    "tests.integration.edges_kubernetes",
)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """How a cell changes the plain fault: another selector (``None`` keeps the
    target's), args merged over the case's and the target's, environment for the run,
    and (relpath) the relative strings the record must not hold."""

    selector: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    relative: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotApplicable:
    """A column that cannot apply to this fault, and why (shown in the matrix)."""

    reason: str


VariantHook = Callable[[Target, Path], AbstractContextManager[Variant]]
RelativeHook = Callable[[Target, Path, Path], AbstractContextManager[Variant]]
BreakHook = Callable[[Target, RevertRecord], AbstractContextManager[None]]


@contextmanager
def unchanged(*_: Any) -> Iterator[Variant]:
    """The plain fault: for ``relative`` on faults with no path argument."""
    yield Variant()


@dataclass(frozen=True, kw_only=True)
class EdgeHooks:
    break_revert: BreakHook | NotApplicable
    unreachable: VariantHook | NotApplicable
    alias: VariantHook | NotApplicable
    relative: RelativeHook | NotApplicable = unchanged
    revert_fails_args: Mapping[str, Any] = field(default_factory=dict)
    # Seconds the target may take to end the fault once renewals stop, beyond the
    # lease's LAPSE_S + POLL_S (a remote target's clock, a slow control plane).
    lapse_slack_s: float = 3.0


def all_hooks() -> dict[str, EdgeHooks]:
    """Every family's hooks, by case id. A family module not written yet adds nothing
    (its cells then fail with "no edge hooks"), so the matrix never hides a gap."""
    hooks: dict[str, EdgeHooks] = {}
    for name in FAMILIES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        family: dict[str, EdgeHooks] = module.HOOKS
        overlap = hooks.keys() & family.keys()
        assert not overlap, f"{name} redefines the edge hooks of {sorted(overlap)}"
        hooks.update(family)
    return hooks


# The exit code each column must end with (relpath: the runner is SIGKILLed, then
# `chaoslab recover` exits 0).
EDGE_EXIT = {
    "lease-lapses": 4,
    "revert-fails": 6,
    "target-unreachable": 5,
    "named-two-ways": "A 0, B 5",
    "relpath-recover-elsewhere": "runner −9, `recover` 0",
}


def not_applicable(cases: Iterable[Any]) -> dict[tuple[str, str], str]:
    """The (case id, column) pairs of ``cases`` that no cell is generated for, with why."""
    hooks = all_hooks()
    return {
        (case.id, column): hook.reason
        for case in cases
        for column in EDGE_COLUMNS
        if isinstance(hook := hook_for(hooks.get(case.id), column, case.lease), NotApplicable)
    }


def hook_for(hooks: EdgeHooks | None, column: str, lease: bool) -> object:
    """The hook of ``column`` (``None`` when no family supplied hooks for the case)."""
    if column == "lease-lapses":
        return True if lease else NotApplicable("no lease: a kill heals instead (see sigkill-lease)")
    if hooks is None:
        return None
    return {
        "revert-fails": hooks.break_revert,
        "target-unreachable": hooks.unreachable,
        "named-two-ways": hooks.alias,
        "relpath-recover-elsewhere": hooks.relative,
    }[column]
