"""A run's ledger that also locks what each fault really hits.

``ClaimingLedger`` is the ``Ledger`` a run hands to its ``FaultManager``. Before each
fault's entry is opened — after substitution and target resolution, so the record holds
its resolved identities (``RevertRecord.keys``: container id, host + pid + start time,
pod uid, host CPU/memory/disk path) — ``claim`` takes a blast-radius lock on every key
and then runs the open-ledger check on the same keys. Two runs naming one container
``name:web`` and ``label:app=web`` (or ``${t}`` and its value, or two ``stress.cpu`` on
one host) therefore collide on the key, not on the text.

A run's own keys are claimed once and held until ``release`` (the end of the run), so a
run may stack faults on one target; another live run is refused with ``LockHeld``; a
lock of a dead run is reclaimed and reported through ``on_reclaimed`` (the run writes a
``lock-reclaimed`` event). Given the drivers' ``identities``, the open-ledger check also
re-keys each open entry the way its driver keys it today (``Ledger.held_keys``), so an
entry written before a driver's keys changed still blocks the object it hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from chaoslab.drivers.base import RevertRecord
from chaoslab.masking import Masker
from chaoslab.safety.ledger import Ledger
from chaoslab.safety.locks import LockSet, Reclaimed, acquire

IDENTITY_PREFIX = "identity:"


class ClaimingLedger(Ledger):
    """``Ledger`` plus per-fault locks on resolved identities, for one run."""

    def __init__(
        self,
        run_id: str,
        *,
        directory: Path,
        locks_directory: Path,
        lease_s: float | None = None,
        on_reclaimed: Callable[[Reclaimed], None] = lambda _r: None,
        masker: Masker | None = None,
        identities: Callable[[RevertRecord], Iterable[str]] | None = None,
    ) -> None:
        super().__init__(directory, masker=masker, identities=identities)
        self.run_id = run_id
        self.locks_directory = locks_directory
        self.lease_s = lease_s
        self.on_reclaimed = on_reclaimed
        self._held: list[LockSet] = []
        self._keys: set[str] = set()

    def claim(self, record: RevertRecord) -> None:
        """Lock ``record``'s keys for this run (raises ``LockHeld`` if a live run holds
        one), then refuse keys that another run's open entry still holds."""
        new = sorted(set(record.identity_keys()) - self._keys)
        if new:
            # Their own namespace: an identity may read like a target text the run's
            # target-text locks already hold (``k8s:ns/deployment/web``).
            locks = acquire(
                [IDENTITY_PREFIX + k for k in new],
                self.run_id,
                lease_s=self.lease_s,
                directory=self.locks_directory,
            )
            self._held.append(locks)
            self._keys.update(new)
            for reclaimed in locks.reclaimed:
                key = reclaimed.target.removeprefix(IDENTITY_PREFIX)
                self.on_reclaimed(dataclasses.replace(reclaimed, target=key))
        super().claim(record)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._keys)

    def release(self) -> None:
        """Give back every lock this run took. Idempotent."""
        while self._held:
            self._held.pop().release()
        self._keys.clear()

    def __enter__(self) -> ClaimingLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
