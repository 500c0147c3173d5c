"""The scheduler: scenarios on a calendar, Chaos Monkey mode, every slot exactly once.

- ``scenario``: the scenario file model and its loader (problems name file, line, field).
- ``triggers``: when slots happen (cron with a time zone via croniter, fixed intervals,
  the monkey's random kills) and the deterministic jitter of each slot.
- ``calendar``: allowed windows and blackouts.
- ``gates``: checks right before a run (error budget, firing alerts, ledger, locks).
- ``store``: schedule state and history; claims of slots (SQLite, or PostgreSQL shared
  by several schedulers).
- ``daemon``: the tick loop that decides, claims, runs and records each slot.
- ``monkey``, ``gameday``, ``notify``, ``export``, ``cli``: the rest of the feature.

The invariant everything here serves: a slot is identified by (scenario name, nominal
slot time); the store holds at most one row per slot, inserted by whichever scheduler
claims it first, so a slot runs at most once; every scheduler walks every slot and the
row is written before anything runs, so no slot passes without a record.
"""
