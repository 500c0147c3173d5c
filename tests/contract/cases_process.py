"""Contract cases of the process driver: kill (heals via a real supervisor), suspend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil

from chaoslab import paths
from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target
from tests.contract.targets import lab_replica, sleepers, unique_marker
from tests.statepaths import env_state


@contextlib.contextmanager
def _lab_target(tmp_path: Path) -> Iterator[Target]:
    # The driver resolves lab:NAME through chaoslab.paths.lab_dir() (CHAOSLAB_HOME).
    with lab_replica(paths.lab_dir(env_state().home)) as replica:
        yield Target(selector=f"lab:{replica.name}", handle=replica)


def _replica_down(target: Target, record: RevertRecord) -> bool:
    return not target.handle.live()


@contextlib.contextmanager
def _sleeper_target(tmp_path: Path) -> Iterator[Target]:
    marker = unique_marker()
    with sleepers(marker) as procs:
        yield Target(selector=f"pattern:{marker}", handle=procs)


def _stopped(target: Target, record: RevertRecord) -> bool:
    for proc in target.handle:
        try:
            if psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


CASES = [
    FaultCase(
        id="process.kill",
        driver="process",
        op="kill",
        args={"signal": "SIGKILL", "timeout": "10s"},
        make_target=_lab_target,
        observe=_replica_down,
        lease_s=None,
        heal_s=5.0,
    ),
    FaultCase(
        id="process.suspend",
        driver="process",
        op="suspend",
        make_target=_sleeper_target,
        observe=_stopped,
    ),
]
