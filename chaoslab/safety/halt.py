"""``halt``: the big red button. Stop every run on this machine, revert, block new runs.

Two files under chaoslab's home (every function takes it: ``StatePaths.home``):

- ``HALT``: while it exists no run may start (``check_not_halted``, ``register_run``).
  A halt file that cannot be read counts as a halt: the button fails safe.
- ``active-runs/<run id>.<pid>.json``: one per live run, written by ``register_run``.

``halt()`` writes ``HALT`` first, then lists the registered runs. ``register_run`` writes
its registration first, then looks for ``HALT``. Each side writes before it reads, so a
run starting during a halt either is seen (and signalled) or sees the halt (and refuses
to start); it cannot slip between.

Each live registered run gets SIGUSR1 ("abort: halted"; the engine turns it into an
abort that reverts every active fault). The signal goes through a pidfd, opened before
the owner's identity is re-checked, so a pid reused in between can never receive it
(SIGUSR1's default action kills an unsuspecting process). Halt then waits up to
``grace_s`` for the signalled runs to close their ledger entries, and reverts what is
still open itself with ``recover`` (forcing the signalled runs' entries, and any entry
of a dead run).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from chaoslab import paths
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.errors import ChaoslabError, LedgerError
from chaoslab.safety.durable import fsync_dir, write_json_atomic
from chaoslab.safety.owner import Life, Owner, iso

if TYPE_CHECKING:
    from chaoslab.safety.ledger import Ledger
    from chaoslab.safety.recover import RecoverReport

HALT_FILE = "HALT"
ACTIVE_RUNS_DIR = "active-runs"
_POLL_S = 0.05


class HaltState(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    reason: str
    since: float
    by: str  # who pressed the button: "pid N on host (user)"

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"halted since {iso(self.since)} by {self.by}{why}"


class Halted(ChaoslabError):
    """A halt is in force: no run may start until ``chaoslab halt --release``."""

    def __init__(self, state: HaltState) -> None:
        self.state = state
        super().__init__(
            f"chaoslab is {state.describe()} ({state.path}); no run may start until `chaoslab halt --release`"
        )


class RunRegistration(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    owner: Owner
    path: Path


class RunAction(msgspec.Struct, frozen=True, kw_only=True):
    """What halt did to one registered run."""

    run_id: str
    pid: int
    action: str  # "signalled", "stale", "remote", "self", "failed"
    detail: str = ""


class HaltReport(msgspec.Struct, frozen=True, kw_only=True):
    state: HaltState
    already_halted: bool
    runs: tuple[RunAction, ...]
    reverted_in_grace: tuple[str, ...]  # signalled runs that closed their entries in time
    forced: tuple[str, ...]  # signalled runs whose entries halt had to revert itself
    recovery: RecoverReport
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.recovery.ok and not any(r.action == "failed" for r in self.runs)

    def lines(self) -> list[str]:
        out = [("still " if self.already_halted else "") + self.state.describe()]
        if not self.runs:
            out.append("no registered runs on this machine")
        for r in self.runs:
            out.append(f"run {r.run_id} (pid {r.pid}): {r.action}{': ' + r.detail if r.detail else ''}")
        if self.reverted_in_grace:
            out.append("reverted their faults in time: " + ", ".join(self.reverted_in_grace))
        if self.forced:
            out.append("did not revert in time, reverted by halt: " + ", ".join(self.forced))
        out += self.recovery.lines()
        out.append(f"done in {self.elapsed_s:.2f}s; new runs are blocked until `chaoslab halt --release`")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "halted_since": self.state.since,
            "reason": self.state.reason,
            "already_halted": self.already_halted,
            "runs": [msgspec.structs.asdict(r) for r in self.runs],
            "reverted_in_grace": list(self.reverted_in_grace),
            "forced": list(self.forced),
            "recovery": self.recovery.to_dict(),
            "elapsed_s": self.elapsed_s,
            "ok": self.ok,
        }


def halt_path(home: Path) -> Path:
    return home / HALT_FILE


def active_runs_dir(home: Path) -> Path:
    return home / ACTIVE_RUNS_DIR


def is_halted(home: Path) -> HaltState | None:
    """The halt in force, or None. An unreadable halt file is a halt (fail safe)."""
    path = halt_path(home)
    try:
        raw = json.loads(path.read_text("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return HaltState(
            path=path, reason=str(raw.get("reason", "")), since=float(raw["since"]), by=str(raw["by"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        since = _mtime(path)
        return HaltState(path=path, reason=f"unreadable halt file ({exc})", since=since, by="unknown")


def check_not_halted(home: Path) -> None:
    """Raise ``Halted`` if a halt is in force."""
    state = is_halted(home)
    if state is not None:
        raise Halted(state)


@contextmanager
def register_run(run_id: str, *, home: Path) -> Iterator[RunRegistration]:
    """Register this process as running ``run_id`` for the ``with`` body.

    Raises ``Halted`` (and leaves no registration) if a halt is in force. While
    registered, ``halt()`` will send this process SIGUSR1.
    """
    directory = active_runs_dir(home)
    owner = Owner.current(run_id)
    path = directory / f"{quote(run_id, safe='')}.{owner.pid}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, owner.to_dict(), exclusive=True)
    except FileExistsError as exc:
        raise LedgerError(f"run {run_id} is already registered in {path}") from exc
    except OSError as exc:
        raise LedgerError(f"cannot register run {run_id} in {directory}: {exc.strerror}") from exc
    try:
        # Registered first, checked second: see the module docstring.
        check_not_halted(home)
        yield RunRegistration(run_id=run_id, owner=owner, path=path)
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def active_runs(home: Path) -> list[RunRegistration]:
    """Registered runs (live or stale); unreadable registrations are skipped."""
    directory = active_runs_dir(home)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LedgerError(f"cannot read the runs registry {directory}: {exc.strerror}") from exc
    out: list[RunRegistration] = []
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        path = directory / name
        try:
            owner = Owner.from_dict(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.append(RunRegistration(run_id=owner.run_id, owner=owner, path=path))
    return out


def halt(
    registry: DriverRegistry | None = None,
    *,
    reason: str = "",
    grace_s: float = 10.0,
    home: Path,
    ledger: Ledger | None = None,
    by: str | None = None,
) -> HaltReport:
    """Block new runs, signal every live run to revert, and revert what they leave.

    ``by`` says who pressed the button (default: this process, host and user); the
    control room passes the authenticated user and their address.
    Idempotent: halting while halted keeps the original halt and signals again.
    """
    started = time.monotonic()
    from chaoslab.safety.ledger import Ledger

    ledger = ledger or Ledger(paths.ledger_dir(home))
    state, already = _press(home, reason, by)
    actions: list[RunAction] = []
    signalled: list[RunRegistration] = []
    for reg in active_runs(home):
        action = _stop(reg)
        actions.append(action)
        if action.action == "signalled":
            signalled.append(reg)
    pending = _wait_for_runs(ledger, signalled, grace_s)
    in_grace = tuple(sorted({r.run_id for r in signalled} - pending))
    from chaoslab.safety.recover import recover  # only a halt needs it; runs import this module

    recovery = recover(
        registry or DriverRegistry(), force_run_ids=pending, ledger=ledger, recover_run_id="halt", home=home
    )
    return HaltReport(
        state=state,
        already_halted=already,
        runs=tuple(actions),
        reverted_in_grace=in_grace,
        forced=tuple(sorted(pending)),
        recovery=recovery,
        elapsed_s=time.monotonic() - started,
    )


def release(home: Path) -> HaltState | None:
    """Lift the halt; returns the halt that was in force, or None if there was none."""
    state = is_halted(home)
    path = halt_path(home)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"cannot remove the halt file {path}: {exc.strerror}") from exc
    fsync_dir(path.parent)
    return state


def _press(home: Path, reason: str, by: str | None = None) -> tuple[HaltState, bool]:
    path = halt_path(home)
    existing = is_halted(home)
    if existing is not None:
        return existing, True
    user = os.environ.get("USER") or str(os.getuid())
    raw = {
        "reason": reason,
        "since": time.time(),
        "by": (f"{by}, " if by else "") + f"pid {os.getpid()} on {os.uname().nodename} ({user})",
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, raw, exclusive=True)
    except FileExistsError:
        pass  # another halt won the race: its halt is ours
    except OSError as exc:
        raise LedgerError(f"cannot write the halt file {path}: {exc.strerror}") from exc
    state = is_halted(home)
    assert state is not None  # just written, and only release() removes it
    return state, False


def _stop(reg: RunRegistration) -> RunAction:
    owner = reg.owner
    try:
        # Pin the process first, then check it is still the registered one.
        pidfd = os.pidfd_open(owner.pid)
    except ProcessLookupError:
        pidfd = None
    except OSError as exc:
        return RunAction(run_id=reg.run_id, pid=owner.pid, action="failed", detail=f"pidfd_open: {exc}")
    try:
        life = owner.liveness()
        if life.life is Life.UNKNOWN:
            return RunAction(run_id=reg.run_id, pid=owner.pid, action="remote", detail=life.reason)
        if owner.pid == os.getpid() and life.life is Life.ALIVE:
            return RunAction(run_id=reg.run_id, pid=owner.pid, action="self", detail="not signalling myself")
        if pidfd is None or life.life is Life.DEAD:
            _unlink_quietly(reg.path)
            why = life.reason if life.dead else f"pid {owner.pid} is gone"
            return RunAction(
                run_id=reg.run_id, pid=owner.pid, action="stale", detail=f"{why}; registration removed"
            )
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
        except ProcessLookupError:
            _unlink_quietly(reg.path)
            return RunAction(run_id=reg.run_id, pid=owner.pid, action="stale", detail="exited just now")
        except OSError as exc:
            return RunAction(run_id=reg.run_id, pid=owner.pid, action="failed", detail=f"signal: {exc}")
        return RunAction(run_id=reg.run_id, pid=owner.pid, action="signalled", detail="SIGUSR1 sent")
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _wait_for_runs(ledger: Ledger, runs: list[RunRegistration], grace_s: float) -> set[str]:
    """Wait until no signalled run has an open entry; return those that still have one.

    A run that dies with entries open stops the wait for itself: nothing will close
    them but recover.
    """
    deadline = time.monotonic() + grace_s
    while True:
        try:
            open_runs = {e.record.run_id for e in ledger.scan().entries}
        except LedgerError:
            # Cannot see the ledger: force every signalled run; recover reports the error.
            return {r.run_id for r in runs}
        left = {r.run_id for r in runs if r.run_id in open_runs}
        alive = {r.run_id for r in runs if r.run_id in left and r.owner.liveness().life is Life.ALIVE}
        if not alive or time.monotonic() >= deadline:
            return left
        time.sleep(_POLL_S)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
