"""Pre-run checks made right before a slot runs. Every check fails closed.

(A scenario file lists its own under ``gates:``, the key it always had; in the code
"gate" is only the CI gate, ``chaoslab.gate``.)

The contract (``Check``) is one method, ``check(ctx) -> CheckResult``; a check never raises
for a "no" and turns its own failures (Prometheus unreachable, an unreadable ledger) into
a refusal that says why: a scheduler that cannot tell whether it is safe to run must not
run. Checks are made in order and the first refusal stops the slot.

Built-in checks:

- ``not-halted`` (always on): ``chaoslab halt`` is not in force;
- ``ledger-clear`` (always on): the ledger has no open or damaged entry (an earlier run
  left a fault behind: ``chaoslab recover`` first);
- ``locks-free`` (always on): no live run holds a blast-radius lock on the scenario's
  targets (on any target when the scenario names none);
- ``no-firing-alerts``: Prometheus's ``/api/v1/alerts`` lists no firing alert whose
  labels match (e.g. ``{severity: page}``);
- ``error-budget``: at least ``min_remaining`` of the error budget is left for the SLO
  files given, and no page-level burn is active. The budget arithmetic belongs to
  ``chaoslab.sli.budget_gate.check_budget``; this check adds the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from chaoslab import paths
from chaoslab.errors import ChaoslabError


@dataclass(frozen=True, kw_only=True)
class CheckContext:
    """What a gate may look at: which scenario, which slot, which targets, when."""

    scenario: str
    slot: datetime
    now: datetime
    targets: tuple[str, ...] = ()
    home: Path  # chaoslab's home: its halt file, ledger and locks


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    gate: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{self.gate}: {'open' if self.ok else 'closed'}" + (
            f" — {self.detail}" if self.detail else ""
        )


class Check(Protocol):
    """One pre-run check. ``check`` must not raise: failures are refusals (fail closed)."""

    @property
    def name(self) -> str: ...

    def check(self, ctx: CheckContext) -> CheckResult: ...


def first_refusal(gates: Sequence[Check], ctx: CheckContext) -> tuple[CheckResult | None, list[CheckResult]]:
    """Check ``gates`` in order; return the first refusal (or None) and every result seen."""
    seen: list[CheckResult] = []
    for gate in gates:
        try:
            result = gate.check(ctx)
        except Exception as exc:  # a gate broke its contract: still fail closed
            result = CheckResult(gate=gate.name, ok=False, detail=f"gate failed: {type(exc).__name__}: {exc}")
        seen.append(result)
        if not result.ok:
            return result, seen
    return None, seen


@dataclass(frozen=True, kw_only=True)
class NotHaltedCheck:
    name: str = "not-halted"

    def check(self, ctx: CheckContext) -> CheckResult:
        from chaoslab.safety.halt import is_halted

        state = is_halted(ctx.home)
        if state is not None:
            return CheckResult(gate=self.name, ok=False, detail=f"chaoslab is {state.describe()}")
        return CheckResult(gate=self.name, ok=True)


@dataclass(frozen=True, kw_only=True)
class LedgerClearCheck:
    name: str = "ledger-clear"

    def check(self, ctx: CheckContext) -> CheckResult:
        from chaoslab.safety.ledger import Ledger

        try:
            scan = Ledger(paths.ledger_dir(ctx.home)).scan()
        except ChaoslabError as exc:
            return CheckResult(gate=self.name, ok=False, detail=f"cannot read the ledger: {exc}")
        if scan.entries or scan.problems:
            what = [e.describe() for e in scan.entries[:3]] + [str(p) for p in scan.problems[:3]]
            n = len(scan.entries) + len(scan.problems)
            return CheckResult(
                gate=self.name,
                ok=False,
                detail=f"{n} open ledger entr{'y' if n == 1 else 'ies'} (run `chaoslab recover`): "
                + "; ".join(what),
            )
        return CheckResult(gate=self.name, ok=True)


@dataclass(frozen=True, kw_only=True)
class LocksFreeCheck:
    name: str = "locks-free"

    def check(self, ctx: CheckContext) -> CheckResult:
        from chaoslab.safety.locks import holders, locks_dir
        from chaoslab.safety.owner import Life

        try:
            held = holders(locks_dir(ctx.home))
        except ChaoslabError as exc:
            return CheckResult(gate=self.name, ok=False, detail=f"cannot read the locks: {exc}")
        busy: list[str] = []
        for info in held:
            if isinstance(info, str):
                busy.append(info)  # unreadable lock file: treated as held
                continue
            if ctx.targets and info.target not in ctx.targets:
                continue
            if info.owner.liveness().life is Life.DEAD:
                continue  # reclaimable by the next run: not in the way
            busy.append(f"{info.target} held by {info.holder()}")
        if busy:
            return CheckResult(gate=self.name, ok=False, detail="; ".join(busy))
        return CheckResult(gate=self.name, ok=True)


@dataclass(frozen=True, kw_only=True)
class NoFiringAlertsCheck:
    """No firing alert in Prometheus matching every label in ``match`` (empty: any alert)."""

    url: str
    match: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 5.0
    name: str = "no-firing-alerts"

    def check(self, ctx: CheckContext) -> CheckResult:
        import httpx

        endpoint = self.url.rstrip("/") + "/api/v1/alerts"
        try:
            response = httpx.get(endpoint, timeout=self.timeout_s)
            response.raise_for_status()
            body = response.json()
            alerts = body["data"]["alerts"]
            if body.get("status") != "success" or not isinstance(alerts, list):
                raise ValueError(f"unexpected answer: {str(body)[:200]}")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return CheckResult(
                gate=self.name,
                ok=False,
                detail=f"cannot ask Prometheus at {endpoint} ({exc}); failing closed",
            )
        firing = []
        for alert in alerts:
            labels = alert.get("labels") or {}
            if alert.get("state") != "firing":
                continue
            if all(labels.get(k) == v for k, v in self.match.items()):
                firing.append(str(labels.get("alertname", "?")))
        if firing:
            return CheckResult(
                gate=self.name, ok=False, detail=f"{len(firing)} firing alert(s): {', '.join(sorted(firing))}"
            )
        return CheckResult(gate=self.name, ok=True, detail=f"no firing alerts at {self.url}")


@dataclass(frozen=True, kw_only=True)
class ErrorBudgetCheck:
    """At least ``min_remaining`` (a fraction) of each SLO's error budget is left, and no
    page-level burn is active.

    The arithmetic is ``chaoslab.sli.budget_gate.check_budget`` (budget remaining and
    burn rates from Prometheus for OpenSLO files); this gate adds the scenario's
    threshold. When that module is missing, or the budget cannot be read, the gate
    refuses: a budget we cannot read is not a budget we may spend.
    """

    slo_files: tuple[Path, ...]
    min_remaining: float
    prometheus_url: str | None = None
    name: str = "error-budget"
    # Reads the budget: (slo files, prometheus url) -> a BudgetDecision-like answer with
    # ``allowed``, ``reasons`` and ``statuses`` (each with ``slo``, ``budget_remaining``).
    # None: chaoslab.sli.budget_gate.check_budget. Injected by tests and other sources.
    reader: Callable[[tuple[Path, ...], str | None], Any] | None = None

    def check(self, ctx: CheckContext) -> CheckResult:
        reader = self.reader or _prometheus_budget
        try:
            decision = reader(self.slo_files, self.prometheus_url)
        except ImportError:
            return CheckResult(
                gate=self.name, ok=False, detail="chaoslab.sli.budget_gate is not installed; failing closed"
            )
        except ChaoslabError as exc:
            return CheckResult(gate=self.name, ok=False, detail=f"cannot read the error budget: {exc}")
        if not decision.allowed:
            return CheckResult(gate=self.name, ok=False, detail="; ".join(decision.reasons))
        low = [
            f"{st.slo}: {st.budget_remaining * 100:.1f}% of the error budget left,"
            f" below the scenario's {self.min_remaining * 100:g}%"
            for st in decision.statuses
            if st.budget_remaining < self.min_remaining
        ]
        if low:
            return CheckResult(gate=self.name, ok=False, detail="; ".join(low))
        left = ", ".join(f"{st.slo} {st.budget_remaining * 100:.1f}% left" for st in decision.statuses)
        return CheckResult(gate=self.name, ok=True, detail=left)


def _prometheus_budget(files: tuple[Path, ...], url: str | None) -> Any:
    from chaoslab.model.sections import SLOFiles
    from chaoslab.sli.budget_gate import check_budget

    return check_budget(SLOFiles(files=tuple(str(p) for p in files)), Path("/"), prometheus=url)


def default_checks() -> list[Check]:
    """The gates every scheduled run passes, whatever its scenario says."""
    return [NotHaltedCheck(), LedgerClearCheck(), LocksFreeCheck()]
