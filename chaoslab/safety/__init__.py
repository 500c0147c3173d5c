"""Safety: the ledger, recover, halt and blast-radius locks (the guard lives beside them).

- ``ledger``: durable revert records, written before a fault is applied, closed only
  after its revert is verified clean.
- ``recover``: reverts and closes the open entries of dead runs.
- ``halt``: blocks new runs, signals live runs to revert, reverts what they leave.
- ``locks``: one lock per target; never two runs on one target.
- ``owner``: who holds what, and whether that process still lives.
- ``durable``: atomic JSON writes and flock with a deadline.
"""
