"""Where chaoslab keeps its state on this machine.

``CHAOSLAB_HOME`` overrides the default (``$XDG_STATE_HOME/chaoslab`` or
``~/.local/state/chaoslab``). The CLI reads it once (``StatePaths.from_environment``)
and passes the ``StatePaths`` (or the directory a function needs) down: session, runner,
driver context, ledger, locks, halt, recover, the lab, the scheduler. No library function
has a default home, so two runs in one process with two homes never see each other;
``tests/unit/test_state_boundary.py`` fails if code outside the CLI entry modules reads
the environment's home. Tests point it at a temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def home(env: Mapping[str, str] | None = None) -> Path:
    """The home ``env`` (default: this process's environment) names. Only the CLI entry
    modules call it, through ``StatePaths.from_environment`` (``tests/unit/test_state_boundary.py``)."""
    env = dict(os.environ) if env is None else env
    if explicit := env.get(HOME_ENV):
        return Path(explicit)
    xdg = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "chaoslab"


def lab_dir(base: Path) -> Path:
    return base / "lab"


def runs_dir(base: Path) -> Path:
    return base / "runs"


def ledger_dir(base: Path) -> Path:
    return base / "ledger"


HOME_ENV = "CHAOSLAB_HOME"


def child_env(home: Path) -> dict[str, str]:
    """The environment of a ``chaoslab`` child process that must use chaoslab's home
    ``home``: this process's environment with ``CHAOSLAB_HOME`` set (for the child's
    CLI to read); this process's own environment is not changed."""
    return {**os.environ, HOME_ENV: str(home)}


@dataclass(frozen=True)
class StatePaths:
    """Where one chaoslab's state lives: the home and the directories under it."""

    home: Path

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> StatePaths:
        """The home ``CHAOSLAB_HOME`` (or the XDG default) names: read at the CLI only."""
        return cls(home(env))

    @property
    def lab(self) -> Path:
        return lab_dir(self.home)

    @property
    def runs(self) -> Path:
        return runs_dir(self.home)

    @property
    def ledger(self) -> Path:
        return ledger_dir(self.home)

    @property
    def locks(self) -> Path:
        return self.home / "locks"
