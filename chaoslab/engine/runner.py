"""The run state machine.

::

    load ─► baseline ─► method ─► recovery ─► after ─► revert-all ─► rollbacks ─► verify-clean ─► verdict
               │            │  faults are held for their duration, then reverted
               │            └─ the "during" hypothesis runs alongside (continuously / during-method-only)
               └─ not met: the method is not run, the verdict is inconclusive

Reverting is structural: the phases run inside ``try``/``finally`` and the ``finally``
shields itself from further signals before it reverts every fault, runs the rollbacks
and checks that every target is clean.

Chaos Toolkit controls (``engine/controls.py``) wrap the experiment, the hypothesis, the
method, the rollbacks and every activity as ``chaos run`` does. Whatever ends a run early
— a signal, ``chaoslab halt``, chaoslib's exits, a control's or a provider's
``InterruptExecution``/``SystemExit``, the guard — ends it through that same ``finally``.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine import events as ev
from chaoslab.engine.controls import Controls, written
from chaoslab.engine.execute import Outcome, execute, substitute
from chaoslab.engine.faults import FaultManager, Ledger
from chaoslab.engine.fold import VerdictFold, slo_note
from chaoslab.engine.journal import EventLog, JournalBuilder, ctk_experiment, run_entry, write_journal
from chaoslab.engine.proctree import ActivityTrees
from chaoslab.engine.secrets import add_experiment_secrets, track_loaded
from chaoslab.engine.signals import Interrupts
from chaoslab.errors import (
    ActivityInterrupted,
    ChaoslabError,
    ControlInterrupted,
    DriverError,
    InvalidInput,
    LedgerError,
    LockHeld,
    RunInterrupted,
    TargetNotFound,
)
from chaoslab.model.experiment import Activity, Experiment, RollbackStrategy, Strategy
from chaoslab.model.varfile import VarValues
from chaoslab.paths import StatePaths
from chaoslab.sli.ctk import SERIES_KEY
from chaoslab.verdict import Verdict

Phase = ev.Phase


class Observation(Protocol):
    """SLI measurement around a run (synthetic load, Prometheus...). Optional.

    One that keeps a per-second series file has it as ``series_path``; the runner hands
    it to CTK steady-state probes (``chaoslab.sli.ctk``) through the run's configuration.
    """

    def bind(self, run_probe: Callable[[Activity], Outcome]) -> None: ...
    def start(self, bus: ev.EventBus, run_id: str) -> None: ...
    def stop(self) -> None: ...
    def judge(self, windows: Mapping[str, tuple[float, float]]) -> list[ev.SLOEvaluated]: ...


class Guard(Protocol):
    """Watches SLIs while faults are active; returns a reason to abort, or None."""

    def check(self, now: float) -> str | None: ...


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    run_dir: Path
    variables: Mapping[str, Any] = msgspec.field(default_factory=dict)
    var_values: VarValues | None = None  # --var-file, read before the run (model.varfile)
    strategy: Strategy | None = None
    rollback_strategy: RollbackStrategy | None = None
    seed: int | None = None
    handle_signals: bool = True
    # The CLI exits right after the run: ignore signals then instead of restoring the
    # default handlers, so a late Ctrl-C never turns into a traceback or a lost journal.
    ignore_signals_after: bool = False
    # Whether a SIGUSR1 that arrives now comes from `chaoslab halt` (which writes its
    # HALT file before signalling); otherwise SIGUSR1 is chaoslib.exit.exit_gracefully().
    halt_requested: Callable[[], bool] | None = None
    # Where this run's chaoslab state lives (lab, ledger, locks), passed in by the caller
    # (the CLI reads CHAOSLAB_HOME once); drivers get its lab directory through their
    # DriverContext.
    state: StatePaths


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    verdict: Verdict
    reason: str
    run_dir: Path
    journal_path: Path
    events_path: Path
    journal: Mapping[str, Any]
    breach_to_clean_s: float | None = None


class Aborted(ChaoslabError):
    pass


class _State(msgspec.Struct):
    verdicts: list[tuple[Verdict, str]] = msgspec.field(default_factory=list)
    method_ran: bool = False
    configured: bool = False  # configuration and secrets loaded: the run really started
    hypothesis_checked: bool = False
    deviated: bool = False
    during_failed: bool = False
    abort_reason: str | None = None
    breach_ts: float | None = None
    clean_ts: float | None = None
    windows: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)

    # Set by the runner: each finding goes out as a VerdictNoted event, and the verdict
    # is the fold of those events (chaoslab.engine.fold.VerdictFold), not of this list.
    note: Callable[[Verdict, str], None] = lambda _verdict, _reason: None

    def add(self, verdict: Verdict, reason: str) -> None:
        self.verdicts.append((verdict, reason))
        self.note(verdict, reason)


class _Background:
    """A background activity's thread; exactly one of its finish and its abandonment is
    recorded."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity
        self.thread: threading.Thread | None = None
        self.started = time.time()
        self.lock = threading.Lock()
        self.done = False
        self.abandoned = False

    def settle(self) -> bool:
        """Claim the right to record the activity's finish (False once abandoned)."""
        with self.lock:
            if self.abandoned:
                return False
            self.done = True
            return True


