"""The stressor process of the stress driver (built-in backend, and stress-ng's keeper).

Usage (the stress driver runs it; the spec travels on stdin as JSON)::

    CHAOSLAB_FAULT_ID=<id> python -m chaoslab.drivers.stress_worker --fault-id <id> < spec

The launched process forks a *keeper* that calls ``setsid`` — so the stressors are
not the runner's children and survive its death — joins the target's cgroups if asked,
prepares the workload, reports ``ok`` (or the error) through a pipe, and runs it until
the absolute ``deadline``: the stressor ends itself when the lease ends. The launcher
prints the keeper's identity as one JSON line and exits.

Every process of one fault is found again by its session id (the keeper's pid; it
survives reparenting and stress-ng's argv/environ rewriting) and by the environment tag
``CHAOSLAB_FAULT_ID``.

Hand-written on purpose: the duty cycle tracks the worker's own CPU time
(``CLOCK_PROCESS_CPUTIME_ID``) instead of wall time, so on a contended host it still
delivers the requested share; stress-ng has no fill-to-size disk stressor.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
PAGE = 4096
PERIOD_S = 0.1  # duty-cycle period: short enough to look steady to a 1 s sampler
_CHUNK = 64 * MIB


def duty_cycle(load: float, deadline: float, *, period: float = PERIOD_S) -> None:
    """Burn ``load`` percent of one CPU until the wall-clock ``deadline``.

    Each period the worker runs until its CPU time reaches ``load``% of the time elapsed
    (debt is forgiven beyond one period so a starved worker does not burst), then sleeps
    to the end of the period.
    """
    share = max(0.0, min(load, 100.0)) / 100.0
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.time() < deadline:
        slice_end = min(time.monotonic() + period, time.monotonic() + deadline - time.time())
        if share >= 1.0:
            while time.monotonic() < slice_end:
                pass
            continue
        target = (slice_end - wall0) * share
        used = time.process_time() - cpu0
        if target - used > period:  # starved earlier: forgive the old debt
            cpu0 += target - used - period
        while time.process_time() - cpu0 < target and time.monotonic() < slice_end:
            pass
        rest = slice_end - time.monotonic()
        if rest > 0:
            time.sleep(rest)


def sleep_until(deadline: float) -> None:
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.25))


def touch_memory(mib: int) -> bytearray:
    """Allocate ``mib`` MiB and write every page so it is resident, not just reserved."""
    buf = bytearray(mib * MIB)
    buf[::PAGE] = b"\x01" * len(range(0, len(buf), PAGE))
    return buf


def fill_disk(directory: Path, nbytes: int, deadline: float) -> int:
    """Allocate ``nbytes`` in ``directory`` (fallocate, else zeros); stop at ``deadline``."""
    path = directory / "fill.bin"
    done = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        zeros = b""
        while done < nbytes and time.time() < deadline:
            step = min(_CHUNK, nbytes - done)
            try:
                if not zeros:
                    os.posix_fallocate(fd, done, step)
                    done += step
                    continue
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                zeros = b"\0" * MIB
            for _ in range(0, step, MIB):
                done += os.pwrite(fd, zeros, done)
            os.fsync(fd)
    finally:
        os.close(fd)
    return done


def join_cgroups(procs_files: Sequence[str]) -> None:
    for procs in procs_files:
        with open(procs, "w", encoding="ascii") as fh:
            fh.write(str(os.getpid()))


def _run_builtin(spec: Mapping[str, Any], report: int) -> None:
    deadline = float(spec["deadline"])
    kind = spec["kind"]
    if kind == "cpu":
        children = []
        for _ in range(int(spec["workers"])):
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(report)
                    duty_cycle(float(spec["load"]), deadline)
                finally:
                    os._exit(0)
            children.append(pid)
        _ok(report)
        for pid in children:
            os.waitpid(pid, 0)
    elif kind == "memory":
        buf = touch_memory(int(spec["mib"]))
        _ok(report)
        sleep_until(deadline)
        del buf
    elif kind == "disk":
        directory = Path(spec["fill_dir"])
        directory.mkdir(mode=0o700)
        fill_disk(directory, int(spec["fill_bytes"]), deadline)
        _ok(report)
        sleep_until(deadline)
        shutil.rmtree(directory, ignore_errors=True)
    else:
        raise ValueError(f"unknown stress kind {kind!r}")


def _run_stress_ng(spec: Mapping[str, Any], report: int) -> None:
    deadline = float(spec["deadline"])
    with subprocess.Popen(list(spec["command"])) as proc:
        if spec["kind"] == "memory":
            _wait_resident(int(spec["mib"]) * MIB * 9 // 10, min(deadline, time.time() + 30))
        _ok(report)
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.terminate()  # stress-ng's --timeout rounds up to whole seconds
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpid(), signal.SIGKILL)


def _wait_resident(nbytes: int, until: float) -> None:
    """stress-ng allocates after it starts: report ``ok`` once the memory is resident."""
    import psutil

    me = os.getpid()
    while time.time() < until:
        rss = 0
        for proc in psutil.Process(me).children(recursive=True):
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        if rss >= nbytes:
            return
        time.sleep(0.02)


def _ok(report: int) -> None:
    if report >= 0:
        os.write(report, b"ok\n")
        os.close(report)


def _keeper(spec: Mapping[str, Any], report: int) -> None:
    """The detached keeper: own session, cgroups, workload until the deadline."""
    try:
        os.setsid()
        join_cgroups(spec.get("cgroup_procs") or ())
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if spec["backend"] == "stress-ng":
            _run_stress_ng(spec, report)
        else:
            _run_builtin(spec, report)
    except BaseException as exc:  # reported to the launcher, which raises it in the driver
        try:
            os.write(report, f"error: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.drivers.stress_worker")
    parser.add_argument("--fault-id", required=True)
    opts = parser.parse_args(argv)
    spec = json.loads(sys.stdin.read())
    if spec.get("fault_id") != opts.fault_id:
        sys.stderr.write("spec and --fault-id disagree\n")
        return 2
    sys.stdout.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            _keeper(spec, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "r", encoding="utf-8") as fh:
        answer = fh.readline().strip()
    if answer != "ok":
        sys.stderr.write((answer or "the stressor exited before starting") + "\n")
        return 1
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        created = time.time()  # already done (a tiny lease): nothing left to find
    ident = {"pid": pid, "create_time": created, "sid": pid}
    sys.stdout.write(json.dumps(ident) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
