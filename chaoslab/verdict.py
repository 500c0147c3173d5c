"""The verdicts a run can have and the exit codes they map to: a vocabulary every layer
uses (the engine folds the verdict from the events in ``engine/fold.py``; reports, the
gate, the scheduler and every command read it), so it sits at the bottom, beside errors.

Exit codes are a public, documented contract (README and ``chaoslab --help``)::

    0  passed        the steady state held before, during and after
    1  deviated      an SLO or tolerance failed after the method ran
    2  invalid input the experiment (or a command line) is wrong; nothing was run
    3  aborted       the guard stopped the run (error-budget allowance, halt)
    4  inconclusive  the samples could not support a claim, or the baseline did not hold
    5  error         a driver or the infrastructure failed
    6  not clean     a revert ran but the target still shows the fault (the worst)
    130 interrupted  SIGINT / SIGTERM, chaoslib.exit (SIGUSR1/SIGUSR2), a control's
                     InterruptExecution/SystemExit; everything was reverted
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    PASSED = 0
    DEVIATED = 1
    INVALID_INPUT = 2
    ABORTED = 3
    INCONCLUSIVE = 4
    ERROR = 5
    NOT_CLEAN = 6
    INTERRUPTED = 130


class Verdict(StrEnum):
    PASSED = "passed"
    DEVIATED = "deviated"
    INVALID_INPUT = "invalid-input"
    ABORTED = "aborted"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    NOT_CLEAN = "not-clean"
    INTERRUPTED = "interrupted"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode[self.name]

    @property
    def ctk_status(self) -> str:
        """The closest Chaos Toolkit journal ``status``."""
        return {
            Verdict.PASSED: "completed",
            Verdict.DEVIATED: "completed",
            Verdict.INCONCLUSIVE: "failed",
            Verdict.ABORTED: "aborted",
            Verdict.INTERRUPTED: "interrupted",
        }.get(self, "failed")


# Severity order used when several outcomes apply: the worst one wins.
SEVERITY: tuple[Verdict, ...] = (
    Verdict.PASSED,
    Verdict.INCONCLUSIVE,
    Verdict.DEVIATED,
    Verdict.ABORTED,
    Verdict.INTERRUPTED,
    Verdict.ERROR,
    Verdict.INVALID_INPUT,
    Verdict.NOT_CLEAN,
)


def worst(*verdicts: Verdict) -> Verdict:
    return max(verdicts, key=SEVERITY.index, default=Verdict.PASSED)
