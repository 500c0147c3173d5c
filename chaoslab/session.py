"""One experiment run with every safety layer around it — what ``chaoslab run`` does.

Order matters (see ``chaoslab.safety``): a SIGUSR1 handler before registering the run
(a halt may arrive at once), then refuse if halted, register, lock every fault target,
refuse targets with open ledger entries, bring the lab up if the experiment needs it,
then run with the ledger, the SLI observation and the guard.
"""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine import events as ev
from chaoslab.engine.runner import Guard, Runner, RunOptions, RunResult
from chaoslab.errors import ChaoslabError, RunInterrupted, SLIError
from chaoslab.model.experiment import Experiment
from chaoslab.model.sections import SLOFiles
from chaoslab.paths import StatePaths
from chaoslab.safety.halt import check_not_halted, is_halted, register_run

# Imported where needed: a run without load or faults does not pay for them at start-up.
if TYPE_CHECKING:
    from chaoslab.engine.observe import LoadObservation
    from chaoslab.safety.guard import GuardSpec
    from chaoslab.safety.recover import RecoverReport


class SessionOptions(msgspec.Struct, frozen=True, kw_only=True):
    # Where chaoslab's state lives (halt file, ledger, locks, lab): the CLI passes
    # StatePaths.from_environment(), read once there; nothing below reads the environment.
    state: StatePaths
    recover_first: bool = False
    ignore_budget: bool = False
    lab_replicas: int = 3


class BudgetRefused(ChaoslabError):
    """The error budget says no (exhausted, or a page-level burn is active)."""


def fault_targets(exp: Experiment) -> list[str]:
    return sorted({str(a.target) for a in exp.faults() if a.target})


def guard_spec(exp: Experiment, observation: LoadObservation | None) -> GuardSpec | None:
    if observation is None or observation.spec is None:
        return None  # the load-based checks need the synthetic load
    from chaoslab.safety.guard import resolve_guard

    availability = [s.objective for s in observation.slos if s.sli.value == "availability" and s.objective]
    return resolve_guard(
        exp.guard,
        default_objective=max(availability) if availability else None,
        load_timeout_s=observation.spec.timeout_s,
    )


def run_experiment(
    exp: Experiment,
    *,
    registry: DriverRegistry,
    options: RunOptions,
    bus: ev.EventBus,
    run_id: str,
    session: SessionOptions,
) -> tuple[RunResult, RecoverReport | None]:
    state = session.state
    if options.state != state:  # one home for the whole run: the session's
        options = msgspec.structs.replace(options, state=state)
    if exp.faults():
        from chaoslab.engine.plan import check_runnable

        check_runnable(exp, registry=registry, state=state)  # before anything is touched
    observation = None
    budget_checks: tuple[Any, ...] = ()
    budget: dict[str, Any] | None = None
    if exp.slo_files is not None:
        observation, budget_checks, budget = _slo_files(exp, exp.slo_files, options, session, state)
    elif exp.load is not None or exp.sli_probes:
        from chaoslab.engine.observe import LoadObservation

        observation = LoadObservation(exp, options.run_dir, home=state.home)
    spec = guard_spec(exp, observation)
    targets = fault_targets(exp)
    if options.halt_requested is None:
        # `chaoslab halt` writes HALT before it signals: a SIGUSR1 without it is
        # chaoslib.exit.exit_gracefully() (a safeguard), not a halt.
        options = msgspec.structs.replace(options, halt_requested=lambda: _halt_pressed(state.home))
    previous = _halt_handler_until_runner_starts(options.handle_signals, state.home)
    recovered: RecoverReport | None = None
    try:
        check_not_halted(state.home)
        with ExitStack() as stack:
            stack.enter_context(register_run(run_id, home=state.home))
            ledger = None
            if exp.faults():
                from chaoslab.safety.claims import ClaimingLedger
                from chaoslab.safety.ledger import Ledger
                from chaoslab.safety.locks import Reclaimed, acquire
                from chaoslab.safety.recover import recover

                if targets:
                    stack.enter_context(
                        acquire(targets, run_id, lease_s=exp.runtime.lease_s + 60, directory=state.locks)
                    )

                def reclaimed(r: Reclaimed) -> None:
                    bus.emit(
                        ev.LockReclaimed(
                            run_id=run_id, key=r.target, former_holder=r.former_holder, reason=r.reason
                        )
                    )

                # Each fault also locks the identities it resolves to (see safety.claims).
                ledger = stack.enter_context(
                    ClaimingLedger(
                        run_id,
                        directory=state.ledger,
                        locks_directory=state.locks,
                        lease_s=exp.runtime.lease_s + 60,
                        on_reclaimed=reclaimed,
                        masker=bus.masker,
                        identities=lambda r: registry.get(r.driver).identities(r),
                    )
                )
                if session.recover_first:
                    recovered = recover(registry, ledger=Ledger(state.ledger), home=state.home)
                ledger.check_targets_clear(targets)
            if exp.needs_lab:  # after the refusals above: a refused run starts nothing
                from chaoslab.lab.control import running_lab

                stack.enter_context(running_lab(n_replicas=session.lab_replicas, base_dir=state.home))

            def guard_factory(runner: Runner) -> Guard:
                from chaoslab.safety.guard import GuardSpec, SLOGuard

                assert observation is not None
                return SLOGuard(
                    spec or GuardSpec(hard_error_rate=None),
                    observation.source,
                    runner.faults.first_injected_at,
                    budget_checks=budget_checks,
                    emit=runner.bus.emit,
                    run_id=runner.run_id,
                )

            runner = Runner(
                exp,
                registry=registry,
                options=options,
                bus=bus,
                run_id=run_id,
                ledger=ledger,
                observation=observation,
                guard_factory=guard_factory if (spec is not None and spec.enabled) or budget_checks else None,
                journal_extra={"budget_gate": budget} if budget is not None else None,
            )
            return runner.run(), recovered
    finally:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)


