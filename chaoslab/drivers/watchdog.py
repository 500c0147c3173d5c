"""The lease watchdog: a detached process that reverts one fault when its lease ends.

Usage (drivers call ``spawn_watchdog``; this is what it runs)::

    python -m chaoslab.drivers.watchdog --fault-id ID --state-dir DIR  < record.json

The record travels on stdin, not argv, so a ``pattern:`` target never matches the
watchdog's own command line. The launched process forks; the child calls ``setsid`` (own
session and process group, no controlling terminal), the parent prints the child's
identity as one JSON line and exits. So the watchdog is not the runner's child: the
runner's death (even SIGKILL, even of its whole process group) does not reach it, and the
runner never has to reap it.

The watchdog waits until the lease ends — ``record.lease_expires_at``, or as soon as the
runner stops renewing ``record.heartbeat`` (``chaoslab.drivers.lease``) — then loads the record's driver
through the entry-point registry and calls ``revert(record)`` — the same code path as any
revert, using only the record. If the fault is not verified clean after
that revert, it tries again (``RETRY_S``, backing off, for ``RETRY_FOR_S``): a lease is
kept until its fault is gone, never dropped after one failed try. It then writes the
outcome and a ``check_clean`` report to ``<state dir>/watchdogs/<fault_id>.json``.
SIGTERM (sent by a revert that got there first) ends it quietly. Invariant: the
watchdog never signals itself; drivers find it by ``--fault-id`` in its argv and
``_proc.protected_pids`` shields it from faults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers._proc import WATCHDOG_MODULE, ProcRef
from chaoslab.drivers.base import (
    MAX_LEASE_S,
    Driver,
    DriverContext,
    Kind,
    Operation,
    RevertRecord,
    check_args,
    parse_duration,
    with_defaults,
)
from chaoslab.drivers.lease import POLL_S, lapse_path, lapse_reason
from chaoslab.errors import DriverError, InvalidInput, Problem

SPAWN_TIMEOUT_S = 15.0
DEFAULT_LEASE_S = 60.0  # used when the engine gives a leased fault no lease of its own
# An end that did not hold (the revert failed or left residue) is tried again: after
# RETRY_S, doubling up to RETRY_MAX_S, for RETRY_FOR_S in all. The lease is kept, not
# dropped after one try: once whatever blocked the revert is gone, the fault ends.
RETRY_S = 0.5
RETRY_MAX_S = 15.0
RETRY_FOR_S = 900.0


def start_lease(record: RevertRecord) -> RevertRecord:
    """The record with its lease counted from now (called as inject begins, so the lease
    covers the whole time the fault is on the target)."""
    lease = float(record.lease_s or check_lease(None))
    return msgspec.structs.replace(record, lease_expires_at=time.time() + lease)


def check_lease(lease_s: Any, *, default: float = DEFAULT_LEASE_S) -> float:
    """Validate a lease: positive, finite, at most 24 h. ``None`` gives ``default``.

    Accepts seconds or a duration string ("500ms", "10s", "2m").
    """
    if lease_s is None:
        return default
    try:
        seconds = parse_duration(lease_s)
    except ValueError as exc:
        raise InvalidInput([Problem(path="lease", message=str(exc))]) from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput([Problem(path="lease", message=f"lease must be positive: {lease_s!r}")])
    if seconds > MAX_LEASE_S:
        raise InvalidInput([Problem(path="lease", message=f"absurd lease {lease_s!r} (> 24h)")])
    return seconds


def validated(
    driver: Driver, op: Operation, args: Mapping[str, Any], target: str | None, kind: Kind
) -> dict[str, Any]:
    """Check that ``op`` is this driver's ``kind`` operation and ``args`` are valid.

    Returns the args with defaults filled in; raises InvalidInput listing every problem.
    Drivers call it first in ``prepare``/``probe`` so bad input never reaches a target.
    """
    own = driver.operation(op.name)
    if own is None or own.kind != kind:
        names = [o.name for o in driver.operations() if o.kind == kind]
        raise InvalidInput(
            [
                Problem(
                    path="operation",
                    message=f"{driver.name} has no {kind} operation {op.name!r}",
                    hint=f"{kind}s: {', '.join(names) or 'none'}",
                )
            ]
        )
    problems = check_args(own, args) + driver.validate(own, args, target)
    if problems:
        raise InvalidInput(problems)
    return with_defaults(own, args)


def spawn_watchdog(ctx: DriverContext, record: RevertRecord) -> ProcRef:
    """Start the detached watchdog for ``record``; return once it is armed.

    Raises DriverError if the record has no lease or the watchdog did not start.
    """
    if record.lease_expires_at is None:
        raise DriverError("a watchdog needs a record with lease_expires_at", driver=record.driver)
    env = {k: v for k, v in os.environ.items() if k != "CHAOSLAB_FAULT_ID"}
    argv = [
        sys.executable,
        "-m",
        WATCHDOG_MODULE,
        "--fault-id",
        record.fault_id,
        "--state-dir",
        str(ctx.state_dir),
        "--lab-dir",
        str(ctx.lab_dir),
    ]
    try:
        done = subprocess.run(
            argv,
            input=record.to_json(),
            capture_output=True,
            text=True,
            timeout=SPAWN_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"cannot start the lease watchdog: {exc}", driver=record.driver) from exc
    if done.returncode != 0:
        raise DriverError(
            f"the lease watchdog failed to start ({_exit_status(done.returncode)}): "
            f"{done.stderr.strip()[-500:] or 'nothing on stderr'}",
            driver=record.driver,
        )
    return ProcRef.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


def outcome_path(state_dir: Path, fault_id: str) -> Path:
    return state_dir / "watchdogs" / f"{fault_id}.json"


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def report_lapse(state_dir: Path, fault_id: str, reason: str) -> None:
    """Say that a lease kept elsewhere (a proxy server) ended the fault before the run
    reverted it: the run reads this file as it reads a watchdog's. Keeps an earlier one."""
    path = lapse_path(state_dir, fault_id)
    if not path.exists():
        _write_json(path, {"fault_id": fault_id, "lease_expired_at": time.time(), "reason": reason})


