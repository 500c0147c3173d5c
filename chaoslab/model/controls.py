"""Where Chaos Toolkit controls are declared in an experiment, and whether they are valid.

The rules are chaostoolkit-lib's ``validate_controls`` (a name, a provider, a ``scope``
of ``before``/``after``, a ``ref`` that names a declared control, a python provider's
``module``, and the control's own ``validate_control(control)``), each problem placed at
its field path. chaoslab is stricter on two points, listed in the README's table of
differences: a control module that cannot be imported and a provider that is not
``python`` are errors (Chaos Toolkit warns and runs without the control).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

# (field path, message)
ControlProblem = tuple[str, str]


def declared(doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every control declared anywhere in the experiment, with its field path: the top
    level, the hypothesis, and every probe, method activity and rollback (the places
    ``chaoslib.control.get_controls`` looks at)."""
    found: list[tuple[str, Any]] = []

    def add(where: str, value: Any) -> None:
        if isinstance(value, list):
            prefix = f"{where}.controls" if where else "controls"
            found.extend((f"{prefix}[{i}]", c) for i, c in enumerate(value))

    add("", doc.get("controls"))
    ssh = doc.get("steady-state-hypothesis")
    if isinstance(ssh, Mapping):
        add("steady-state-hypothesis", ssh.get("controls"))
        if isinstance(ssh.get("probes"), list):
            for i, a in enumerate(ssh["probes"]):
                if isinstance(a, Mapping):
                    add(f"steady-state-hypothesis.probes[{i}]", a.get("controls"))
    for section in ("method", "rollbacks"):
        if isinstance(doc.get(section), list):
            for i, a in enumerate(doc[section]):
                if isinstance(a, Mapping):
                    add(f"{section}[{i}]", a.get("controls"))
    return found


def _where_lists(doc: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("controls", doc.get("controls"))]
    ssh = doc.get("steady-state-hypothesis")
    if isinstance(ssh, Mapping):
        out.append(("steady-state-hypothesis.controls", ssh.get("controls")))
        if isinstance(ssh.get("probes"), list):
            for i, a in enumerate(ssh["probes"]):
                if isinstance(a, Mapping):
                    out.append((f"steady-state-hypothesis.probes[{i}].controls", a.get("controls")))
    for section in ("method", "rollbacks"):
        if isinstance(doc.get(section), list):
            for i, a in enumerate(doc[section]):
                if isinstance(a, Mapping):
                    out.append((f"{section}[{i}].controls", a.get("controls")))
    return out


def control_problems(doc: Mapping[str, Any]) -> list[ControlProblem]:
    """Every problem with the experiment's controls, in one pass."""
    problems: list[ControlProblem] = []
    for path, value in _where_lists(doc):
        if value is not None and not isinstance(value, list):
            problems.append((path, "'controls' must be a list"))
    controls = declared(doc)
    names = {
        c["name"]
        for _, c in controls
        if isinstance(c, Mapping) and "ref" not in c and isinstance(c.get("name"), str)
    }
    for path, c in controls:
        if not isinstance(c, Mapping):
            problems.append((path, "a control must be a mapping with a name and a provider"))
            continue
        if "ref" in c:
            if c["ref"] not in names:
                problems.append((f"{path}.ref", f"control reference {c['ref']!r} names no declared control"))
            continue
        name = c.get("name")
        if not isinstance(name, str) or not name:
            problems.append((path, "a control must have a `name`"))
            continue
        scope = c.get("scope")
        if scope and scope not in ("before", "after"):
            problems.append((f"{path}.scope", f"control {name!r}: scope must be 'before' or 'after'"))
        prov = c.get("provider")
        if not isinstance(prov, Mapping):
            problems.append((f"{path}.provider", f"control {name!r} must have a `provider`"))
            continue
        if prov.get("type") != "python":
            problems.append(
                (f"{path}.provider.type", f"control {name!r}: the provider must be of type python")
            )
            continue
        module = prov.get("module")
        if not isinstance(module, str) or not module:
            problems.append((f"{path}.provider.module", f"control {name!r} must have a module path"))
            continue
        args = prov.get("arguments")
        if args is not None and not isinstance(args, Mapping):
            problems.append((f"{path}.provider.arguments", f"control {name!r}: arguments must be a mapping"))
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            problems.append((f"{path}.provider.module", f"cannot import control module {module!r}: {exc}"))
            continue
        validate = getattr(mod, "validate_control", None)
        if callable(validate):
            try:
                validate(copy.deepcopy(dict(c)))
            except Exception as exc:  # the control's own verdict on its declaration
                problems.append((path, f"control {name!r} is invalid: {type(exc).__name__}: {exc}"))
    return problems
