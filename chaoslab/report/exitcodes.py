"""The gate's exit codes: a public, documented contract (``chaoslab gate --help``).

Kept in a module of their own, importing nothing, because ``chaoslab.gate.cli`` needs
them when it registers the command, on every start of ``chaoslab`` (start-up time is
benchmarked). The decision order is in ``chaoslab.gate``.
"""

from __future__ import annotations

from enum import IntEnum


class GateExit(IntEnum):
    PASS = 0
    FAIL = 1
    INVALID_INPUT = 2
    REGRESSION = 3
    INCONCLUSIVE = 4
    INFRA_ERROR = 5
    WARNING = 10
    INTERRUPTED = 130


GATE_EXIT_HELP = """\b
Exit codes (GateExit; the first that applies wins):
  2   invalid input  the suite, an experiment or the baseline is wrong; nothing ran
  130 interrupted    SIGINT/SIGTERM; the running experiment reverted first
  5   infra error    a run errored, crashed, timed out or was NOT CLEAN
  1   fail           a key experiment failed, or score < warn threshold
  3   regression     score drop or SLI worse than the baseline beyond tolerance
  4   inconclusive   inconclusive runs decide the class, a key run was
                     inconclusive, or --require-baseline and none exists
  10  warning        warn threshold <= score < pass threshold
  0   pass           score >= pass threshold, no regression

\b
Score: 100 x sum(weight x credit) / sum(weight); credit passed 1,
inconclusive 0.5 (range: 0..1), any other verdict 0.
"""


__all__ = ["GATE_EXIT_HELP", "GateExit"]