def _write_outcome(state_dir: Path, fault_id: str, outcome: dict[str, Any]) -> None:
    _write_json(outcome_path(state_dir, fault_id), outcome)


def _write_json(path: Path, outcome: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, sort_keys=True), "utf-8")
    os.replace(tmp, path)


def _guard(record: RevertRecord, state_dir: Path, lab_dir: Path) -> None:
    """Runs in the detached child: wait for the lease, revert, record the outcome."""
    from chaoslab.drivers.registry import DriverRegistry

    ctx = DriverContext(run_id=record.run_id, state_dir=state_dir, lab_dir=lab_dir)
    driver = None
    try:
        # Load the driver and its SDK now, not at lease end: a read-only check imports
        # what revert needs (kubernetes' client alone takes ~1 s to import).
        driver = DriverRegistry().get(record.driver)
        driver.check_clean(ctx, record)
    except Exception:
        pass  # retried below, where a failure is recorded
    while (why := lapse_reason(record)) is None:
        time.sleep(POLL_S)
    outcome: dict[str, Any] = {"fault_id": record.fault_id, "lease_expired_at": time.time(), "reason": why}
    # Said at once, before the revert: a live runner reports a lease that ended its fault.
    _write_json(lapse_path(state_dir, record.fault_id), outcome)
    give_up = time.monotonic() + RETRY_FOR_S
    pause = RETRY_S
    for attempt in range(1, 100_000):  # bounded in time by give_up
        outcome["attempts"] = attempt
        outcome.pop("error", None)
        try:
            driver = driver or DriverRegistry().get(record.driver)
            result = driver.revert(ctx, record)
            outcome["reverted"] = result.reverted
            outcome["detail"] = result.detail
            clean = driver.check_clean(ctx, record)
            outcome["clean"] = clean.clean
            outcome["residue"] = list(clean.residue)
        except Exception as exc:  # last line of defence: record the failure, never hide it
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            outcome["clean"] = False
        if (outcome.get("reverted") and outcome.get("clean")) or time.monotonic() + pause > give_up:
            break
        time.sleep(pause)
        pause = min(pause * 2, RETRY_MAX_S)
    outcome["finished_at"] = time.time()
    _write_outcome(state_dir, record.fault_id, outcome)


def _detach() -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A revert that got there first ends us with SIGTERM: exit without a traceback.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {WATCHDOG_MODULE}")
    parser.add_argument("--fault-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--lab-dir", required=True, type=Path)  # the run's (DriverContext.lab_dir)
    opts = parser.parse_args(argv)
    record = RevertRecord.from_dict(json.loads(sys.stdin.read()))
    if record.fault_id != opts.fault_id:
        sys.stderr.write(f"record is for fault {record.fault_id}, not {opts.fault_id}\n")
        return 2
    if record.lease_expires_at is None:
        sys.stderr.write("record has no lease_expires_at\n")
        return 2
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _detach()
            _guard(record, opts.state_dir, opts.lab_dir)
        finally:
            os._exit(0)
    import psutil

    sys.stdout.write(json.dumps(ProcRef.of(psutil.Process(pid)).to_dict()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
