"""Turning SIGINT, SIGTERM and SIGUSR1 (``chaoslab halt``) into run interruptions.

While the method runs, a signal raises ``RunInterrupted`` in the main thread, so the
``finally`` blocks of the runner revert every fault and run the rollbacks. Once reverting
has begun the runner is *shielded*: a second Ctrl-C does not skip anything; it prints
what is still being reverted and the revert goes on.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from chaoslab.errors import RunInterrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Interrupts:
    def __init__(self, pending: Callable[[], list[str]], on_signal: Callable[[str, bool], None]) -> None:
        self._pending = pending
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self.shielded = False
        self.received: list[str] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread; embedders handle them
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = "HALT" if signum == signal.SIGUSR1 else signal.Signals(signum).name
        self.received.append(name)
        self._on_signal(name, self.shielded)
        if self.shielded:
            pending = self._pending()
            what = "; ".join(pending) if pending else "rollbacks"
            sys.stderr.write(
                f"\nchaoslab: {name} received while reverting — reverts are never skipped. "
                f"Still reverting: {what}\n"
            )
            sys.stderr.flush()
            return
        raise RunInterrupted(name)

    @contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded = True
        yield
