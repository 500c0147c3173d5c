"""Turning SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 into run interruptions.

SIGUSR1 means two things: ``chaoslab halt`` (which writes its HALT file before it
signals) and chaostoolkit-lib's ``chaoslib.exit.exit_gracefully()`` (used by
chaostoolkit-addons' safeguards). The handler asks ``is_halt`` which one it is. SIGUSR2 is
``chaoslib.exit.exit_ungracefully()``. Neither kind of exit skips a revert or a rollback.

The handler does as little as a signal handler safely can: it records the signal and,
the first time only, raises ``RunInterrupted`` in the main thread so that the runner's
``finally`` reverts every fault and runs the rollbacks. Every later signal — a second
Ctrl-C while reverting, a signal that lands between the first raise and the shield —
is only recorded and acknowledged on stderr with what is still being reverted: reverts
are never skipped.

Why so careful: a handler runs between any two bytecodes of the main thread, possibly
while that thread holds a lock (the event log's) or is inside a buffered write. So the
handler never emits events, never takes a lock, and writes with ``os.write``; the runner
turns ``received`` into journal events later, from ordinary code.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from chaoslab.errors import RunInterrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def signal_name(signum: int, is_halt: Callable[[], bool] | None = None) -> str:
    """``HALT`` for a SIGUSR1 from ``chaoslab halt``; otherwise the signal's name."""
    if signum == signal.SIGUSR1 and (is_halt is None or _safely(is_halt)):
        return "HALT"
    return signal.Signals(signum).name


def _safely(is_halt: Callable[[], bool]) -> bool:
    try:
        return bool(is_halt())
    except Exception:  # cannot tell: a halt is the safer reading (it stops the run too)
        return True


class Interrupts:
    def __init__(
        self, pending: Callable[[], list[str]], *, is_halt: Callable[[], bool] | None = None
    ) -> None:
        self._pending = pending
        self._is_halt = is_halt
        self._previous: dict[int, Any] = {}
        self.shielded = False
        self.raised = False
        # (signal, arrived while reverting, what was still being reverted)
        self.received: list[tuple[str, bool, tuple[str, ...]]] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread; embedders handle them
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self, *, ignore: bool = False) -> None:
        """Put the previous handlers back, or (``ignore``) ignore these signals from now
        on — for a CLI about to exit, so a late Ctrl-C cannot turn into a traceback."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal_name(signum, self._is_halt)
        try:
            pending = self._pending()
        except Exception:  # never let the acknowledgement itself fail
            pending = []
        late = self.shielded or self.raised
        self.received.append((name, late, tuple(pending)))
        if late:
            what = "; ".join(pending) if pending else "rollbacks and checks"
            message = (
                f"\nchaoslab: {name} received while reverting — reverts are never skipped. "
                f"Still reverting: {what}\n"
            )
            os.write(2, message.encode("utf-8", "replace"))
            return
        self.raised = True
        raise RunInterrupted(name)

    @contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded = True
        yield
