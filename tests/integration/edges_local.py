"""Edge-column hooks of the local drivers (process, stress, net): see matrix_edges.py."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import Target
from tests.contract.targets import sleepers, unique_marker
from tests.integration.matrix_edges import EdgeHooks, NotApplicable, Variant

LOCAL = NotApplicable(
    "a local fault reaches its target through this host's kernel: there is no connection to lose"
)


@contextlib.contextmanager
def _restopping(target: Target, record: RevertRecord) -> Iterator[None]:
    """A co-tenant (a debugger, another tool) that stops the processes again as soon as
    anything continues them: the revert's SIGCONT cannot hold."""
    pids = [proc.pid for proc in target.handle]
    done = threading.Event()

    def restop() -> None:
        while not done.wait(0.005):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    thread = threading.Thread(target=restop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def _by_pid(target: Target, workdir: Path) -> Iterator[Variant]:
    (proc,) = target.handle
    yield Variant(selector=f"pid:{proc.pid}")


@contextlib.contextmanager
def _pidfile(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``pidfile:pids/sleeper.pid`` relative to the run's directory; the same relative
    name in ``elsewhere`` names a decoy that recover must leave alone."""
    (proc,) = target.handle
    (here / "pids").mkdir()
    (here / "pids" / "sleeper.pid").write_text(f"{proc.pid}\n")
    with sleepers(unique_marker("decoy")) as (decoy,):
        (elsewhere / "pids").mkdir()
        (elsewhere / "pids" / "sleeper.pid").write_text(f"{decoy.pid}\n")
        yield Variant(selector="pidfile:pids/sleeper.pid", relative=("pids/sleeper.pid",))
        assert psutil.Process(decoy.pid).status() != psutil.STATUS_STOPPED, "recover touched the decoy"


HOOKS: dict[str, EdgeHooks] = {
    "process.suspend": EdgeHooks(
        break_revert=_restopping,
        unreachable=LOCAL,
        alias=_by_pid,
        relative=_pidfile,
    ),
}
