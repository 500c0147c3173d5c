"""chaoslab's exception tree. Every error chaoslab raises derives from ``ChaoslabError``.

::

    ChaoslabError
    ├── InvalidInput            the user's input is wrong; carries every Problem found
    ├── DriverError             a driver could not do what was asked (infrastructure)
    │   ├── TargetNotFound      a selector matched nothing
    │   ├── UnsafeTarget        a selector would hit chaoslab itself, PID 1, ...
    │   └── Unsupported         the target cannot support the operation (no netem, ...)
    ├── NotClean                a revert ran but the target still shows the fault
    ├── LedgerError             the ledger is unreadable, from a newer version, locked
    ├── LockHeld                another live run holds a blast-radius lock
    ├── SLIError                an SLI source is missing, stale or silent
    └── RunInterrupted          SIGINT/SIGTERM, ``chaoslab halt`` or chaoslib.exit reached the runner
        ├── ControlInterrupted  a Chaos Toolkit control raised InterruptExecution or SystemExit
        └── ActivityInterrupted a python provider raised InterruptExecution or SystemExit

Third-party errors are translated at the boundary: ``raise DriverError(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class ChaoslabError(Exception):
    """Root of every error chaoslab raises on purpose."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with the user's input, located as precisely as the format allows."""

    message: str
    file: str | None = None
    path: str = ""
    line: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f" at {self.path}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class InvalidInput(ChaoslabError):
    """The input is wrong; ``problems`` lists everything found in one pass."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid input")


class DriverError(ChaoslabError):
    """A driver failed to probe, inject, revert or check a target.

    ``not_applied`` (raised by ``inject`` only): the driver is certain nothing of the fault
    reached the target (it could not connect, the host key was refused, the preflight
    stopped it). The engine then closes the fault's ledger entry as "not applied" with
    this reason instead of reverting and calling the target not clean.
    """

    def __init__(
        self, message: str, *, driver: str = "", target: str = "", not_applied: bool = False
    ) -> None:
        self.driver = driver
        self.target = target
        self.not_applied = not_applied
        prefix = ".".join(x for x in (driver,) if x)
        where = f" on {target}" if target else ""
        super().__init__(f"{prefix + ': ' if prefix else ''}{message}{where}")


class TargetNotFound(DriverError):
    """The target selector matched nothing."""


class UnsafeTarget(DriverError):
    """The target selector would hit something chaoslab must never touch."""


class Unsupported(DriverError):
    """The target cannot support this operation (e.g. the kernel has no netem)."""


class NotClean(ChaoslabError):
    """A revert ran, yet the target still shows traces of the fault."""


class LedgerError(ChaoslabError):
    """The ledger cannot be read or written safely."""


class LockHeld(ChaoslabError):
    """A blast-radius lock is held by another live run."""

    def __init__(self, target: str, holder: str) -> None:
        self.target = target
        self.holder = holder
        super().__init__(f"target {target!r} is locked by {holder}")


class SLIError(ChaoslabError):
    """An SLI source is missing, stale or silent."""


class RunInterrupted(ChaoslabError):
    """The run was interrupted by a signal.

    ``signame`` is ``SIGINT``, ``SIGTERM``, ``HALT`` (``chaoslab halt``), ``SIGUSR1``
    (chaoslib.exit.exit_gracefully: running activities are waited for) or ``SIGUSR2``
    (chaoslib.exit.exit_ungracefully: nothing is waited for).
    """

    def __init__(self, signame: str, message: str | None = None) -> None:
        self.signame = signame
        super().__init__(message or f"interrupted by {signame}")

    @property
    def graceful(self) -> bool:
        """Whether background activities still running are waited for once every fault
        is reverted: after chaoslib's exit_gracefully() and an interruption by a control or
        a provider, as Chaos Toolkit does; not after Ctrl-C, SIGTERM, a halt or SIGUSR2
        (Chaos Toolkit waits on Ctrl-C and SIGTERM too: README, table of differences)."""
        return self.signame in ("SIGUSR1", "CONTROL", "ACTIVITY")


class ControlInterrupted(RunInterrupted):
    """A Chaos Toolkit control ended the run (``InterruptExecution`` or ``SystemExit``)."""

    def __init__(self, control: str, hook: str, detail: str, *, graceful: bool = True) -> None:
        self.control = control
        self.hook = hook
        self._graceful = graceful  # SystemExit(30) is chaoslib's "ungraceful" code
        super().__init__("CONTROL", f"interrupted by control {control!r} in {hook}: {detail}")

    @property
    def graceful(self) -> bool:
        return self._graceful


class ActivityInterrupted(RunInterrupted):
    """A python provider ended the run (``InterruptExecution`` or ``SystemExit``), as
    chaostoolkit-lib lets it."""

    def __init__(self, activity: str, detail: str, *, graceful: bool = True) -> None:
        self.activity = activity
        self._graceful = graceful
        super().__init__("ACTIVITY", f"interrupted by activity {activity!r}: {detail}")

    @property
    def graceful(self) -> bool:
        return self._graceful
