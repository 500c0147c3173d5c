"""Resolving ``lab:NAME`` targets: the seam between the drivers and the lab.

Drivers never import the lab. The lab registers its components in a state file whose
shape this module owns (``<lab dir>/lab.json``, written atomically by ``chaoslab lab up``
and the lab's supervisor through ``chaoslab.lab.state.write_state``)::

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

Drivers (and the load generator) resolve ``lab:<name>`` through
``LabState.load(lab_dir).component(name)``. The file may be stale (a replica killed from
outside): consumers check ``psutil.pid_exists`` when it matters; ``chaoslab lab status`` does.
"""

from __future__ import annotations

import json
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
