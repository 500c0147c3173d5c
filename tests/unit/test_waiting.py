"""The suite's one way to wait (``poll`` / ``wait_until``) and its cross-worker lock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, machine_lock, poll, wait_until


def test_poll_returns_the_first_truthy_value_and_none_at_the_deadline() -> None:
    calls: list[float] = []

    def third_time() -> str | None:
        calls.append(time.monotonic())
        return "ready" if len(calls) >= 3 else None

    assert poll(third_time, timeout_s=5, interval_s=0.01) == "ready" and len(calls) == 3
    started = time.monotonic()
    assert poll(lambda: False, timeout_s=0.2, interval_s=0.05) is None
    assert 0.2 <= time.monotonic() - started < 2.0  # waited to the deadline, not forever


def test_wait_until_names_what_never_happened() -> None:
    with pytest.raises(AssertionError, match="waiting for the moon"):
        wait_until(lambda: None, timeout_s=0.1, what="the moon")


HOLD = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.conftest import machine_lock
with machine_lock(sys.argv[2], timeout_s=0.3):
    print("held", flush=True)
"""


def test_machine_lock_admits_one_holder_across_processes_and_frees_on_exit() -> None:
    name = f"selftest-{time.monotonic_ns()}"
    other = [sys.executable, "-c", HOLD, str(ROOT), name]
    with machine_lock(name):
        refused = subprocess.run(other, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "the selftest" in refused.stderr and "held" not in refused.stdout
    admitted = subprocess.run(other, capture_output=True, text=True, timeout=60)
    assert admitted.returncode == 0 and admitted.stdout == "held\n", admitted.stderr
