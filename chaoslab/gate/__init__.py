"""The CI gate (``chaoslab gate``): run a suite of experiments, score it, compare it, decide.

A suite file (YAML or JSON)::

    name: checkout-resilience
    experiments:
      - {path: experiments/replica-kill.yaml, weight: 3, key: true}
      - {path: experiments/slow-replica.yaml, weight: 1, name: slow-replica}
    thresholds: {pass: 90, warn: 70}
    tolerance: {score: 5, ratio: 0.01, latency: 0.25, latency_ms: 10, ttr_s: 2}

Paths are relative to the suite file. Experiments run one after the other, each in its
own ``chaoslab run`` subprocess (``[sys.executable, -m, chaoslab.cli, run, --output,
json, --run-dir, DIR, PATH]``): a crash, a leak or a signal in one run cannot corrupt the
gate or the next run, and each run keeps its own journal the gate then reads. Before
anything runs, every experiment is validated (one ``chaoslab validate`` subprocess): a
typo fails the gate as invalid input with nothing run.

Decision (``GateExit``; the first that applies wins)::

    2   invalid input   the suite, an experiment or the baseline file is wrong
    130 interrupted     SIGINT/SIGTERM stopped the gate (the running experiment reverted)
    5   infra error     a run errored, crashed, timed out, or left a fault NOT CLEAN
    1   fail            a key experiment deviated or was aborted, or the score is in the
                        fail class (see ``chaoslab.report.score``)
    3   regression      the score dropped, or an SLI worsened, beyond the tolerance
                        compared with the last passing gate
    4   inconclusive    a key experiment was inconclusive, the inconclusive runs decide
                        the class, or ``--require-baseline`` and there is none
    10  warning         the score is in the warn class
    0   pass

With no baseline the comparison reads "no baseline" everywhere (console, JUnit, summary);
it is never reported as a pass by comparison. Only a passing gate (exit 0) becomes the
new baseline.
"""

from __future__ import annotations

from chaoslab.gate.run import (
    GateInterrupted,
    GateOptions,
    decide,
    invalid_result,
    run_experiment,
    run_gate,
    snapshot_of,
    validate_all,
    write_outputs,
)
from chaoslab.gate.suite import load_suite, suite_from_paths
from chaoslab.report.exitcodes import GateExit
from chaoslab.report.gateresult import GateResult, Suite, SuiteEntry, SuiteRun

__all__ = [
    "GateExit",
    "GateInterrupted",
    "GateOptions",
    "GateResult",
    "Suite",
    "SuiteEntry",
    "SuiteRun",
    "decide",
    "invalid_result",
    "load_suite",
    "run_experiment",
    "run_gate",
    "snapshot_of",
    "suite_from_paths",
    "validate_all",
    "write_outputs",
]
