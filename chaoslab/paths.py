"""Where chaoslab keeps its state on this machine.

``CHAOSLAB_HOME`` overrides the default (``$XDG_STATE_HOME/chaoslab`` or
``~/.local/state/chaoslab``). The CLI reads it once (``StatePaths.from_environment``)
and passes the ``StatePaths`` down (session, runner, driver context), so two runs in
one process with two homes never see each other. Tests point it at a temporary
directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def home(env: Mapping[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if explicit := env.get("CHAOSLAB_HOME"):
        return Path(explicit)
    xdg = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "chaoslab"


def lab_dir(base: Path | None = None) -> Path:
    return (base or home()) / "lab"


def runs_dir(base: Path | None = None) -> Path:
    return (base or home()) / "runs"


def ledger_dir(base: Path | None = None) -> Path:
    return (base or home()) / "ledger"


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