def _halt_pressed(home: Path) -> bool:
    return is_halted(home) is not None


def _slo_files(
    exp: Experiment, section: SLOFiles, options: RunOptions, session: SessionOptions, state: StatePaths
) -> tuple[LoadObservation, tuple[Any, ...], dict[str, Any]]:
    """SLO files: the pre-run budget gate, their objectives as steady state, and the
    guard's allowance (a share of each SLO's remaining error budget)."""

    from chaoslab.engine.observe import LoadObservation
    from chaoslab.sli.budget_gate import check_budget, spent_since, steady_state_from_files

    base = Path(exp.source).resolve().parent
    decision = check_budget(section, base, override=session.ignore_budget)
    if not decision.allowed:
        raise BudgetRefused(decision.format() + "\n(override with --ignore-budget if this run is approved)")
    slos, sources = steady_state_from_files(section, base)
    observation = LoadObservation(
        exp, options.run_dir, extra_slos=slos, extra_sources=sources, home=state.home
    )
    checks = []
    for allowance in decision.allowances:
        source = sources.get(f"prom:{allowance.slo}")
        sli = getattr(source, "sli", None)
        if sli is None:
            continue

        def check(t0: float, now: float, sli: Any = sli, allowance: Any = allowance) -> str | None:
            try:
                spent = spent_since(sli, t0, now)
            except SLIError as exc:
                if now - t0 < 30:  # fewer than two scrapes since the first fault: nothing to count yet
                    return None
                return f"cannot read what the run spent of SLO {allowance.slo}'s budget: {exc}"
            if allowance.exceeded(spent):
                return (
                    f"error-budget allowance spent on SLO {allowance.slo}: {spent:.1f} bad {allowance.unit} "
                    f"since the first fault, allowance {allowance.bad_events:.1f} "
                    f"({allowance.share:.0%} of the remaining budget)"
                )
            return None

        checks.append(check)
    return observation, tuple(checks), decision.to_dict()


def _halt_handler_until_runner_starts(install: bool, home: Path) -> dict[int, Any] | None:
    """A halt (or a chaoslib exit) arriving before the runner installs its own handlers
    still stops us cleanly: nothing was injected yet."""
    if not install:
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1 and _halt_pressed(home):
            raise RunInterrupted("HALT")
        raise RunInterrupted(signal.Signals(signum).name)

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGUSR1, signal.SIGUSR2)}
