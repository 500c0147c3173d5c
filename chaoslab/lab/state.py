"""The lab's state file: the contract between the lab and the drivers that target it.

``<lab dir>/lab.json`` (written atomically by ``chaoslab lab up`` and the supervisor)::

    {
      "version": 1,
      "supervisor": {"pid": 123},
      "proxy": {"pid": 124, "api_port": 8474},          # toxiproxy-compatible API
      "components": {
        "lb":        {"kind": "lb",      "pid": 125, "port": 40001},
        "replica-1": {"kind": "replica", "pid": 126, "port": 40002,
                      "proxy": "replica-1", "proxy_port": 40005,
                      "restarts": [{"at": 1700000000.1, "after_exit": -9}]},
        ...
      }
    }

Drivers resolve ``lab:<name>`` through ``LabState.component(name)``. The file may be
stale (a replica killed from outside): consumers check ``psutil.pid_exists`` when it
matters; ``chaoslab lab status`` does.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.errors import TargetNotFound

STATE_FILE = "lab.json"
STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Component:
    name: str
    kind: str
    pid: int | None
    port: int | None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LabState:
    directory: Path
    raw: Mapping[str, Any]

    @classmethod
    def load(cls, directory: Path) -> LabState:
        path = directory / STATE_FILE
        try:
            raw = json.loads(path.read_text("utf-8"))
        except FileNotFoundError as exc:
            raise TargetNotFound(
                f"the lab is not running (no {path}); start it with `chaoslab lab up`",
                driver="lab",
            ) from exc
        return cls(directory=directory, raw=raw)

    @property
    def components(self) -> dict[str, Component]:
        out: dict[str, Component] = {}
        for name, c in (self.raw.get("components") or {}).items():
            extra = {k: v for k, v in c.items() if k not in ("kind", "pid", "port")}
            out[name] = Component(
                name=name, kind=c.get("kind", ""), pid=c.get("pid"), port=c.get("port"), extra=extra
            )
        return out

    def component(self, name: str) -> Component:
        comps = self.components
        if name not in comps:
            raise TargetNotFound(
                f"no lab component {name!r} (have: {', '.join(sorted(comps)) or 'none'})",
                driver="lab",
                target=f"lab:{name}",
            )
        return comps[name]


def write_state(directory: Path, raw: Mapping[str, Any]) -> None:
    """Atomically replace the state file (readers never see a half-written file)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lab.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"version": STATE_VERSION, **raw}, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / STATE_FILE)
