"""Compile a parsed document (Chaos Toolkit format plus chaoslab's additions) to an
``Experiment``, collecting every problem in one pass.

Chaos Toolkit activities are checked with chaostoolkit-lib's own validators (so a module
or function that does not exist, or arguments that do not fit it, are reported exactly as
``chaos validate`` would), but each message is placed at its field path and line.

chaoslab's concise activity form::

    - do: process.kill            # driver.operation
      target: lab:replica-2
      with: {signal: SIGKILL}
      duration: 20s               # faults: how long the fault is held (its lease follows)
      name: kill-one-replica      # optional; defaults to "process.kill"
"""

from __future__ import annotations

import importlib.util
import numbers
from collections.abc import Mapping
from typing import Any

from chaoslab.drivers import vocabulary
from chaoslab.drivers.base import Kind, Operation, check_args
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.errors import ChaoslabError, InvalidInput, Problem
from chaoslab.model import library, sections
from chaoslab.model.controls import control_problems
from chaoslab.model.experiment import (
    Activity,
    ActivityKind,
    Experiment,
    Hypothesis,
    ProbeSLI,
    Runtime,
)
from chaoslab.model.reader import Document, load_document, plain
from chaoslab.units import parse_duration

CTK_ACTIVITY_TYPES = ("probe", "action")
PROVIDER_TYPES = ("python", "process", "http")
CONCISE_KEYS = frozenset(
    {
        "do",
        "target",
        "with",
        "duration",
        "name",
        "type",
        "timeout",
        "pauses",
        "background",
        "tolerance",
        "ref",
    }
)


def load_experiment(path: str, *, registry: DriverRegistry) -> Experiment:
    """Load, validate and compile ``path``. Raises ``InvalidInput`` with every problem."""
    return compile_document(load_document(path), registry=registry)


def compile_document(doc: Document, *, registry: DriverRegistry) -> Experiment:
    c = _Compiler(doc, registry)
    exp = c.experiment()
    if c.problems:
        raise InvalidInput(c.problems)
    assert exp is not None
    return exp


