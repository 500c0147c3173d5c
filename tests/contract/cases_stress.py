"""Contract cases of the stress driver, observed through /proc, not through the driver.

A stressor is "visible" when processes of its session (the keeper's sid, recorded at
inject) are burning CPU, holding the memory, or its fill file occupies the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target


@contextlib.contextmanager
def _host(tmp_path: Path) -> Iterator[Target]:
    # The disk case fills this test's own tmp_path, never the shared /tmp.
    yield Target(selector=None, handle=tmp_path, args={"path": str(tmp_path)})


@contextlib.contextmanager
def _hostonly(tmp_path: Path) -> Iterator[Target]:
    yield Target(selector=None)


def _session(record: RevertRecord) -> list[psutil.Process]:
    sid = record.data.get("sid")
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (OSError, psutil.Error):
            continue
    return out


def _burning(target: Target, record: RevertRecord) -> bool:
    procs = _session(record)
    if not procs:
        return False

    def cpu() -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += sum(p.cpu_times()[:2])
        return total

    before = cpu()
    time.sleep(0.3)  # the measurement window itself: a CPU rate needs an interval
    return cpu() - before > 0.03  # >10% of a core over 0.3 s


def _holding(target: Target, record: RevertRecord) -> bool:
    rss = 0
    for p in _session(record):
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
    return rss >= 0.8 * int(record.data["mib"]) * 1024 * 1024


def _filled(target: Target, record: RevertRecord) -> bool:
    allocated = 0
    for path in Path(target.handle).glob(f"chaoslab-fill-{record.fault_id}/*"):
        with contextlib.suppress(OSError):
            allocated += path.stat().st_blocks * 512
    return allocated >= 0.9 * int(record.data["fill_bytes"])


def _stress_ng() -> tuple[bool, str]:
    return shutil.which("stress-ng") is not None, "stress-ng (Debian: apt-get install stress-ng)"


CASES = [
    FaultCase(
        id="stress.cpu.builtin",
        driver="stress",
        op="cpu",
        args={"workers": 1, "load": 60, "backend": "builtin"},
        make_target=_hostonly,
        observe=_burning,
    ),
    FaultCase(
        id="stress.cpu.stress-ng",
        driver="stress",
        op="cpu",
        args={"workers": 1, "load": 60, "backend": "stress-ng"},
        make_target=_hostonly,
        observe=_burning,
        available=_stress_ng,
    ),
    FaultCase(
        id="stress.memory.builtin",
        driver="stress",
        op="memory",
        args={"mib": 64, "backend": "builtin"},
        make_target=_hostonly,
        observe=_holding,
    ),
    FaultCase(
        id="stress.memory.stress-ng",
        driver="stress",
        op="memory",
        args={"mib": 64, "backend": "stress-ng"},
        make_target=_hostonly,
        observe=_holding,
        available=_stress_ng,
    ),
    FaultCase(
        id="stress.disk",
        driver="stress",
        op="disk",
        args={"mib": 32},
        make_target=_host,
        observe=_filled,
    ),
]
