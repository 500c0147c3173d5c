"""Target selection shared by every driver: one, N, a percentage, or all — at random,
with a seed that is recorded so the same run can be replayed and audited.

Invariants:

- Candidates are sorted by a stable key before sampling, so the same seed over the same
  candidate set always picks the same targets, whatever order the OS listed them in.
- A percentage rounds up and never picks zero of a non-empty set ("10% of 3" is 1).
- One target by default, on every platform (``count: 1``).
- Asking for more than match is an error (``TargetNotFound``, nothing touched) unless the
  step says ``allow_fewer: true``: then every match is picked and ``Picked.requested``
  says how many were asked for. A silent "all" hides a shrunken fleet.
- ``max`` is a hard cap on the selector (FIS's and Steadybit's quantity restriction):
  when more candidates match than ``max``, the fault refuses to start (``UnsafeTarget``),
  whatever ``count``/``percent``/``all`` would pick.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoslab.drivers.base import DriverContext, Param
from chaoslab.errors import Problem, TargetNotFound, UnsafeTarget

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
    Param(
        name="max",
        type=int,
        help="refuse to start when more than this many targets match the selector",
        minimum=1,
    ),
    Param(name="allow_fewer", type=bool, help="pick what matches when fewer match than count"),
)
SELECTION_NAMES = frozenset(p.name for p in SELECTION_PARAMS)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """How many targets to pick: ``mode`` is ``count``, ``percent`` or ``all``."""

    mode: str = "count"
    value: float = 1
    max: int | None = None
    allow_fewer: bool = False

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Selection:
        """Build from operation args; call ``problems`` first for user-facing errors."""
        cap = int(args["max"]) if args.get("max") is not None else None
        fewer = bool(args.get("allow_fewer", False))
        if args.get("all"):
            return cls(mode="all", value=100, max=cap, allow_fewer=fewer)
        if "percent" in args:
            return cls(mode="percent", value=float(args["percent"]), max=cap, allow_fewer=fewer)
        return cls(mode="count", value=int(args.get("count", 1)), max=cap, allow_fewer=fewer)

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
        out: dict[str, Any] = {"mode": self.mode, "value": self.value}
        if self.max is not None:
            out["max"] = self.max
        if self.allow_fewer:
            out["allow_fewer"] = True
        return out

    def refusal(self, candidates: int) -> str | None:
        """Why a pick over ``candidates`` matches must not start, or None. Pure."""
        if self.max is not None and candidates > self.max:
            return f"the selector matches {candidates} targets, more than max {self.max}"
        if self.mode == "count" and candidates < self.value and not self.allow_fewer:
            return (
                f"count {int(self.value)} asked, only {candidates} match "
                "(allow_fewer: true picks what matches)"
            )
        return None


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
    """Pick ``selection.size(len(candidates))`` items at random with ``seed``.

    Raises ``UnsafeTarget`` past ``max`` and ``TargetNotFound`` when fewer match than
    ``count`` without ``allow_fewer``: both before anything is touched."""
    ordered = sorted(candidates, key=key)
    why = selection.refusal(len(ordered))
    if why is not None:
        if selection.max is not None and len(ordered) > selection.max:
            raise UnsafeTarget(why)
        raise TargetNotFound(why)
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


def picked_targets(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Every target a fault picked, by name, read from its revert record's ``data``
    (containers, processes, pods, hosts). Empty for faults on one resource (a host's
    CPU, a proxy). Pure: what the console, the journal and ``plan`` show."""
    out: list[str] = []
    for c in data.get("containers") or ():
        out.append(f"container {c.get('name') or c.get('id', '?')}")
    for p in data.get("procs") or ():
        out.append(f"pid {p.get('pid')} ({p.get('name', '?')})")
    for v in data.get("victims") or ():
        out.append(f"pod {data.get('namespace', '?')}/{v.get('name')}")
    for h in data.get("hosts") or ():
        out.append(f"host {h.get('name') or h.get('address', '?')}")
    return tuple(out)
