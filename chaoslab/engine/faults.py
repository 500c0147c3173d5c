"""Active faults of one run: inject through the ledger, revert all in parallel, verify.

The revert guarantee is structural: ``Runner.run`` winds down in a ``finally``
(``Runner._wind_down``), which calls ``FaultManager.revert_all`` whatever happened; a
caller that drives a ``FaultManager`` alone can enter it as a context manager, whose
``__exit__`` does the same.
Reverts run in parallel, each under its own deadline, because the moment of a breach is
when speed matters most.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import msgspec

from chaoslab.drivers import lease
from chaoslab.drivers.base import (
    MAX_LEASE_S,
    CleanReport,
    Driver,
    DriverContext,
    LeaseKind,
    RevertRecord,
    RevertResult,
    check_args,
    with_defaults,
)
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine import events as ev
from chaoslab.errors import DriverError, InvalidInput
from chaoslab.model.experiment import Activity

# Extra time a target-side lease runs past the planned duration, so the runner's own
# revert normally comes first and the lease is only the safety net.
LEASE_MARGIN_S = 5.0


class Ledger(Protocol):
    def claim(self, record: RevertRecord) -> Any: ...
    def open_entry(self, record: RevertRecord) -> Any: ...
    def update_entry(self, record: RevertRecord) -> Any: ...
    def close_entry(self, fault_id: str, outcome: CleanReport, *, detail: str = "") -> Any: ...


class ActiveFault(msgspec.Struct, kw_only=True):
    record: RevertRecord
    activity: Activity
    lease: LeaseKind
    injected_at: float
    revert_at: float | None
    reverted: RevertResult | None = None
    clean: CleanReport | None = None
    error: str | None = None
    reverted_at: float | None = None
    clean_at: float | None = None
    reverting: bool = False  # a revert was dispatched (its duration ended) or began
    lapsed: str | None = None  # the lease ended the fault before the runner did: why
    lock: threading.Lock = msgspec.field(default_factory=threading.Lock)
    renewing: threading.Lock = msgspec.field(default_factory=threading.Lock)  # held while renew runs

    @property
    def label(self) -> str:
        return f"{self.record.driver}.{self.record.operation} on {self.record.target}"


class FaultManager:
    def __init__(
        self,
        *,
        registry: DriverRegistry,
        ctx: DriverContext,
        bus: ev.EventBus,
        ledger: Ledger | None,
        default_lease_s: float,
        revert_timeout_s: float = 60.0,
    ) -> None:
        self.registry = registry
        self.ctx = ctx
        self.bus = bus
        self.ledger = ledger
        self.default_lease_s = default_lease_s
        self.revert_timeout_s = revert_timeout_s
        self._faults: list[ActiveFault] = []
        self._lock = threading.Lock()
        self._beater: threading.Thread | None = None
        self._stop_beats = threading.Event()
        self._lapse_lock = threading.Lock()  # one lease-lapsed event per fault

    # --- inject --------------------------------------------------------------------------

    def inject(self, activity: Activity, args: Mapping[str, Any], target: str | None) -> ActiveFault:
        assert activity.driver and activity.operation
        driver = self.registry.get(activity.driver)
        op = driver.operation(activity.operation)
        if op is None:
            raise DriverError(f"no operation {activity.operation!r}", driver=activity.driver)
        problems = check_args(op, args, f"{activity.path}.with")
        if problems:
            raise InvalidInput(problems)
        duration = activity.duration_s
        lease_s = None
        renewed = op.lease is LeaseKind.TARGET and op.name in driver.heartbeat_ops
        if op.lease is LeaseKind.TARGET:
            if duration is not None:
                lease_s = duration + LEASE_MARGIN_S
            elif renewed:
                # Renewed by heartbeats: the fault lasts as long as the method, and ends
                # within LAPSE_S of the run's death. The ceiling is only a backstop.
                lease_s = MAX_LEASE_S
            else:
                lease_s = self.default_lease_s + LEASE_MARGIN_S
        record = driver.prepare(self.ctx, op, with_defaults(op, args), target, lease_s)
        now = time.time()
        record = _stamp(record, run_id=self.ctx.run_id, lease_s=lease_s, now=now)
        record = msgspec.structs.replace(record, keys=tuple(sorted(set(driver.identities(record)))))
        if renewed and not self.ctx.dry:
            path = lease.beat_path(self.ctx.state_dir, record.fault_id)
            lease.beat(path)  # the first heartbeat, before the lease is armed
            record = msgspec.structs.replace(record, heartbeat=str(path))
        if self.ledger is not None:
            # Locks and the open-ledger check key on what the fault resolved to.
            self.ledger.claim(record)
            self.ledger.open_entry(record)  # durable before the target changes
        fault = ActiveFault(
            record=record,
            activity=activity,
            lease=op.lease,
            injected_at=now,
            revert_at=None if duration is None else now + duration,
        )
        with self._lock:
            self._faults.append(fault)
        if record.heartbeat:
            self._start_heartbeats()
        try:
            record = driver.inject(self.ctx, record)
        except DriverError as exc:
            if exc.not_applied:
                self._not_applied(fault, str(exc))
            else:
                self.revert_one(fault)  # half-applied faults are reverted like any other
            raise
        except Exception:
            # Half-applied faults are reverted like any other.
            self.revert_one(fault)
            raise
        fault.record = record
        if self.ledger is not None:
            self.ledger.update_entry(record)
        self.bus.emit(
            ev.FaultInjected(
                run_id=self.ctx.run_id,
                fault_id=record.fault_id,
                driver=record.driver,
                operation=record.operation,
                target=record.target,
                lease_s=lease_s,
                record=record.to_dict(),
                picked=_picked(record.data),
            )
        )
        return fault

    # --- revert --------------------------------------------------------------------------

    def active(self) -> list[ActiveFault]:
        """Faults not yet settled: held, or with a revert or clean check still under way
        (on the guard's thread, or a dispatched revert's). ``revert_all`` waits for those,
        so the run never judges a fault whose check has not come back."""
        with self._lock:
            return [f for f in self._faults if f.clean is None and f.error is None]

    def all(self) -> list[ActiveFault]:
        with self._lock:
            return list(self._faults)

    def next_due(self) -> float | None:
        """When the next held fault's duration ends (started reverts excluded)."""
        times = [
            f.revert_at
            for f in self.active()
            if f.revert_at is not None and not f.reverting and f.reverted is None
        ]
        return min(times) if times else None

    def dispatch_due(self, now: float) -> None:
        """Start the revert of every fault whose duration has ended, each on its own
        thread: the caller (the main thread, between or during activities) never blocks
        on a revert, so a signal always reaches it — and a revert is never mistaken for
        the interruption. ``revert_all`` waits for dispatched reverts (per-fault lock)."""
        with self._lock:
            due = [
                f
                for f in self._faults
                if f.reverted is None and not f.reverting and f.revert_at is not None and f.revert_at <= now
            ]
            for f in due:
                f.reverting = True
        for f in due:
            threading.Thread(target=self.revert_one, args=(f,), name=f"revert:{f.label}", daemon=True).start()

    def revert_one(self, fault: ActiveFault) -> None:
        """Revert and verify one fault. Idempotent; never raises."""
        with fault.lock:
            if fault.reverted is not None:
                return
            # From here on a target that says the fault is gone may be telling of this
            # revert: the heartbeat no longer reports it (``_renew_remote``).
            fault.reverting = True
            self._notice_lapse(fault, reverting=True)  # before our revert: was it still on?
            driver = self.registry.get(fault.record.driver)
            t0 = time.monotonic()
            try:
                fault.reverted = driver.revert(self.ctx, fault.record)
            except Exception as exc:
                fault.error = f"revert failed: {exc}"
                fault.reverted = RevertResult(reverted=False, detail=fault.error)
            duration = time.monotonic() - t0
            self._notice_lapse(fault)  # the revert may have found a lease had ended it
            fault.reverted_at = time.time()
            self.bus.emit(
                ev.FaultReverted(
                    run_id=self.ctx.run_id,
                    fault_id=fault.record.fault_id,
                    driver=fault.record.driver,
                    operation=fault.record.operation,
                    ok=fault.reverted.reverted,
                    detail=fault.reverted.detail,
                    duration_s=duration,
                    time_to_recover_s=fault.reverted.time_to_recover_s,
                )
            )
            try:
                fault.clean = driver.check_clean(self.ctx, fault.record)
            except Exception as exc:
                fault.clean = CleanReport(clean=False, residue=(f"check_clean failed: {exc}",))
            self.bus.emit(
                ev.CleanChecked(
                    run_id=self.ctx.run_id,
                    fault_id=fault.record.fault_id,
                    driver=fault.record.driver,
                    clean=fault.clean.clean,
                    residue=fault.clean.residue,
                )
            )
            fault.clean_at = time.time()
            if fault.clean.clean and fault.record.heartbeat:
                lease.retire(fault.record.heartbeat)  # only after a verified revert
            if self.ledger is not None and fault.clean.clean:
                self.ledger.close_entry(fault.record.fault_id, fault.clean)

    def _not_applied(self, fault: ActiveFault, reason: str) -> None:
        """The driver is certain nothing reached the target: close the entry as "not
        applied" with the reason (never NOT-CLEAN, never left open for recover)."""
        with fault.lock:
            detail = f"not applied: {reason}"
            fault.reverted = RevertResult(reverted=True, detail=detail)
            fault.clean = CleanReport(clean=True, detail=detail)
            fault.reverted_at = fault.clean_at = time.time()
            if fault.record.heartbeat:
                lease.retire(fault.record.heartbeat)
            self.bus.emit(
                ev.FaultNotApplied(
                    run_id=self.ctx.run_id,
                    fault_id=fault.record.fault_id,
                    driver=fault.record.driver,
                    operation=fault.record.operation,
                    target=fault.record.target,
                    reason=reason,
                )
            )
            if self.ledger is not None:
                self.ledger.close_entry(fault.record.fault_id, fault.clean, detail="not applied")

    def revert_all(self) -> float:
        """Revert every active fault at once, each under its own deadline. Returns seconds."""
        pending = self.active()
        t0 = time.monotonic()
        if not pending:
            return 0.0
        from concurrent.futures import ThreadPoolExecutor, wait  # only when there is a fault

        pool = ThreadPoolExecutor(max_workers=min(16, len(pending)), thread_name_prefix="revert")
        try:
            futures = {pool.submit(self.revert_one, f): f for f in pending}
            _, not_done = wait(futures, timeout=self.revert_timeout_s)
            for fut in not_done:
                fault = futures[fut]
                fault.error = f"revert did not finish within {self.revert_timeout_s:g}s"
        finally:
            pool.shutdown(wait=False, cancel_futures=False)
        return time.monotonic() - t0

    def first_injected_at(self) -> float | None:
        """When the oldest still-active fault went in (the guard watches from then)."""
        times = [f.injected_at for f in self.active()]
        return min(times) if times else None

    def during_window(self) -> tuple[float, float] | None:
        """From the first injection to the last revert."""
        faults = self.all()
        if not faults:
            return None
        start = min(f.injected_at for f in faults)
        end = max((f.reverted_at or time.time()) for f in faults)
        return start, end

    def pending_labels(self) -> list[str]:
        return [f.label for f in self._faults if f.clean is None]

    def not_clean(self) -> list[ActiveFault]:
        return [f for f in self.all() if f.clean is None or not f.clean.clean]

    # --- heartbeats ------------------------------------------------------------------------

    def _renewed(self) -> list[ActiveFault]:
        """Faults whose lease the run still renews: every one not yet verified clean."""
        with self._lock:
            return [f for f in self._faults if f.record.heartbeat and not (f.clean and f.clean.clean)]

    def _start_heartbeats(self) -> None:
        with self._lock:
            if self._beater is not None or self._stop_beats.is_set():
                return
            self._beater = threading.Thread(target=self._heartbeats, name="lease-heartbeat", daemon=True)
        self._beater.start()

    def _heartbeats(self) -> None:
        """Renew every lease each HEARTBEAT_S, and notice a lease that ended a fault early.

        Every heartbeat file first, then each driver's own renewal on a thread of its own:
        a slow or hung target (its renewal bounded by the driver's timeout) never delays
        another fault's heartbeat, so one target cannot make other faults' leases lapse."""
        while not self._stop_beats.is_set():
            faults = self._renewed()
            for fault in faults:
                try:
                    lease.beat(fault.record.heartbeat)
                except OSError:
                    pass  # a missed beat: the next one, or the lease, takes over
            for fault in faults:
                self._renew_in_background(fault)
                self._notice_lapse(fault)
            self._stop_beats.wait(lease.HEARTBEAT_S)

    def _renew_in_background(self, fault: ActiveFault) -> None:
        try:
            driver = self.registry.get(fault.record.driver)
        except DriverError:
            return
        if type(driver).renew is Driver.renew:
            return  # no lease kept on a remote target: the heartbeat file is the lease
        if not fault.renewing.acquire(blocking=False):
            return  # the last renewal is still waiting on its target: this beat is missed

        def renew() -> None:
            try:
                self._renew_remote(fault)
            finally:
                fault.renewing.release()

        threading.Thread(target=renew, name=f"lease-renew:{fault.label}", daemon=True).start()

    def _renew_remote(self, fault: ActiveFault) -> None:
        """The driver's own heartbeat, for a lease kept on a remote target."""
        try:
            reason = self.registry.get(fault.record.driver).renew(self.ctx, fault.record)
        except Exception as exc:  # a driver bug must not stop the other faults' heartbeats
            self.ctx.log(f"renewing {fault.label}: {exc}")
            return
        if reason is None or fault.lapsed is not None:
            return
        # Once the revert began, "gone" may be the revert's own doing: the revert asks the
        # target itself (a driver reports a lease that ended the fault first). And a
        # renewal that outlived the heartbeats (a slow target) no longer speaks: the run
        # has judged its faults.
        if not fault.reverting and not self._stop_beats.is_set():
            self._lapsed(fault, reason)

    def _notice_lapse(self, fault: ActiveFault, *, reverting: bool = False) -> None:
        """Record (once) that the fault's lease ended it before the run did: the watchdog
        said so, or — for any lease, the proxy's and SSH hosts' too — the run is only now
        reverting a fault whose lease had already expired."""
        if fault.lapsed is not None:
            return
        path = lease.lapse_path(self.ctx.state_dir, fault.record.fault_id)
        expires = fault.record.lease_expires_at
        try:
            raw = json.loads(path.read_text("utf-8"))
            reason = str(raw.get("reason") or "its lease ended")
        except (OSError, ValueError):
            if not (reverting and expires is not None and time.time() >= expires):
                return
            reason = f"its lease expired {time.time() - expires:.1f}s before the run reverted it"
        self._lapsed(fault, reason)

    def _lapsed(self, fault: ActiveFault, reason: str) -> None:
        """Record the lapse and emit its event, once: the heartbeat thread and a remote
        renewal's thread may both notice it at the same moment."""
        with self._lapse_lock:
            if fault.lapsed is not None:
                return
            fault.lapsed = reason
        self.bus.emit(
            ev.LeaseLapsed(
                run_id=self.ctx.run_id,
                fault_id=fault.record.fault_id,
                driver=fault.record.driver,
                operation=fault.record.operation,
                target=fault.record.target,
                reason=reason,
            )
        )

    def lapsed(self) -> list[ActiveFault]:
        """Faults their lease ended before the run reverted them (checked once more now)."""
        for fault in self.all():
            if fault.record.heartbeat or fault.record.lease_expires_at is not None:
                self._notice_lapse(fault)
        return [f for f in self.all() if f.lapsed is not None]

    def stop_heartbeats(self) -> None:
        """The run is over: stop renewing. A fault not verified clean is left to its lease."""
        self._stop_beats.set()
        beater = self._beater
        if beater is not None and beater is not threading.current_thread():
            beater.join(timeout=5.0)

    def __enter__(self) -> FaultManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.revert_all()
        self.stop_heartbeats()


def _stamp(record: RevertRecord, *, run_id: str, lease_s: float | None, now: float) -> RevertRecord:
    return msgspec.structs.replace(
        record,
        run_id=run_id,
        lease_s=lease_s,
        lease_expires_at=None if lease_s is None else now + lease_s,
    )


def _picked(data: Mapping[str, Any]) -> tuple[str, ...]:
    """What a sampled selection picked (``drivers.selection``, imported here on first use:
    it is off a run's start-up path)."""
    from chaoslab.drivers.selection import picked_targets

    return picked_targets(data)
