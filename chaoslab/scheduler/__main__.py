"""``python -m chaoslab.scheduler …``: the ``chaoslab`` command with the scheduler's
commands registered, whether or not ``chaoslab.cli`` lists them yet."""

from __future__ import annotations

from chaoslab.cli import main
from chaoslab.scheduler.cli import register

if "schedule" not in main.commands:
    register(main)

if __name__ == "__main__":
    main()
