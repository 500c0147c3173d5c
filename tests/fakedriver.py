"""A first-class fake driver for engine tests: its fault is a marker file on disk.

The target is a directory; ``touch`` creates ``<dir>/<fault_id>.fault``; revert removes
it; check_clean looks for it. Knobs in the arguments make it misbehave on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import (
    CleanReport,
    Driver,
    DriverContext,
    Kind,
    Operation,
    Param,
    RevertRecord,
    RevertResult,
)
from chaoslab.errors import DriverError, TargetNotFound


class FakeDriver(Driver):
    name = "fake"
    summary = "marker-file faults for tests"

    def __init__(self) -> None:
        self.reverts = 0

    def operations(self) -> Sequence[Operation]:
        return (
            Operation(
                name="touch",
                kind=Kind.FAULT,
                summary="create a marker file",
                params=(
                    Param(name="fail_inject", type=bool, help="raise during inject", default=False),
                    Param(name="stubborn", type=bool, help="revert leaves the file", default=False),
                    Param(name="slow_revert", type=(int, float), help="seconds revert takes", default=0),
                ),
            ),
            Operation(name="count", kind=Kind.PROBE, summary="number of marker files"),
        )

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        return len(list(Path(str(target)).glob("*.fault")))

    def prepare(
        self,
        ctx: DriverContext,
        op: Operation,
        args: Mapping[str, Any],
        target: str | None,
        lease_s: float | None,
    ) -> RevertRecord:
        if not target or not Path(target).is_dir():
            raise TargetNotFound(f"no directory {target!r}", driver=self.name, target=str(target))
        return RevertRecord(driver=self.name, operation=op.name, target=target, args=dict(args))

    def inject(self, ctx: DriverContext, record: RevertRecord) -> RevertRecord:
        marker = Path(record.target) / f"{record.fault_id}.fault"
        marker.write_text(record.to_json())
        if record.args.get("fail_inject"):
            raise DriverError("inject failed on purpose", driver=self.name, target=record.target)
        return record.with_data(marker=str(marker))

    def revert(self, ctx: DriverContext, record: RevertRecord) -> RevertResult:
        self.reverts += 1
        time.sleep(float(record.args.get("slow_revert", 0)))
        if record.args.get("stubborn"):
            return RevertResult(reverted=True, detail="pretended")
        (Path(record.target) / f"{record.fault_id}.fault").unlink(missing_ok=True)
        return RevertResult(reverted=True)

    def check_clean(self, ctx: DriverContext, record: RevertRecord) -> CleanReport:
        marker = Path(record.target) / f"{record.fault_id}.fault"
        if marker.exists():
            return CleanReport(clean=False, residue=(f"{marker} still exists",))
        return CleanReport(clean=True)