class _Compiler:
    def __init__(self, doc: Document, registry: DriverRegistry) -> None:
        self.doc = doc
        self.registry = registry
        self.problems: list[Problem] = []
        self.named: dict[str, tuple[dict[str, Any], str]] = {}
        self.warnings: list[str] = []

    def _driver_op(self, driver: str, operation: str) -> Operation | None:
        """A driver's operation for the vocabulary (its extra parameters); None when the
        driver is not installed (the step's driver check reports that)."""
        if driver not in self.registry:
            return None
        try:
            return self.registry.get(driver).operation(operation)
        except ChaoslabError:
            return None

    def bad(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(self.doc.problem(path, message, hint))

    # --- top level ---------------------------------------------------------------------

    def experiment(self) -> Experiment | None:
        d = plain(self.doc.data)
        for key in ("title", "description"):
            v = d.get(key)
            if v is None:
                self.bad(key, f"missing required field {key!r}")
            elif not isinstance(v, str) or not v.strip():
                self.bad(key, f"{key!r} must be a non-empty string")
        tags = d.get("tags", [])
        if not isinstance(tags, list) or any(not isinstance(t, str) or not t for t in tags):
            self.bad("tags", "tags must be a list of non-empty strings")
            tags = []
        for key in ("configuration", "secrets"):
            if key in d and not isinstance(d[key], dict):
                self.bad(key, f"{key!r} must be a mapping")
        if isinstance(d.get("secrets"), dict):
            for scope, values in d["secrets"].items():
                if not isinstance(values, dict):
                    self.bad(f"secrets.{scope}", "each secrets scope must be a mapping of names to values")

        # Index every named activity first so `ref` can point forwards too.
        for section in ("method", "rollbacks"):
            for i, a in enumerate(d.get(section) or [] if isinstance(d.get(section), list) else []):
                if isinstance(a, dict) and isinstance(a.get("name"), str) and "ref" not in a:
                    self.named.setdefault(a["name"], (a, f"{section}[{i}]"))
        ssh = d.get("steady-state-hypothesis")
        if isinstance(ssh, dict) and isinstance(ssh.get("probes"), list):
            for i, a in enumerate(ssh["probes"]):
                if isinstance(a, dict) and isinstance(a.get("name"), str) and "ref" not in a:
                    self.named.setdefault(a["name"], (a, f"steady-state-hypothesis.probes[{i}]"))

        hypothesis = self.hypothesis(ssh) if ssh is not None else None

        method: tuple[Activity, ...] = ()
        if "method" not in d:
            self.bad("method", "missing required field 'method' (it may be an empty list)")
        elif not isinstance(d["method"], list):
            self.bad("method", f"'method' must be a list of activities, got {type(d['method']).__name__}")
        else:
            method = self.activities(d["method"], "method")

        rollbacks: tuple[Activity, ...] = ()
        if "rollbacks" in d:
            if not isinstance(d["rollbacks"], list):
                self.bad("rollbacks", "'rollbacks' must be a list of activities")
            else:
                rollbacks = self.activities(d["rollbacks"], "rollbacks")

        controls = self.controls(d)
        runtime = self.section(sections.decode_runtime(d))
        load = self.section(sections.decode_load(d["load"])) if d.get("load") is not None else None
        lab = d.get("lab", False)
        if not isinstance(lab, bool):
            self.bad("lab", "'lab' must be true or false")
        slos = self.section(sections.decode_slos(d.get("slo", [])))
        sli_probes = self.sli_probes(d.get("sli", []))
        guard = self.section(sections.decode_guard(d["guard"])) if "guard" in d else None
        slo_files = self.section(sections.decode_slo_files(d))
        runbook = self.section(sections.decode_runbook(d.get("runbook")))
        compared = [i for i, o in enumerate(slos or ()) if o.compare is not None]
        if compared and importlib.util.find_spec("scipy") is None:
            self.bad(
                f"slo[{compared[0]}].compare",
                "comparative objectives need scipy, which is not installed",
                hint="pip install 'chaoslab[stats]'",
            )
        known = {p.name for p in sli_probes} | ({"load"} if load is not None else set())
        for i, objective in enumerate(slos or ()):
            if slo_files is None and objective.source not in known:
                where = f"slo[{i}].source" if "source" in d["slo"][i] else f"slo[{i}]"
                self.bad(
                    where,
                    f"objective {objective.name!r} reads SLI source {objective.source!r}, which this "
                    "experiment does not define",
                    hint="add a `load:` section, or a probe SLI under `sli:` with that name",
                )
            if objective.route is not None and (
                objective.source != "load" or load is None or objective.route not in load.routes
            ):
                self.bad(
                    f"slo[{i}].route",
                    f"objective {objective.name!r} reads route {objective.route!r}, "
                    "which the load does not define",
                    hint="name it under load.routes, e.g. routes: {checkout: /checkout}",
                )
        if self.problems:
            return None
        return Experiment(
            title=d["title"],
            description=d["description"],
            source=self.doc.path,
            tags=tuple(tags),
            configuration=d.get("configuration") or {},
            secrets=d.get("secrets") or {},
            hypothesis=hypothesis,
            method=method,
            rollbacks=rollbacks,
            controls=controls,
            runtime=Runtime(**runtime) if runtime else Runtime(),
            needs_lab=lab is True,
            load=load,
            slo=slos or (),
            sli_probes=sli_probes,
            runbook=runbook,
            guard=guard,
            slo_files=slo_files,
            raw=d,
            warnings=tuple(self.warnings),
        )

    def sli_probes(self, raw: Any) -> tuple[ProbeSLI, ...]:
        """``sli: [{name, interval, probe: <activity with a tolerance>}]``."""
        if not isinstance(raw, list):
            self.bad("sli", "'sli' must be a list of {name, interval, probe}")
            return ()
        out: list[ProbeSLI] = []
        for i, entry in enumerate(raw):
            path = f"sli[{i}]"
            if not isinstance(entry, dict):
                self.bad(path, "expected {name, interval, probe}")
                continue
            for key in entry:
                if key not in ("name", "interval", "probe"):
                    self.bad(f"{path}.{key}", f"unknown field {key!r}", hint="name, interval, probe")
            name = entry.get("name")
            if not isinstance(name, str) or not name or name == "load":
                self.bad(f"{path}.name", "a probe SLI needs a name (other than 'load')")
                continue
            interval = self.duration(entry.get("interval", 1.0), f"{path}.interval", positive=True)
            probe = self.activity(entry.get("probe"), f"{path}.probe", hypothesis=True, depth=0)
            if probe is not None and probe.type != "probe":
                self.bad(f"{path}.probe", "an SLI samples a probe, not an action")
                continue
            if probe is not None and interval is not None:
                out.append(ProbeSLI(name=name, interval_s=interval, probe=probe))
        return tuple(out)

    def hypothesis(self, ssh: Any) -> Hypothesis | None:
        path = "steady-state-hypothesis"
        if not isinstance(ssh, dict):
            self.bad(path, "the steady-state hypothesis must be a mapping with a title and probes")
            return None
        title = ssh.get("title")
        if not isinstance(title, str) or not title:
            self.bad(f"{path}.title", "the steady-state hypothesis needs a title")
        probes = ssh.get("probes", [])
        if not isinstance(probes, list):
            self.bad(f"{path}.probes", "'probes' must be a list")
            return None
        compiled = self.activities(probes, f"{path}.probes", hypothesis=True)
        return Hypothesis(title=str(title or ""), probes=compiled)

    def section[T](self, decoded: T | list[Problem]) -> T | None:
        """A decoded section (``chaoslab.model.sections``), its problems placed at their lines."""
        if isinstance(decoded, list):
            for p in decoded:
                self.bad(p.path, p.message, p.hint)
            return None
        return decoded

    def duration(self, value: Any, path: str, *, positive: bool = False) -> float | None:
        try:
            return parse_duration(value, positive=positive, max_s=24 * 3600)
        except ValueError as exc:
            self.bad(path, str(exc))
            return None

    def controls(self, d: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
        """Every control, wherever declared, checked as ``chaos validate`` does (its own
        ``validate_control`` included); the top-level ones are kept on the model."""
        problems = control_problems(d)
        for path, message in problems:
            self.bad(path, message)
        raw = d.get("controls", [])
        if problems or not isinstance(raw, list):
            return ()
        return tuple(raw)

    # --- activities --------------------------------------------------------------------

    def activities(self, raw: list[Any], path: str, *, hypothesis: bool = False) -> tuple[Activity, ...]:
        out = []
        for i, a in enumerate(raw):
            act = self.activity(a, f"{path}[{i}]", hypothesis=hypothesis, depth=0)
            if act is not None:
                out.append(act)
        return tuple(out)

    def activity(self, a: Any, path: str, *, hypothesis: bool, depth: int) -> Activity | None:
        if not isinstance(a, dict) or not a:
            self.bad(path, "an activity must be a non-empty mapping")
            return None
        if "ref" in a:
            return self.ref(a, path, hypothesis=hypothesis, depth=depth)
        if "do" in a:
            return self.concise(a, path, hypothesis=hypothesis)
        return self.ctk(a, path, hypothesis=hypothesis)

    def ref(self, a: dict[str, Any], path: str, *, hypothesis: bool, depth: int) -> Activity | None:
        ref = a["ref"]
        if not isinstance(ref, str) or not ref:
            self.bad(f"{path}.ref", "a ref must be a non-empty string")
            return None
        if depth > 4:
            self.bad(f"{path}.ref", f"ref {ref!r} is circular")
            return None
        if ref in self.named:
            target, _ = self.named[ref]
            merged = {**target, **{k: v for k, v in a.items() if k != "ref"}}
            return self.activity(merged, path, hypothesis=hypothesis, depth=depth + 1)
        try:
            entry = library.find(ref, self.doc.path)
        except InvalidInput as exc:
            self.problems.extend(exc.problems)
            return None
        if entry is None:
            self.bad(
                f"{path}.ref",
                f"ref {ref!r} points to nothing",
                hint="name an activity of this experiment or a file in probes/ or actions/",
            )
            return None
        data = dict(entry.data)
        overrides = {k: v for k, v in a.items() if k != "ref"}
        if "with" in overrides and "do" not in data and isinstance(data.get("provider"), dict):
            prov = dict(data["provider"])
            prov["arguments"] = {**(prov.get("arguments") or {}), **overrides.pop("with")}
            data["provider"] = prov
        elif "with" in overrides and "do" in data:
            data["with"] = {**(data.get("with") or {}), **overrides.pop("with")}
        data.update(overrides)
        sub = _Compiler(entry.document, self.registry)
        sub.named = self.named
        act = sub.activity(data, path, hypothesis=hypothesis, depth=depth + 1)
        for p in sub.problems:
            self.problems.append(
                Problem(
                    file=entry.file,
                    path=p.path,
                    line=p.line,
                    message=f"{p.message} (via ref {ref!r} from {self.doc.path} {path})",
                    hint=p.hint,
                )
            )
        return act

    def common(self, a: dict[str, Any], path: str) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if "timeout" in a:
            t = a["timeout"]
            if isinstance(t, bool) or not isinstance(t, numbers.Number | str):
                self.bad(f"{path}.timeout", "timeout must be a number of seconds")
            else:
                kw["timeout_s"] = self.duration(t, f"{path}.timeout", positive=True)
        pauses = a.get("pauses")
        if pauses is not None:
            if not isinstance(pauses, dict):
                self.bad(f"{path}.pauses", "pauses must be a mapping with before/after")
            else:
                for k in ("before", "after"):
                    if k in pauses:
                        v = pauses[k]
                        if isinstance(v, str) and v.startswith("${"):
                            continue  # substituted at run time
                        kw[f"pause_{k}_s"] = self.duration(v, f"{path}.pauses.{k}")
        if "background" in a:
            if not isinstance(a["background"], bool):
                self.bad(f"{path}.background", "background must be true or false")
            else:
                kw["background"] = a["background"]
        return kw

    def tolerance(self, a: dict[str, Any], path: str, hypothesis: bool) -> dict[str, Any]:
        if "tolerance" not in a:
            if hypothesis:
                self.bad(path, "a steady-state probe needs a tolerance")
            return {}
        tol = a["tolerance"]
        if not isinstance(tol, bool | int | list | str | dict) or isinstance(tol, float):
            self.bad(
                f"{path}.tolerance",
                f"tolerance of the wrong shape: {type(tol).__name__} {tol!r}",
                hint="a boolean, an integer, a string, a list, or a mapping with type regex, jsonpath,"
                " range or probe",
            )
        elif isinstance(tol, dict):
            # only dict tolerances need chaostoolkit-lib's validator (and its imports)
            from chaoslib.hypothesis import ensure_hypothesis_tolerance_is_valid

            try:
                ensure_hypothesis_tolerance_is_valid(tol)
            except Exception as exc:  # InvalidActivity, or plain errors on odd shapes
                self.bad(f"{path}.tolerance", f"tolerance of the wrong shape: {exc}")
        return {"tolerance": tol, "has_tolerance": True}

    def ctk(self, a: dict[str, Any], path: str, *, hypothesis: bool) -> Activity | None:
        before = len(self.problems)
        atype = a.get("type")
        if atype not in CTK_ACTIVITY_TYPES:
            self.bad(f"{path}.type", f"unknown activity type {atype!r}", hint="probe or action")
        name = a.get("name")
        if not isinstance(name, str) or not name:
            self.bad(f"{path}.name", "an activity needs a name")
        provider = a.get("provider")
        if not isinstance(provider, dict):
            self.bad(f"{path}.provider", "an activity needs a provider (or `do: driver.operation`)")
        elif provider.get("type") not in PROVIDER_TYPES:
            self.bad(
                f"{path}.provider.type",
                f"unknown provider type {provider.get('type')!r}",
                hint="python, process or http",
            )
        structural_ok = len(self.problems) == before
        kw = self.common(a, path)
        kw.update(self.tolerance(a, path, hypothesis))
        if structural_ok:
            try:
                _validate_provider(a)
            except Exception as exc:
                if type(exc).__name__ == "InvalidActivity":  # chaoslib's, imported lazily
                    self.bad(f"{path}.provider", str(exc))
                else:  # chaostoolkit-lib raises odd errors on odd input
                    self.bad(
                        f"{path}.provider", f"cannot validate this provider: {type(exc).__name__}: {exc}"
                    )
        if len(self.problems) != before:
            return None
        return Activity(name=a["name"], type=str(atype), kind=ActivityKind.PROVIDER, ctk=a, path=path, **kw)

    def concise(self, a: dict[str, Any], path: str, *, hypothesis: bool) -> Activity | None:
        before = len(self.problems)
        for key in a:
            if key not in CONCISE_KEYS:
                self.bad(
                    f"{path}.{key}",
                    f"unknown field {key!r} in a driver activity",
                    hint="do, target, with, duration, name, timeout, pauses, background, tolerance",
                )
        do = a["do"]
        args = a.get("with", {}) or {}
        if not isinstance(args, dict):
            self.bad(f"{path}.with", "'with' must be a mapping of arguments")
            args = {}
        target = a.get("target")
        has_subst = any(isinstance(v, str) and "${" in v for v in args.values())
        # A target with ``${...}`` is checked by the driver once substituted (at run time,
        # before its fault is prepared), not as the template text.
        target_subst = isinstance(target, str) and "${" in target
        vocab = None
        if isinstance(do, str) and do in vocabulary.BY_NAME:
            # one vocabulary on every target: the target's scheme picks the driver
            vocab, found = vocabulary.resolve(
                do,
                target if isinstance(target, str) else None,
                args,
                driver_op=self._driver_op,
                check=not has_subst,
            )
            for p in found:
                self.problems.append(self.doc.problem(f"{path}.{p.path}", p.message, p.hint))
            if vocab is None:
                return None
        elif not isinstance(do, str) or do.count(".") != 1:
            self.bad(
                f"{path}.do",
                f"'do' must be an operation ({', '.join(vocabulary.BY_NAME)}) or 'driver.operation',"
                f" got {do!r}",
            )
            return None
        if vocab is not None:
            driver_name, op_name = vocab.driver, vocab.driver_operation
            args, target = vocab.args, vocab.target
        else:
            driver_name, op_name = do.split(".")
            if (advice := vocabulary.suggest(driver_name, op_name, target)) is not None:
                self.warnings.append(f"{self.doc.path}: {path}.do: {advice}")
        if driver_name not in self.registry:
            self.bad(
                f"{path}.do",
                f"no driver named {driver_name!r}",
                hint=f"installed: {', '.join(self.registry.names())}",
            )
            return None
        try:
            driver = self.registry.get(driver_name)
        except ChaoslabError as exc:
            self.bad(f"{path}.do", str(exc))
            return None
        op = driver.operation(op_name)
        if op is None:
            self.bad(
                f"{path}.do",
                f"driver {driver_name!r} has no operation {op_name!r}",
                hint=", ".join(o.name for o in driver.operations()),
            )
            return None
        if not has_subst:
            for p in check_args(op, args, f"{path}.with"):
                self.problems.append(self.doc.problem(p.path, p.message, p.hint))
        if op.needs_target and not isinstance(target, str):
            self.bad(f"{path}.target", f"{do} needs a target")
        if len(self.problems) == before and not has_subst and not target_subst:
            params = {param.name for param in op.params}
            for p in driver.validate(op, args, target):
                where = (
                    f"{path}.with.{p.path}" if p.path in params else f"{path}.{p.path}" if p.path else path
                )
                self.problems.append(self.doc.problem(where, p.message, p.hint))
        expected = "action" if op.kind is Kind.FAULT else "probe"
        atype = a.get("type", expected)
        if atype != expected:
            self.bad(f"{path}.type", f"{do} is a {op.kind.value}; its activity type is {expected!r}")
        duration = None
        if "duration" in a:
            if op.kind is not Kind.FAULT:
                self.bad(f"{path}.duration", "only faults have a duration")
            else:
                duration = self.duration(a["duration"], f"{path}.duration", positive=True)
        kw = self.common(a, path)
        kw.update(self.tolerance(a, path, hypothesis))
        if len(self.problems) != before:
            return None
        name = a.get("name") or do
        # Chaos Toolkit's activity shape (a python provider; see chaoslab.drivers.ctk), so
        # journals and controls see a valid CTK activity; the step as written is kept
        # under "chaoslab".
        ctk_shape: dict[str, Any] = {
            "type": expected,
            "name": name,
            "provider": {
                "type": "python",
                "module": "chaoslab.drivers.ctk",
                "func": "operation",
                "arguments": {
                    "do": do,
                    "target": target,
                    "args": args,
                    **({"duration": duration} if duration is not None else {}),
                },
            },
            **{k: a[k] for k in ("tolerance", "background") if k in a},
            **({"timeout": kw["timeout_s"]} if kw.get("timeout_s") is not None else {}),
            "chaoslab": {"driver": driver_name, "operation": op_name, **a},
        }
        raw_pauses: dict[str, Any] = a["pauses"] if isinstance(a.get("pauses"), dict) else {}
        pauses = {
            k: kw[f"pause_{k}_s"] if kw.get(f"pause_{k}_s") is not None else raw_pauses[k]
            for k in ("before", "after")
            if kw.get(f"pause_{k}_s") is not None or k in raw_pauses  # "${var}" stays as written
        }
        if pauses:
            ctk_shape["pauses"] = pauses
        return Activity(
            name=name,
            type=expected,
            kind=ActivityKind.DRIVER,
            ctk=ctk_shape,
            path=path,
            driver=driver_name,
            operation=op_name,
            target=target,
            args=args,
            duration_s=duration,
            **kw,
        )


class _InvalidActivity(Exception):
    """Our own process-provider check's failure, reported like chaostoolkit-lib's."""


_InvalidActivity.__name__ = "InvalidActivity"


def _validate_provider(activity: dict[str, Any]) -> None:
    """chaostoolkit-lib's per-provider validation (module/function exist, arguments fit,
    executable found, URL present), imported per provider type: see ``run_provider``."""
    kind = activity["provider"]["type"]
    if kind == "python":
        from chaoslib.provider.python import validate_python_activity

        validate_python_activity(activity)
    elif kind == "process":
        from chaoslab.engine.ctkprocess import validate_process

        if problem := validate_process(activity):
            raise _InvalidActivity(problem)
    else:
        from chaoslib.provider.http import validate_http_activity

        validate_http_activity(activity)


def validate_file(path: str, *, registry: DriverRegistry) -> list[Problem]:
    try:
        load_experiment(path, registry=registry)
    except InvalidInput as exc:
        return list(exc.problems)
    return []


__all__ = ["compile_document", "load_document", "load_experiment", "validate_file"]
