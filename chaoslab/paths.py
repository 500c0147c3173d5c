"""Where chaoslab keeps its state on this machine.

``CHAOSLAB_HOME`` overrides the default (``$XDG_STATE_HOME/chaoslab`` or
``~/.local/state/chaoslab``). Tests point it at a temporary directory so runs never
see each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def home(env: dict[str, str] | None = None) -> Path:
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
