"""``chaoslab serve``: the control room, a small web view of what chaoslab writes.

Read-only over the files runs already leave (run directories with ``events.ndjson`` and
``journal.json``, the ledger, the locks, the active-runs registry, the scheduler store,
SLO files), plus two actions: halt and release (``chaoslab.safety.halt``), each behind
authentication, CSRF protection and an audit record.

Modules: ``runs`` (run directories: discovery, summaries, event tails), ``views`` (what
each page shows), ``auth`` (tokens, sessions, CSRF, audit log), ``app`` (the Starlette
application), ``cli`` (the command). Starlette, uvicorn and Jinja2 come with the
``serve`` extra and are imported only by this package.
"""
