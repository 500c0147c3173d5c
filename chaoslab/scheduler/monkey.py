"""Chaos Monkey mode: kill a random opted-in victim now and then, during allowed hours.

A monkey scenario lists its candidate targets with labels; only those whose labels match
``select`` are opted in. Kills follow ``MonkeyTrigger`` and each kill is an ordinary
chaoslab run of a one-step experiment (the vocabulary's ``kill``, or another kill-like
``fault:`` such as ``restart``, on the victim), so it goes through the ledger, the locks
and the verdict like any other run. Victims may be on any platform the fault is offered
on: ``pattern:worker``, ``lab:replica-1``, ``docker:web-1``, ``ssh:eu-1``,
``pod:shop/app=web``; ``with:`` passes platform arguments (``inventory``,
``kubeconfig``). ``leashed: true`` only records what the monkey would have done.

Why the kill times are hand-written rather than ``random.expovariate``: every scheduler
sharing a store must agree on the kill slots (that is how a slot runs exactly once), and
a restarted scheduler must find the same slots again. So the schedule is a pure function
of (scenario, seed, time), with both promises kept:

- time is cut into epochs of ``2 × min_gap``; an epoch holds a kill with probability
  ``p = 2 × min_gap / mean``, decided by a hash of its index; the kill falls at a hashed
  offset in the epoch's first ``min_gap``. Consecutive kills are therefore at least
  ``min_gap`` apart, and the mean time between kills is ``epoch / p = mean`` (kill counts
  are geometric, the discrete twin of a Poisson process). This needs ``mean ≥ 2 × min_gap``;
  the loader says so otherwise.
- the victim is chosen by a hash of the slot among the opted-in targets (sorted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chaoslab.scheduler.triggers import human, slot_key, unit_hash, utc

_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class MonkeyTarget:
    target: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MonkeySpec:
    """A scenario's ``monkey:`` section, validated."""

    targets: tuple[MonkeyTarget, ...]
    select: Mapping[str, str]
    mean_s: int
    min_gap_s: int
    signal: str = "SIGKILL"
    leashed: bool = False
    seed: str = ""
    heal_timeout_s: float = 30.0
    fault: str = "kill"  # a kill-like operation of chaoslab.drivers.vocabulary
    args: Mapping[str, Any] = field(default_factory=dict)  # platform arguments (inventory...)

    def opted_in(self) -> tuple[str, ...]:
        """Targets whose labels carry every ``select`` label, sorted (victim order)."""
        return tuple(
            sorted(
                t.target for t in self.targets if all(t.labels.get(k) == v for k, v in self.select.items())
            )
        )


@dataclass(frozen=True, kw_only=True)
class MonkeyTrigger:
    """Kill slots: random, reproducible, at least ``min_gap_s`` apart, ``mean_s`` on average."""

    scenario: str
    seed: str
    mean_s: int
    min_gap_s: int

    def __post_init__(self) -> None:
        if self.min_gap_s < 1 or self.mean_s < 2 * self.min_gap_s:
            raise ValueError("a monkey needs min_gap ≥ 1s and mean_time_between_kills ≥ 2 × min_gap")

    @property
    def epoch_s(self) -> int:
        return 2 * self.min_gap_s

    @property
    def probability(self) -> float:
        return self.epoch_s / self.mean_s

    def kill_in_epoch(self, k: int) -> datetime | None:
        """The kill slot of epoch ``k``, or None when that epoch has none."""
        if unit_hash("monkey-epoch", self.scenario, self.seed, str(k)) >= self.probability:
            return None
        offset = math.floor(unit_hash("monkey-offset", self.scenario, self.seed, str(k)) * self.min_gap_s)
        return _EPOCH0 + timedelta(seconds=k * self.epoch_s + offset)

    def next_after(self, after: datetime) -> datetime | None:
        k = math.floor((utc(after) - _EPOCH0).total_seconds() / self.epoch_s)
        # (1 - p)^limit < e^-60: a monkey that never fires in that many epochs is broken.
        limit = math.ceil(60 / self.probability) + 1
        for i in range(k, k + limit):
            slot = self.kill_in_epoch(i)
            if slot is not None and slot > after:
                return slot
        return None

    def describe(self) -> str:
        return f"monkey: a kill every ~{human(self.mean_s)}, ≥ {human(self.min_gap_s)} apart"


def pick_victim(spec: MonkeySpec, scenario: str, slot: datetime) -> str | None:
    """The victim of ``slot``: same answer on every scheduler; None if nobody opted in."""
    victims = spec.opted_in()
    if not victims:
        return None
    index = math.floor(unit_hash("monkey-victim", scenario, spec.seed, slot_key(slot)) * len(victims))
    return victims[index]


def kill_experiment(spec: MonkeySpec, scenario: str, victim: str, slot: datetime) -> dict[str, Any]:
    """The one-step experiment that kills ``victim`` (chaoslab's concise form)."""
    from chaoslab.drivers import vocabulary

    vop = vocabulary.BY_NAME[spec.fault]
    binding = next((b for b in vop.bindings if b.accepts(vocabulary.scheme_of(victim))), None)
    args: dict[str, Any] = {**spec.args, "timeout": f"{spec.heal_timeout_s:g}s"}
    if vop.canon("signal") is not None and binding is not None and "signal" not in binding.unsupported:
        args["signal"] = spec.signal
    exp: dict[str, Any] = {
        "title": f"Chaos Monkey ({scenario}) kills {victim}",
        "description": f"Scheduled kill for slot {slot_key(slot)} of scenario {scenario}.",
        "tags": ["chaos-monkey", scenario],
        "method": [{"do": spec.fault, "name": "monkey-kill", "target": victim, "with": args}],
    }
    # Before: there is a victim to kill. After the kill's revert (which waits up to
    # heal_timeout for a replacement): it runs again, or the run deviates. Platforms
    # without a counting probe rely on that revert's heal check alone.
    probe = _victim_probe(victim, spec.args, binding.platform if binding else "")
    if probe is not None:
        exp["steady-state-hypothesis"] = {"title": f"{victim} runs", "probes": [probe]}
    return exp


_K8S_CONN = ("kubeconfig", "context", "in_cluster", "request_timeout")


def _victim_probe(victim: str, args: Mapping[str, Any], platform: str) -> dict[str, Any] | None:
    """A probe counting the victim's live instances on its platform, or None."""
    at_least_one = {"type": "range", "range": [1, 1_000_000]}
    if platform == "local":
        return {"do": "process.count", "name": "victim-runs", "target": victim, "tolerance": at_least_one}
    if platform == "kubernetes":
        return {
            "do": "kubernetes.ready_pods",
            "name": "victim-runs",
            "target": "k8s:" + victim.removeprefix("pod:").removeprefix("k8s:"),
            "with": {k: v for k, v in args.items() if k in _K8S_CONN},
            "tolerance": at_least_one,
        }
    return None


def leashed_line(spec: MonkeySpec, victim: str) -> str:
    if spec.fault != "kill":
        return f"leashed: would have done {spec.fault} on {victim}"
    return f"leashed: would have sent {spec.signal} to {victim}"


def describe_targets(targets: Sequence[MonkeyTarget]) -> list[str]:
    return [f"{t.target} {dict(t.labels)}" for t in targets]
