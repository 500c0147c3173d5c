"""The lab's balancer routes around a replica that stops answering (per-try timeout)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from chaoslab.lab import control
from chaoslab.sli.loadgen import LoadGenerator


def test_a_frozen_replica_costs_latency_not_errors(tmp_path: Path) -> None:
    state = control.up(3, 1.0, tmp_path)
    try:
        replica = state.component("replica-2")
        assert replica.pid is not None
        gen = LoadGenerator(url=control.lb_url(state), rate=100, timeout_s=3.0, max_duration_s=8.0)
        gen.start()
        try:
            # The sleeps are the experiment's phases (before, frozen, after), not barriers.
            time.sleep(1.5)
            os.kill(replica.pid, signal.SIGSTOP)  # accepts connections, never answers
            time.sleep(3.0)
            os.kill(replica.pid, signal.SIGCONT)
            time.sleep(1.5)
        finally:
            os.kill(replica.pid, signal.SIGCONT)
            gen.stop()
        outcomes = gen.outcome_counts()
        assert set(outcomes) == {"200"}, outcomes
        assert outcomes["200"] >= 500
        slow = [lat for lat in gen.latency if lat > 0.9]
        assert slow, "requests caught on the frozen replica waited for the per-try timeout"
        assert max(gen.latency) < 2.5
    finally:
        control.down(tmp_path)
