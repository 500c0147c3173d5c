"""Shared test fixtures and the one readiness helper.

Waiting: ``poll`` / ``wait_until`` (a condition, bounded in time and count) and
``wait_for_event`` (a handshake on a run's ``events.ndjson``) are the only ways tests
wait for something to become true; a test never sleeps to let something happen.

Real components: a test that needs one calls ``require(ok, reason)``. Locally a missing
component skips with a loud reason; in CI (``CI=true``) it fails, because a green CI
must mean the real thing was exercised.

Concurrency: the suite runs under pytest-xdist, so a test may only use what is its own
(tmp_path, its CHAOSLAB_HOME, free ports, unique names). The one thing of the host's
that tests share is its own firewall (the root network namespace's iptables): the tests
that change or compare it hold ``host_iptables`` (a ``machine_lock``), one at a time.
Tests that measure time or CPU precisely are marked ``exclusive`` (``EXCLUSIVE_MODULES``)
and run alone, after the parallel part (``.ci/test``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path, timeout: float = 120, wrapper: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``chaoslab ARGS`` in a child process (this checkout first on the path), captured.

    ``wrapper`` is a command prefix (e.g. ``setpriv ...``) the child is started under."""
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "chaoslab.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def chaoslab(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``run_cli`` for a command that must never show a traceback, whatever its exit code."""
    proc = run_cli(*args, cwd=cwd, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def poll[T](cond: Callable[[], T], *, timeout_s: float, interval_s: float = 0.02) -> T | None:
    """The first truthy value ``cond`` returns within ``timeout_s``, or None (checked once
    more at the deadline, so a slow machine never loses a last-moment success)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(max(1, int(timeout_s / interval_s) * 4 + 2)):  # bounded in count too
        value = cond()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval_s, left))
    return cond() or None


def wait_until[T](cond: Callable[[], T], *, timeout_s: float, interval_s: float = 0.02, what: str = "") -> T:
    """``poll`` that fails the test (naming ``what``) when the condition never holds."""
    value = poll(cond, timeout_s=timeout_s, interval_s=interval_s)
    if value is None:
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or cond}")
    return value


def read_events_tolerant(events: Path) -> list[dict[str, Any]]:
    """The whole JSON lines of a (possibly still written) event log."""
    out: list[dict[str, Any]] = []
    try:
        lines = events.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line being written
    return out


def wait_for_event(
    events: Path,
    kind: str,
    *,
    timeout_s: float = 30.0,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Readiness handshake on a run's event log: the first ``kind`` event (``where`` it
    matches), once the run has written it."""
    return wait_until(
        lambda: next(
            (
                e
                for e in read_events_tolerant(events)
                if e.get("kind") == kind and (where is None or where(e))
            ),
            None,
        ),
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"a {kind} event in {events}",
    )


# Tests that measure time or CPU to the millisecond or the percent (latency toxics, CPU
# load, lease lapse times, scheduler slots, load-generator rates): `.ci/test` runs them
# after the parallel part, alone, so no other test's load skews what they measure.
EXCLUSIVE_MODULES = frozenset(
    {
        "tests/integration/test_proxy.py",
        "tests/integration/test_proxy_http.py",
        "tests/integration/test_proxy_driver.py",
        "tests/integration/test_proxy_toxiproxy_client.py",
        "tests/integration/test_proxy_toxiproxy_fidelity.py",
        "tests/integration/test_proxy_node_client.py",
        "tests/integration/test_stress_driver.py",
        "tests/integration/test_loadgen.py",
        "tests/integration/test_lab.py",
        "tests/integration/test_lab_timeouts.py",
        "tests/integration/test_scheduler_postgres.py",
        "tests/unit/test_scheduler_daemon.py",
        "tests/e2e/test_leases.py",
        "tests/e2e/test_compare_run.py",
    }
)
EXCLUSIVE_TESTS = ("test_runner_sigkilled_lease_ends_fault",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        module = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if module in EXCLUSIVE_MODULES or item.name.startswith(EXCLUSIVE_TESTS):
            item.add_marker(pytest.mark.exclusive)


def require(ok: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a real component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(f"MISSING COMPONENT (would fail in CI): {reason}")


@contextlib.contextmanager
def machine_lock(name: str, *, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold a lock every test process on this machine sees, named ``name``.

    The lock is an abstract unix socket bound to the name: one holder at a time, no file
    left behind, and released by the kernel if the holder dies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def bound() -> bool:
        try:
            sock.bind(f"\0chaoslab-tests-{name}")
        except OSError:
            return False
        return True

    try:
        wait_until(bound, timeout_s=timeout_s, interval_s=0.05, what=f"the {name} lock")
        yield
    finally:
        sock.close()


@pytest.fixture
def host_iptables() -> Iterator[None]:
    """This host's own iptables rules, for this test alone (see the module docstring)."""
    with machine_lock("host-iptables"):
        yield


@pytest.fixture(autouse=True)
def chaoslab_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own chaoslab state directory."""
    home = tmp_path_factory.mktemp("chaoslab-home")
    monkeypatch.setenv("CHAOSLAB_HOME", str(home))
    yield home