def interruption_reason(exc: RunInterrupted) -> str:
    if exc.signame == "HALT":
        return "halted by `chaoslab halt`"
    if exc.signame == "SIGUSR1":
        return "interrupted by chaoslib.exit.exit_gracefully() (SIGUSR1)"
    if exc.signame == "SIGUSR2":
        return "interrupted by chaoslib.exit.exit_ungracefully() (SIGUSR2)"
    if isinstance(exc, ControlInterrupted | ActivityInterrupted):
        return str(exc)
    return f"interrupted by {exc.signame}"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Runner:
    def __init__(
        self,
        experiment: Experiment,
        *,
        registry: DriverRegistry,
        options: RunOptions,
        bus: ev.EventBus | None = None,
        ledger: Ledger | None = None,
        observation: Observation | None = None,
        guard_factory: Callable[[Runner], Guard] | None = None,
        run_id: str | None = None,
        journal_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.journal_extra = dict(journal_extra or {})
        self.exp = experiment
        self.registry = registry
        self.options = options
        self.bus = bus or ev.EventBus()
        self.ledger = ledger
        self.observation = observation
        self.guard_factory = guard_factory
        self.run_id = run_id or new_run_id()
        self.state = _State()
        self.verdict_fold = VerdictFold()
        self.bus.subscribe(self.verdict_fold)
        self.state.note = lambda verdict, reason: self.bus.emit(
            ev.VerdictNoted(run_id=self.run_id, verdict=verdict, reason=reason)
        )
        self.strategy = options.strategy or experiment.runtime.strategy
        self.rollback_strategy = options.rollback_strategy or experiment.runtime.rollback
        self.ctx = DriverContext(
            run_id=self.run_id,
            state_dir=options.run_dir,
            lab_dir=options.state.lab,
            seed=options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "big"),
        )
        self._abort = threading.Event()
        self._wound_down = False
        self._baseline_judged = False
        self.cleanup_errors: list[str] = []
        self.configuration: dict[str, Any] = {}
        self.secrets: dict[str, Any] = {}
        # process activities see the run's .env var-file values; os.environ is never written
        self.activity_env: dict[str, str] | None = None
        self.masker = self.bus.masker  # every event and record passes through it
        add_experiment_secrets(
            self.masker,
            raw={**experiment.raw, "secrets": experiment.secrets, "configuration": experiment.configuration},
            source=experiment.source,
            variables=options.variables,
            var_values=options.var_values,
        )
        track_loaded(self.masker, lambda: self.secrets, lambda: self.configuration)
        # One Controls per run (no module-level state), one shared document for its hooks.
        self.controls = Controls(experiment.raw, report=self._control_failed)
        self._interruption: RunInterrupted | None = None
        self._control_interrupt: RunInterrupted | None = None  # raised on another thread
        self._background: list[_Background] = []
        self._method_runs: list[dict[str, Any]] = []
        self._rollback_runs: list[dict[str, Any]] = []
        self.activity_trees = ActivityTrees()
        self.faults = FaultManager(
            registry=registry,
            ctx=self.ctx,
            bus=self.bus,
            ledger=ledger,
            default_lease_s=experiment.runtime.lease_s,
        )

    # --- public ------------------------------------------------------------------------

    def abort(self, reason: str, breach_ts: float | None = None) -> None:
        """Stop now: revert every fault at once (callable from any thread, e.g. the guard)."""
        if self._abort.is_set():
            return
        self.state.abort_reason = reason
        self.state.breach_ts = breach_ts or time.time()
        self._abort.set()
        self.bus.emit(ev.GuardTripped(run_id=self.run_id, reason=reason, breach_ts=self.state.breach_ts))
        self.faults.revert_all()
        self.state.clean_ts = time.time()

    def run(self) -> RunResult:
        run_dir = self.options.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        log = EventLog(run_dir / "events.ndjson")
        journal = JournalBuilder()
        self.bus.subscribe(log)
        self.bus.subscribe(journal)
        interrupts = Interrupts(self.faults.pending_labels, is_halt=self.options.halt_requested)
        t0 = time.time()
        self.bus.emit(
            ev.RunStarted(
                run_id=self.run_id,
                title=self.exp.title,
                source=self.exp.source,
                pid=os.getpid(),
                experiment=self.exp.raw,
            )
        )
        controls = self.controls
        if self.options.handle_signals:
            interrupts.install()
        try:
            try:
                try:
                    self._load_configuration()
                    series = getattr(self.observation, "series_path", None)
                    if series is not None:
                        # CTK steady-state probes (chaoslab.sli.ctk) read the live series
                        # from this run's file: passed in, never through os.environ.
                        self.configuration.setdefault(SERIES_KEY, str(series))
                    self.state.configured = True
                    controls.configure(self.configuration, self.secrets)
                    controls.apply("experiment", controls.experiment, "before")
                    if self.observation is not None:
                        self.observation.bind(self._execute)
                        self.observation.start(self.bus, self.run_id)
                    self._phases()
                except RunInterrupted as exc:
                    self._interrupted(exc)
                except Aborted as exc:
                    self.state.add(Verdict.ABORTED, str(exc))
                except InvalidInput as exc:
                    if self._method_runs or self.faults.during_window() is not None:
                        # found only at run time (arguments substituted then): something
                        # ran, so this is not "invalid input, nothing ran"
                        self.state.add(Verdict.ERROR, f"invalid input found after the method started: {exc}")
                    else:
                        self.state.add(Verdict.INVALID_INPUT, str(exc))
                except DriverError as exc:
                    self.state.add(Verdict.ERROR, f"driver error: {exc}")
                except (LockHeld, LedgerError) as exc:  # a fault's resolved target is taken
                    self.state.add(Verdict.ERROR, f"refused: {exc}")
                except Exception as exc:  # the engine must still revert after its own bugs
                    self.state.add(Verdict.ERROR, f"unexpected error: {type(exc).__name__}: {exc}")
            finally:
                interrupts.shielded = True
                self._wind_down()
        except RunInterrupted as exc:
            # The first signal landed in an instant no handler above covers (inside an
            # except clause, or just before the shield went up): record it, and make sure
            # the wind-down happened — it is idempotent and now shielded.
            self._interrupted(exc)
            if not self._wound_down:
                self._wind_down()
        try:
            self._report_late_signals(interrupts)
            result = self._finish(t0, log, journal, run_dir)
        finally:
            interrupts.restore(ignore=self.options.ignore_signals_after)
        return result

    def _control_failed(self, control: str, hook: str, error: str) -> None:
        self.bus.emit(ev.ControlFailed(run_id=self.run_id, control=control, hook=hook, error=error))

    def _interrupted(self, exc: RunInterrupted) -> None:
        if self._interruption is not None and exc is self._interruption:
            return
        if self._interruption is None:
            self._interruption = exc
        verdict = Verdict.ABORTED if exc.signame == "HALT" else Verdict.INTERRUPTED
        self.state.add(verdict, interruption_reason(exc))
        self.bus.emit(
            ev.Interrupted(
                run_id=self.run_id,
                signal=exc.signame,
                during="run",
                pending=tuple(self.faults.pending_labels()),
            )
        )

    def _report_late_signals(self, interrupts: Interrupts) -> None:
        """Signals received while reverting become journal events here, not in the handler."""
        for name, late, pending in interrupts.received:
            if late:
                self.bus.emit(
                    ev.Interrupted(run_id=self.run_id, signal=name, during="revert", pending=pending)
                )

    def _finish(self, t0: float, log: EventLog, journal: JournalBuilder, run_dir: Path) -> RunResult:
        if self._abort.is_set():
            self.state.add(Verdict.ABORTED, f"aborted by the guard: {self.state.abort_reason}")
        verdict, reason = self._verdict()
        self.bus.emit(
            ev.RunFinished(
                run_id=self.run_id,
                verdict=verdict,
                exit_code=int(verdict.exit_code),
                reason=reason,
                duration_s=time.time() - t0,
            )
        )
        breach = None
        if self.state.breach_ts and self.state.clean_ts:
            breach = self.state.clean_ts - self.state.breach_ts

        def build() -> dict[str, Any]:
            doc = journal.build(
                experiment=ctk_experiment(self.exp),
                extra={
                    "breach_to_clean_s": breach,
                    "windows": {k: list(v) for k, v in self.state.windows.items()},
                    "seed": self.ctx.seed,
                    "consumer_errors": [repr(e) for _, e in self.bus.errors],
                    "cleanup_errors": self.cleanup_errors,
                    "events_path": str(log.path),
                    "source": self.exp.source,
                    **self.journal_extra,
                },
            )
            # The events in it are masked already; the experiment and the extras are not.
            masked: dict[str, Any] = self.masker.deep(doc)
            return masked

        doc = build()
        if self.state.configured and self.controls.active:
            # As `chaos run`: after_experiment_control gets the journal as its state (a
            # safeguard writes which probe tripped it there), then cleanup_control.
            before = copy.deepcopy(doc)
            try:
                self.controls.apply("experiment", self.controls.experiment, "after", doc)
            except ControlInterrupted as exc:  # the run is over: nothing left to interrupt
                self._control_failed(exc.control, exc.hook, str(exc))
            changed = written(before, doc)
            if changed:
                self.bus.emit(ev.ControlsWrote(run_id=self.run_id, level="experiment", values=changed))
            self.controls.cleanup()
            doc = build()
        reason = self.masker.text(reason)
        journal_path = run_dir / "journal.json"
        write_journal(journal_path, doc)
        log.close()
        return RunResult(
            run_id=self.run_id,
            verdict=verdict,
            reason=reason,
            run_dir=run_dir,
            journal_path=journal_path,
            events_path=log.path,
            journal=doc,
            breach_to_clean_s=breach,
        )

    # --- phases ------------------------------------------------------------------------

    def _load_configuration(self) -> None:
        from chaoslab.engine.configuration import activity_env, load_configuration

        self.configuration, self.secrets = load_configuration(
            self.exp, self.options.variables, self.options.var_values, dynamic=True
        )
        self.activity_env = activity_env(self.options.var_values)

    def _phases(self) -> None:
        exp, rt = self.exp, self.exp.runtime
        # As Chaos Toolkit: a hypothesis without probes is not run at all ("just exploring").
        has_hypothesis = bool(exp.hypothesis and exp.hypothesis.probes)
        baseline_start = time.time()
        if rt.baseline_s:
            self._phase_start(Phase.BASELINE)
            self._sleep(rt.baseline_s)
        self.state.windows["baseline"] = (baseline_start, time.time())
        if self.observation is not None and not self._baseline_slos_hold():
            return
        if has_hypothesis and self.strategy.before:
            met = self._hypothesis(Phase.BASELINE)
            if not met:
                self.state.add(
                    Verdict.INCONCLUSIVE,
                    "the steady state did not hold before the method (baseline); the method was not run",
                )
                return
        self._check_abort()
        self._method()
        self._check_abort()
        if rt.recovery_s:
            self._phase_start(Phase.RECOVERY)
            self._sleep(rt.recovery_s)
            self._phase_end(Phase.RECOVERY, True)
        after_start = time.time()
        if rt.after_s:
            self._phase_start(Phase.AFTER)
            self._sleep(rt.after_s)
        self.state.windows["after"] = (after_start, time.time())
        if has_hypothesis and self.strategy.after:
            met = self._hypothesis(Phase.AFTER)
            if not met:
                self.state.deviated = True
                self.state.add(Verdict.DEVIATED, "the steady state did not hold after the method")

    def _baseline_slos_hold(self) -> bool:
        """Judge the baseline window now: a system that is not steady is not experimented on."""
        assert self.observation is not None
        results = self.observation.judge({"baseline": self.state.windows["baseline"]})
        held = True
        for result in results:
            self.bus.emit(result)
            self._fold_slo(result)
            if result.verdict != "pass" and result.detail.get("critical", True) is not False:
                held = False
        self._baseline_judged = True
        if not held:
            self.state.add(Verdict.INCONCLUSIVE, "the SLOs did not hold at baseline; the method was not run")
        return held

    def _phase_start(self, phase: Phase) -> None:
        self.bus.emit(ev.PhaseStarted(run_id=self.run_id, phase=phase))

    def _phase_end(self, phase: Phase, ok: bool, detail: str = "") -> None:
        self.bus.emit(ev.PhaseFinished(run_id=self.run_id, phase=phase, ok=ok, detail=detail))

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise Aborted(f"aborted by the guard: {self.state.abort_reason}")
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and self._control_interrupt is not None:  # raised by a hook on another thread
            exc, self._control_interrupt = self._control_interrupt, None
            raise exc

    def _sleep(self, seconds: float) -> None:
        """Sleep in slices: faults due for revert are reverted, aborts are seen at once."""
        end = time.monotonic() + seconds
        while True:
            self._check_abort()
            self._revert_due()
            left = end - time.monotonic()
            if left <= 0:
                return
            if self._abort.wait(min(0.05, left)):
                self._check_abort()

    def _revert_due(self) -> None:
        self.faults.dispatch_due(time.time())

    def _hypothesis(self, phase: Phase) -> bool:
        """The steady-state hypothesis once, wrapped by its controls (state: the block)."""
        assert self.exp.hypothesis is not None
        controls = self.controls
        context = controls.hypothesis
        if phase is not Phase.DURING:
            self._phase_start(phase)
        state: dict[str, Any] | None = None
        met = True
        completed = False
        try:
            controls.apply("hypothesis", context, "before")
            state = {"steady_state_met": None, "probes": []}
            for probe in self.exp.hypothesis.probes:
                outcome, entry = self._activity(probe, phase)
                state["probes"].append(entry)
                if outcome.status != "succeeded" or outcome.tolerance_met is False:
                    met = False
                    break  # as Chaos Toolkit: the first probe out of tolerance decides
            state["steady_state_met"] = met
            completed = True
        finally:
            snapshot = copy.deepcopy(state)
            # An after hook that raises leaves the block unrecorded, as in Chaos Toolkit.
            controls.apply("hypothesis", context, "after", state)
        if completed:
            self.state.hypothesis_checked = True
            self.bus.emit(
                ev.HypothesisChecked(
                    run_id=self.run_id,
                    phase=phase,
                    met=met,
                    title=self.exp.hypothesis.title,
                    written=written(snapshot, state),
                )
            )
            if phase is not Phase.DURING:
                self._phase_end(phase, met)
        return met

    def _activity(
        self, activity: Activity, phase: Phase, bg: _Background | None = None
    ) -> tuple[Outcome, dict[str, Any]]:
        """One activity wrapped by its controls, as chaoslib's ``execute_activity``: the
        after hook gets the run's journal entry as ``state`` and what it writes there is
        kept; pauses belong to the activity."""
        controls = self.controls
        context = controls.activity_context(activity.path, activity.ctk)
        finished: ev.ActivityFinished | None = None
        entry: dict[str, Any] | None = None
        outcome: Outcome | None = None
        try:
            controls.apply("activity", context, "before")
            self.bus.emit(
                ev.ActivityStarted(
                    run_id=self.run_id,
                    phase=phase,
                    name=activity.name,
                    activity_type=activity.type,
                    background=activity.background,
                )
            )
            if activity.pause_before_s:
                self._sleep(activity.pause_before_s)
            outcome = self._inject(activity) if activity.is_fault else self._execute_interruptible(activity)
            finished = self._finished(activity, phase, outcome)
            entry = run_entry(finished)
            if activity.pause_after_s and not isinstance(outcome.exception, RunInterrupted | Aborted):
                self._sleep(activity.pause_after_s)
        finally:
            snapshot = copy.deepcopy(entry)
            try:
                controls.apply("activity", context, "after", entry)
            finally:
                if finished is not None and (bg is None or bg.settle()):
                    changed = written(snapshot, entry)
                    self.bus.emit(msgspec.structs.replace(finished, written=changed))
                    if entry is not None and phase is Phase.METHOD:
                        self._method_runs.append(entry)
                    elif entry is not None and phase is Phase.ROLLBACK:
                        self._rollback_runs.append(entry)
        assert outcome is not None and entry is not None
        if isinstance(outcome.exception, InvalidInput | RunInterrupted | Aborted):
            raise outcome.exception
        return outcome, entry

    def _execute(self, activity: Activity) -> Outcome:
        outcome = execute(
            activity,
            registry=self.registry,
            ctx=self.ctx,
            configuration=self.configuration,
            secrets=self.secrets,
            default_timeout_s=self.exp.runtime.activity_timeout_s,
            tick=self._tick,
            trees=self.activity_trees,
            env=self.activity_env,
        )
        exc = outcome.exception
        if isinstance(exc, DriverError) and not isinstance(exc, TargetNotFound) and activity.driver:
            # A probe that cannot reach its driver's infrastructure (a dead dockerd, an API
            # server down) measured nothing: an infrastructure error, not a failed hypothesis.
            self.state.add(Verdict.ERROR, f"probe {activity.name} could not run: {exc}")
        return outcome

    def _execute_interruptible(self, activity: Activity) -> Outcome:
        """As chaostoolkit-lib: a python provider that raises ``InterruptExecution`` or
        ``SystemExit`` ends the run (here through the wind-down); the activity failed."""
        start = time.time()
        try:
            outcome = self._execute(activity)
        except SystemExit as exc:
            detail = f"SystemExit({exc.code})"
            return Outcome(
                status="failed",
                output=None,
                error=detail,
                start=start,
                end=time.time(),
                exception=ActivityInterrupted(activity.name, detail, graceful=exc.code != 30),
            )
        if type(outcome.exception).__name__ == "InterruptExecution":
            detail = f"InterruptExecution: {outcome.exception}"
            interrupted = ActivityInterrupted(activity.name, detail)
            return msgspec.structs.replace(outcome, error=detail, exception=interrupted)
        return outcome

    def _tick(self) -> None:
        """Called every 50 ms while an activity runs: a timed fault ends on time even
        mid-activity, and after a guard abort the main thread abandons the activity at
        once instead of waiting for it (its faults are already reverted)."""
        self._revert_due()
        if threading.current_thread() is threading.main_thread():
            self._check_abort()

    def _finished(self, activity: Activity, phase: Phase, outcome: Outcome) -> ev.ActivityFinished:
        return ev.ActivityFinished(
            run_id=self.run_id,
            phase=phase,
            name=activity.name,
            activity_type=activity.type,
            status=outcome.status,
            start=outcome.start,
            end=outcome.end,
            output=outcome.output,
            error=outcome.error,
            tolerance_met=outcome.tolerance_met,
            activity=activity.ctk,
        )

    def _report(self, activity: Activity, phase: Phase, outcome: Outcome) -> None:
        self.bus.emit(self._finished(activity, phase, outcome))

    def _inject(self, activity: Activity) -> Outcome:
        start = time.time()
        args = substitute(dict(activity.args), self.configuration, self.secrets)
        target = substitute(activity.target, self.configuration, self.secrets)
        fault = self.faults.inject(activity, args, target)  # errors propagate: no fault, no experiment
        return Outcome(
            status="succeeded",
            output={
                "fault_id": fault.record.fault_id,
                "target": fault.record.target,
                "lease_expires_at": fault.record.lease_expires_at,
                "data": dict(fault.record.data),
            },
            error=None,
            start=start,
            end=time.time(),
        )

    def _method(self) -> None:
        controls = self.controls
        context = controls.experiment
        self._phase_start(Phase.METHOD)
        method_start = time.time()
        self.state.method_ran = True
        stop_during = threading.Event()
        during_thread = None
        guard_stop = threading.Event()
        guard_thread = None
        state: list[dict[str, Any]] | None = None
        try:
            controls.apply("method", context, "before")
            state = self._method_runs
            if self.exp.hypothesis and self.exp.hypothesis.probes and self.strategy.during:
                during_thread = threading.Thread(
                    target=self._during_loop, args=(stop_during,), name="hypothesis-during", daemon=True
                )
                during_thread.start()
            if self.guard_factory is not None:
                guard = self.guard_factory(self)
                guard_thread = threading.Thread(
                    target=self._guard_loop, args=(guard, guard_stop), name="guard", daemon=True
                )
                guard_thread.start()
            for activity in self.exp.method:
                self._check_abort()
                if self.state.during_failed and self.exp.runtime.fail_fast:
                    break
                self._revert_due()
                if activity.background and not activity.is_fault:
                    bg = _Background(activity)
                    bg.thread = threading.Thread(
                        target=self._run_background,
                        args=(bg,),
                        name=f"background:{activity.name}",
                        daemon=True,
                    )
                    self._background.append(bg)
                    bg.thread.start()
                    continue
                self._activity(activity, Phase.METHOD)
            self._join_background(time.monotonic() + self.exp.runtime.activity_timeout_s)
            # Hold timed faults until their duration ends (the "during" window).
            while (due := self.faults.next_due()) is not None:
                if self.state.during_failed and self.exp.runtime.fail_fast:
                    break
                self._sleep(max(0.0, min(0.1, due - time.time())))
            if self.faults.active():
                self._phase_start(Phase.REVERT)
                self.faults.revert_all()
                self._phase_end(Phase.REVERT, not self.faults.not_clean())
        finally:
            stop_during.set()
            guard_stop.set()
            if during_thread is not None:
                during_thread.join(timeout=self.exp.runtime.activity_timeout_s)
            if guard_thread is not None:
                guard_thread.join(timeout=2.0)
            self.state.windows["during"] = (method_start, time.time())
            if state is not None:
                state.sort(key=lambda r: str(r.get("start", "")))
            snapshot = copy.deepcopy(state)
            try:
                controls.apply("method", context, "after", state)
            finally:
                changed = written(snapshot, state)
                if changed:
                    self.bus.emit(ev.ControlsWrote(run_id=self.run_id, level="method", values=changed))
                self._phase_end(Phase.METHOD, not self.state.during_failed)
        if self.state.during_failed:
            self.state.deviated = True
            self.state.add(Verdict.DEVIATED, "the steady state did not hold during the method")

    def _run_background(self, bg: _Background) -> None:
        try:
            self._activity(bg.activity, Phase.METHOD, bg)
        except ControlInterrupted as exc:
            # Chaos Toolkit loses an interruption raised around a background activity (it
            # stays in the activity's future); chaoslab does the same but says so.
            detail = f"{exc} (ignored: raised around a background activity)"
            self._control_failed(exc.control, exc.hook, detail)
        except (ChaoslabError, Exception):  # recorded in the activity's own journal entry
            pass

    def _join_background(self, deadline: float) -> None:
        for bg in self._background:
            while bg.thread is not None and bg.thread.is_alive() and time.monotonic() < deadline:
                bg.thread.join(0.05)

    def _abandon_background(self, why: str) -> None:
        """Background activities still running are recorded, not lost: ``abandoned``."""
        for bg in self._background:
            with bg.lock:
                if bg.done or bg.abandoned:
                    continue
                bg.abandoned = True
            self.bus.emit(
                ev.ActivityFinished(
                    run_id=self.run_id,
                    phase=Phase.METHOD,
                    name=bg.activity.name,
                    activity_type=bg.activity.type,
                    status="abandoned",
                    start=bg.started,
                    end=time.time(),
                    error=f"still running when the run ended ({why}); abandoned",
                    activity=bg.activity.ctk,
                )
            )

    def _during_loop(self, stop: threading.Event) -> None:
        freq = self.exp.runtime.frequency_s
        while not stop.is_set():
            try:
                met = self._hypothesis(Phase.DURING)
            except (ControlInterrupted, ActivityInterrupted) as exc:
                self._control_interrupt = exc  # the main thread ends the run with it
                return
            except Exception:
                met = False
            if not met:
                self.state.during_failed = True
                if self.exp.runtime.fail_fast:
                    return
            stop.wait(freq)

    def _guard_loop(self, guard: Guard, stop: threading.Event) -> None:
        # A guard may ask to be asked more often than every 100 ms (the sequential guard
        # reads only what is new, so it can look every 20 ms).
        interval = float(getattr(guard, "interval_s", 0.1))
        try:
            while not stop.is_set() and not self._abort.is_set():
                try:
                    reason = guard.check(time.time())
                except Exception as exc:  # a guard that cannot see must brake: fail safe
                    reason = f"the guard could not check the SLIs: {type(exc).__name__}: {exc}"
                if reason is not None:
                    self.abort(reason, breach_ts=time.time())
                    return
                stop.wait(interval)
        finally:
            close = getattr(guard, "close", None)  # optional: a guard that reports what it saw
            if close is not None:
                try:
                    close()
                except Exception as exc:  # reporting must never change the run
                    self.cleanup_errors.append(f"guard.close: {exc}")

    def _wind_down(self) -> None:
        """Always: revert every fault, run rollbacks, verify clean. Never skipped."""
        self._wound_down = True
        if self.faults.active():
            self._phase_start(Phase.REVERT)
            self.faults.revert_all()
            self._phase_end(Phase.REVERT, not self.faults.not_clean())
        # Faults are reverted: now, as Chaos Toolkit, wait for background activities still
        # running unless the exit was ungraceful (SIGUSR2, a halt, a guard abort, Ctrl-C);
        # whatever still runs is recorded as abandoned, never lost from the journal.
        interruption = self._interruption
        if not self._abort.is_set() and (interruption is None or interruption.graceful):
            self._join_background(time.monotonic() + self.exp.runtime.activity_timeout_s)
        why = "the activity outlived its deadline"
        if interruption is not None:
            why = interruption_reason(interruption)
        elif self._abort.is_set():
            why = "aborted by the guard"
        self._abandon_background(why)
        if self._should_rollback() and (self.exp.rollbacks or self.controls.active):
            self._rollbacks()  # with no rollbacks declared, Chaos Toolkit still calls the hooks
        if self.observation is not None:
            try:
                self.observation.stop()
                windows = {
                    k: v
                    for k, v in self.state.windows.items()
                    if not (k == "baseline" and self._baseline_judged)
                }
                if self.state.method_ran:
                    windows["during"] = self.faults.during_window() or self.state.windows["during"]
                    self.state.windows["during"] = windows["during"]
                for result in self.observation.judge(windows):
                    self.state.hypothesis_checked = True
                    self.bus.emit(result)
                    self._fold_slo(result)
            except ChaoslabError as exc:
                self.state.add(Verdict.ERROR, f"SLI measurement failed: {exc}")
        self.faults.stop_heartbeats()  # reverted faults are retired; a dirty one keeps its lease
        self.activity_trees.end_all()  # an abandoned activity leaves no process behind
        for fault in self.faults.lapsed():
            self.state.add(
                Verdict.INCONCLUSIVE,
                f"{fault.label} was ended early by its lease ({fault.lapsed}): the method did not"
                " run under it throughout",
            )
        self._phase_start(Phase.VERIFY)
        dirty = self.faults.not_clean()
        for fault in dirty:
            residue = "; ".join(fault.clean.residue) if fault.clean else (fault.error or "not verified")
            self.state.add(Verdict.NOT_CLEAN, f"{fault.label} is not clean after revert: {residue}")
        self._phase_end(Phase.VERIFY, not dirty)
        for driver in self.registry.loaded():
            try:
                driver.end_run(self.ctx)
            except Exception as exc:  # releasing resources must not change the verdict
                self.cleanup_errors.append(f"{driver.name}.end_run: {exc}")

    def _rollbacks(self) -> None:
        """The rollbacks, wrapped by the rollback-level controls (state: their runs). A
        control that interrupts here ends the rollbacks, as in Chaos Toolkit; every fault
        was already reverted by then."""
        controls = self.controls
        context = controls.experiment
        if self.exp.rollbacks:
            self._phase_start(Phase.ROLLBACK)
        state: list[dict[str, Any]] | None = None
        try:
            controls.apply("rollback", context, "before")
            state = self._rollback_runs
            for activity in self.exp.rollbacks:
                try:
                    self._activity(activity, Phase.ROLLBACK)
                except ControlInterrupted:
                    raise
                except ChaoslabError as exc:
                    self.state.add(Verdict.ERROR, f"rollback {activity.name} failed: {exc}")
        except ControlInterrupted as exc:
            self._interrupted(exc)
        finally:
            snapshot = copy.deepcopy(state)
            try:
                controls.apply("rollback", context, "after", state)
            except ControlInterrupted as exc:
                self._interrupted(exc)
            changed = written(snapshot, state)
            if changed:
                self.bus.emit(ev.ControlsWrote(run_id=self.run_id, level="rollback", values=changed))
            if self.exp.rollbacks:
                self._phase_end(Phase.ROLLBACK, True)

    def _fold_slo(self, result: ev.SLOEvaluated) -> None:
        if (note := slo_note(result)) is not None:
            self.state.add(*note)

    def _should_rollback(self) -> bool:
        rs = self.rollback_strategy
        if not self.state.configured:
            return False  # the configuration could not be loaded: nothing ran, nothing to undo
        if rs is RollbackStrategy.NEVER:
            return False
        if rs is RollbackStrategy.ALWAYS:
            return True
        if rs is RollbackStrategy.DEVIATED:
            return self.state.deviated
        interrupted = any(v in (Verdict.INTERRUPTED, Verdict.ABORTED) for v, _ in self.state.verdicts)
        return self.state.method_ran and not interrupted

    def _verdict(self) -> tuple[Verdict, str]:
        """The fold of this run's events (the run is winding down: ended)."""
        return self.verdict_fold.result(ended=True)
