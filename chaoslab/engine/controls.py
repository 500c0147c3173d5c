"""Chaos Toolkit controls declared in an experiment, called at the same moments as
``chaos run`` calls them.

chaostoolkit-lib keeps its controls in module-level globals; chaoslab calls the control
modules itself so that two runs in one process never share controls.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any


class Controls:
    def __init__(self, declared: tuple[Mapping[str, Any], ...]) -> None:
        self._controls: list[tuple[Mapping[str, Any], ModuleType]] = []
        for c in declared:
            self._controls.append((c, importlib.import_module(c["provider"]["module"])))
        self.errors: list[str] = []

    def call(self, hook: str, **kwargs: Any) -> None:
        for control, mod in self._controls:
            fn = getattr(mod, hook, None)
            if fn is None:
                continue
            params = inspect.signature(fn).parameters
            prov = control.get("provider", {})
            kw = dict(prov.get("arguments") or {})
            kw.update(kwargs)
            if "settings" in params:
                kw.setdefault("settings", {})
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                kw = {k: v for k, v in kw.items() if k in params}
            try:
                fn(**kw)
            except Exception as exc:  # a control must never break a run (Chaos Toolkit agrees)
                self.errors.append(f"control {control.get('name')}.{hook}: {exc}")
