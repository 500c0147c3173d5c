"""The run's heartbeat (``engine.faults``): a target whose renewal hangs never delays the
other faults' heartbeats, and its renewals never pile up.

``Beats`` is a tiny driver with two leased faults: ``hang``, whose remote renewal
(``Driver.renew``) takes longer than the whole lease window (a hung proxy server or SSH
host), and ``local``, whose lease is its heartbeat file alone. The file is watched from
a thread of its own while a real run holds both faults.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chaoslab.drivers import lease
from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    RevertRecord,
    RevertResult,
)
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.safety.ledger import Ledger
from chaoslab.verdict import Verdict
from tests.conftest import poll
from tests.statepaths import env_state

HANG_S = 3.0  # one renewal of `hang`: most of a lease window


class Beats(Driver):
    name = "beats"
    summary = "two leased faults, one on a target that hangs"
    heartbeat_ops = frozenset({"hang", "local"})

    def __init__(self) -> None:
        self.heartbeat: dict[str, str] = {}
        self.renewing = 0
        self.most_at_once = 0
        self._count = threading.Lock()

    def operations(self) -> Sequence[Operation]:
        return tuple(Operation(name=n, kind=Kind.FAULT, summary=n) for n in ("hang", "local"))

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        return RevertRecord(driver=self.name, operation=op.name, target=str(target), lease_s=lease_s)

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        self.heartbeat[record.operation] = record.heartbeat
        return record

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        return RevertResult(reverted=True)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        return CleanReport(clean=True)

    def renew(self, ctx: DriverContext, record: RevertRecord) -> str | None:
        if record.operation == "hang":
            with self._count:
                self.renewing += 1
                self.most_at_once = max(self.most_at_once, self.renewing)
            time.sleep(HANG_S)
            with self._count:
                self.renewing -= 1
        return None


def test_a_hung_target_never_delays_the_other_faults_heartbeats(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        textwrap.dedent(
            """
            title: t
            description: d
            method:
              - {do: beats.hang, target: a}
              - {do: beats.local, target: b}
              - {type: action, name: hold, provider: {type: process, path: sleep, arguments: "5"}}
            """
        )
    )
    driver = Beats()
    reg = DriverRegistry(extra={"beats": driver}, load_installed=False)
    exp = load_experiment(str(f), registry=reg)
    options = RunOptions(run_dir=tmp_path / "run", handle_signals=False, state=env_state())
    runner = Runner(exp, registry=reg, options=options, ledger=Ledger(tmp_path / "ledger"))
    ages: list[float] = []
    done = threading.Event()

    def watch() -> None:
        path = poll(lambda: driver.heartbeat.get("local"), timeout_s=30)
        assert path
        while not done.is_set():
            try:
                ages.append(time.time() - os.stat(path).st_mtime)
            except FileNotFoundError:
                break  # retired: the fault was reverted and verified clean
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = runner.run()
    finally:
        done.set()
        watcher.join(timeout=10)
    assert result.verdict is Verdict.PASSED, result
    assert len(ages) > 40, "the heartbeat file was not watched through the method"
    # Renewed every HEARTBEAT_S although `hang`'s renewal takes HANG_S (before, each beat
    # of `local` waited for it: ages up to HANG_S + HEARTBEAT_S).
    assert max(ages) < lease.HEARTBEAT_S + 0.9, max(ages)
    assert driver.most_at_once == 1, "renewals of one fault piled up on its hung target"


def test_a_lapse_noticed_by_two_threads_at_once_is_one_event(tmp_path: Path) -> None:
    """The heartbeat loop (the watchdog's lapse file) and a remote renewal's thread (the
    target said the fault is gone) may notice one lapse together: one event, one reason."""
    from chaoslab.engine import events as ev
    from chaoslab.engine.faults import ActiveFault, FaultManager
    from chaoslab.model.experiment import Activity, ActivityKind

    bus = ev.EventBus()
    seen: list[ev.Event] = []
    bus.subscribe(seen.append)
    ctx = DriverContext(run_id="r", state_dir=tmp_path, lab_dir=tmp_path / "lab")
    manager = FaultManager(
        registry=DriverRegistry(load_installed=False), ctx=ctx, bus=bus, ledger=None, default_lease_s=60
    )
    activity = Activity(name="f", type="action", kind=ActivityKind.DRIVER, ctk={}, path="method[0]")
    for _ in range(50):  # the window is a few instructions wide: try it many times
        fault = ActiveFault(
            record=RevertRecord(driver="d", operation="o", target="t"),
            activity=activity,
            lease=LeaseKind.TARGET,
            injected_at=time.time(),
            revert_at=None,
        )
        start = threading.Barrier(8)

        def notice(fault: ActiveFault = fault, start: threading.Barrier = start) -> None:
            start.wait()
            manager._lapsed(fault, f"seen by {threading.current_thread().name}")

        threads = [threading.Thread(target=notice) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events = [e for e in seen if isinstance(e, ev.LeaseLapsed) and e.fault_id == fault.record.fault_id]
        assert len(events) == 1, events
        assert fault.lapsed == events[0].reason
