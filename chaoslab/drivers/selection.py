"""Target selection shared by every driver: one, N, a percentage, or all — at random,
with a seed that is recorded so the same run can be replayed and audited.

Invariants:

- Candidates are sorted by a stable key before sampling, so the same seed over the same
  candidate set always picks the same targets, whatever order the OS listed them in.
- A percentage rounds up and never picks zero of a non-empty set ("10% of 3" is 1).
- ``pick`` never picks more than there are; asking for more is not an error (it picks all
  and says so in ``Picked.requested``), because fleets shrink between plan and run.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoslab.drivers.base import DriverContext, Param
from chaoslab.errors import Problem

SELECTION_PARAMS: tuple[Param, ...] = (
    Param(name="count", type=int, help="pick this many targets (default 1)", minimum=1),
    Param(
        name="percent",
        type=(int, float),
        help="pick this share of the matching targets (rounded up)",
        minimum=0.0001,
        maximum=100,
    ),
    Param(name="all", type=bool, help="pick every matching target"),
    Param(name="seed", type=int, help="random seed for the pick (default: the run's seed)"),
)
SELECTION_NAMES = frozenset(p.name for p in SELECTION_PARAMS)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """How many targets to pick: ``mode`` is ``count``, ``percent`` or ``all``."""

    mode: str = "count"
    value: float = 1

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Selection:
        """Build from operation args; call ``problems`` first for user-facing errors."""
        if args.get("all"):
            return cls(mode="all", value=100)
        if "percent" in args:
            return cls(mode="percent", value=float(args["percent"]))
        return cls(mode="count", value=int(args.get("count", 1)))

    @staticmethod
    def problems(args: Mapping[str, Any], path: str = "") -> list[Problem]:
        """Cross-field checks ``check_args`` cannot do: at most one of count/percent/all."""
        given = [n for n in ("count", "percent", "all") if n in args and args[n] is not False]
        if len(given) > 1:
            return [
                Problem(
                    path=path or given[1],
                    message=f"give only one of count, percent, all (got {', '.join(given)})",
                )
            ]
        return []

    def size(self, n: int) -> int:
        if n <= 0:
            return 0
        if self.mode == "all":
            return n
        if self.mode == "percent":
            return max(1, min(n, math.ceil(n * self.value / 100.0)))
        return min(n, int(self.value))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "value": self.value}


@dataclass(frozen=True, kw_only=True)
class Picked[T]:
    """The outcome of a pick: what was chosen, out of how many, and the seed used."""

    items: tuple[T, ...]
    seed: int
    selection: Selection
    candidates: int
    requested: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "selection": self.selection.to_dict(),
            "candidates": self.candidates,
            "requested": self.requested,
            "picked": len(self.items),
        }


def resolve_seed(args: Mapping[str, Any], ctx: DriverContext) -> int:
    """The seed to use: the operation's ``seed``, else the run's, else a fresh random one."""
    if "seed" in args and args["seed"] is not None:
        return int(args["seed"])
    if ctx.seed:
        return ctx.seed
    return secrets.randbits(32)


def pick[T](
    candidates: Sequence[T], selection: Selection, seed: int, *, key: Callable[[T], Any]
) -> Picked[T]:
    """Pick ``selection.size(len(candidates))`` items at random with ``seed``."""
    ordered = sorted(candidates, key=key)
    k = selection.size(len(ordered))
    chosen = random.Random(seed).sample(ordered, k) if k < len(ordered) else ordered
    requested = len(ordered) if selection.mode == "all" else k
    if selection.mode == "count":
        requested = int(selection.value)
    return Picked(
        items=tuple(sorted(chosen, key=key)),
        seed=seed,
        selection=selection,
        candidates=len(ordered),
        requested=requested,
    )
