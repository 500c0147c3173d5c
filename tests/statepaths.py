"""The test's chaoslab state, for library calls that take it.

Every test has its own home (the autouse ``chaoslab_home`` fixture in ``tests/conftest.py``
sets ``CHAOSLAB_HOME``); a test reads it here, as the CLI does, and passes it down.
"""

from __future__ import annotations

from chaoslab.paths import StatePaths


def env_state() -> StatePaths:
    """This test's ``StatePaths`` (its ``CHAOSLAB_HOME``)."""
    return StatePaths.from_environment()
