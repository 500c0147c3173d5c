"""Chaos Toolkit controls, called with ``chaos run``'s semantics at every level.

Which controls apply where is chaostoolkit-lib's rule (``chaoslib.control``): controls
declared on the experiment apply at the experiment, method and rollback levels and, when
``automatic`` (the default), around the hypothesis and every activity; controls declared
on the hypothesis or on an activity (``method[n].controls``) apply there, and a ``ref``
points at a top-level control. Each hook is called through chaostoolkit-lib's own
``apply_python_control`` / ``initialize_control`` / ``cleanup_control``, so a hook gets
exactly the arguments ``chaos run`` gives it: ``context``, ``state``, ``experiment``,
``configuration``, ``secrets``, ``settings``, ``extensions`` and the control's own
``arguments`` (substituted).

What chaoslab does differently, on purpose:

- no module-level state: chaostoolkit-lib keeps global controls in a module list; here
  every run owns its ``Controls`` and its one mutable copy of the experiment document,
  which is both the ``experiment`` argument and the ``context`` of the experiment,
  method and rollback hooks (the hypothesis and activity contexts are the mappings inside
  it), so what ``before_experiment_control`` stores in its context is still there for
  every later hook of the same run — and only of that run;
- a hook that fails is reported (an event, the console, the journal), not only logged
  at debug level; as in Chaos Toolkit the run carries on;
- ``InterruptExecution`` and ``SystemExit`` from a hook become ``ControlInterrupted``,
  which ends the run through the runner's wind-down (faults reverted, rollbacks run per
  strategy, journal written).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from chaoslab.errors import ControlInterrupted
from chaoslab.model.controls import declared

LEVELS = ("experiment", "hypothesis", "method", "rollback", "activity")

ErrorReport = Callable[[str, str, str], None]  # (control name, hook, error)

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _activities(doc: Mapping[str, Any]) -> list[Any]:
    ssh = doc.get("steady-state-hypothesis")
    probes = ssh.get("probes") if isinstance(ssh, Mapping) else None
    out: list[Any] = []
    for section in (probes, doc.get("method"), doc.get("rollbacks")):
        if isinstance(section, list):
            out.extend(section)
    return out


def _named(activity: Any, name: Any) -> bool:
    return isinstance(activity, dict) and "ref" not in activity and activity.get("name") == name


def context_controls(level: str, experiment: Mapping[str, Any], context: Mapping[str, Any]) -> list[Any]:
    """The controls that apply at ``level`` for ``context``: chaoslib's
    ``get_context_controls`` rule, quirks included, without its global controls."""
    if not experiment:
        return []
    top_level = experiment.get("controls") or []
    controls = list(context.get("controls") or [])
    if not top_level:
        return controls
    if not controls or level in ("method", "rollback"):
        return [copy.deepcopy(c) for c in top_level if c.get("automatic", True)]
    for c in controls[:]:
        if "ref" in c:
            for top in top_level:
                if c["ref"] == top.get("name"):
                    controls.append(copy.deepcopy(top))
                    break
        else:
            for top in reversed(top_level):
                if c.get("name") == top.get("name"):
                    continue
                if level != "experiment" and top.get("automatic", True):
                    controls.insert(0, copy.deepcopy(top))
    return controls


class Scope:
    """What a block hands to its ``after`` hook (chaoslib's ``Control.with_state``)."""

    def __init__(self) -> None:
        self.state: Any = None


class Controls:
    """The controls of one run. ``experiment`` becomes the run's one shared document."""

    def __init__(
        self,
        experiment: Mapping[str, Any],
        *,
        settings: Mapping[str, Any] | None = None,
        report: ErrorReport | None = None,
    ) -> None:
        self.experiment: dict[str, Any] = copy.deepcopy(dict(experiment))
        self.active = bool(declared(self.experiment))
        self.settings = settings
        self.configuration: dict[str, Any] = {}
        self.secrets: dict[str, Any] = {}
        self.errors: list[str] = []
        self._report = report
        self._contexts: dict[str, dict[str, Any]] = {}

    # --- contexts ----------------------------------------------------------------------

    @property
    def hypothesis(self) -> dict[str, Any]:
        ssh = self.experiment.get("steady-state-hypothesis")
        return ssh if isinstance(ssh, dict) else {}

    def activity_context(self, path: str, fallback: Mapping[str, Any]) -> dict[str, Any]:
        """The mapping inside the run's document that an activity's hooks see as
        ``context`` (the referenced activity for a ``ref``, as chaoslib's lookup does)."""
        if path in self._contexts:
            return self._contexts[path]
        node: Any = self.experiment
        for name, index in _SEGMENT.findall(path):
            try:
                node = node[int(index)] if index else node[name]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if isinstance(node, dict) and "ref" in node:
            ref = node["ref"]
            node = next((a for a in _activities(self.experiment) if _named(a, ref)), None)
        context: dict[str, Any] = node if isinstance(node, dict) else copy.deepcopy(dict(fallback))
        self._contexts[path] = context
        return context

    # --- hooks -------------------------------------------------------------------------

    def configure(self, configuration: dict[str, Any], secrets: dict[str, Any]) -> None:
        """``configure_control`` once per control name (chaoslib's ``initialize_controls``).

        The run's own dicts, not copies: as in Chaos Toolkit, what ``configure_control``
        adds to them (a secret scope, a configuration key) is what the activities get."""
        self.configuration = configuration
        self.secrets = secrets
        if not self.active:
            return
        from chaoslib.control.python import initialize_control

        for control in self._unique():
            try:
                initialize_control(
                    control, self.experiment, self.configuration, self.secrets, settings=self.settings
                )
            except Exception as exc:
                self._failed(control, "configure_control", exc)

    def cleanup(self) -> None:
        """``cleanup_control`` once per control name; a failure is reported, never raised."""
        if not self.active:
            return
        from chaoslib.control.python import cleanup_control

        for control in self._unique():
            try:
                cleanup_control(control)
            except Exception as exc:
                self._failed(control, "cleanup_control", exc)
            except SystemExit as exc:  # the run is over: nothing left to interrupt
                self._failed(control, "cleanup_control", exc)

    @contextmanager
    def around(self, level: str, context: Mapping[str, Any]) -> Iterator[Scope]:
        """``before_<level>_control``, the block, then ``after_<level>_control`` with the
        block's state — the after hook runs even when the block or the before hook raised,
        as with chaoslib's ``controls`` context manager."""
        scope = Scope()
        if not self.active:
            yield scope
            return
        try:
            self.apply(level, context, "before")
            yield scope
        finally:
            self.apply(level, context, "after", scope.state)

    def apply(self, level: str, context: Mapping[str, Any], scope: str, state: Any = None) -> None:
        if not self.active:
            return
        from chaoslib.control.python import apply_python_control
        from chaoslib.exceptions import InterruptExecution

        hook = f"{scope}_{level}_control"
        for control in context_controls(level, self.experiment, context):
            target_scope = control.get("scope")
            if target_scope and target_scope != scope:
                continue
            provider = control.get("provider") or {}
            if provider.get("type") != "python":
                continue
            name = str(control.get("name"))
            try:
                apply_python_control(
                    level=f"{level}-{scope}",
                    control=control,
                    experiment=self.experiment,
                    context=context,
                    state=state,
                    configuration=self.configuration,
                    secrets=self.secrets,
                    settings=self.settings,
                )
            except InterruptExecution as exc:
                raise ControlInterrupted(name, hook, str(exc) or "InterruptExecution") from exc
            except SystemExit as exc:
                raise ControlInterrupted(
                    name, hook, f"SystemExit({exc.code})", graceful=exc.code != 30
                ) from exc
            except Exception as exc:  # as in Chaos Toolkit the run carries on, but it is reported
                self._failed(control, hook, exc)

    # --- internals ---------------------------------------------------------------------

    def _unique(self) -> list[Any]:
        seen: set[str] = set()
        out = []
        for _, control in declared(self.experiment):
            name = control.get("name") if isinstance(control, Mapping) else None
            if not name or name in seen:
                continue
            seen.add(name)
            if (control.get("provider") or {}).get("type") == "python":
                out.append(control)
        return out

    def _failed(self, control: Mapping[str, Any], hook: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        name = str(control.get("name"))
        self.errors.append(f"control {name}.{hook}: {error}")
        if self._report is not None:
            self._report(name, hook, error)


def written(before: Any, after: Any) -> dict[str, Any]:
    """What a hook added or changed in a mapping state (top-level keys), or, for a list
    of runs, per index (``{"0": {...}}``) — the part of a control's writes that the
    journal folds in."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return {k: v for k, v in after.items() if k not in before or before[k] != v}
    if isinstance(before, list) and isinstance(after, list):
        out: dict[str, Any] = {}
        for i, (old, new) in enumerate(zip(before, after, strict=False)):
            changed = written(old, new)
            if changed:
                out[str(i)] = changed
        return out
    return {}
