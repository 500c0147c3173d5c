"""Typed, frozen models of the experiment's chaoslab sections, decoded once at load time.

``load``, ``slo``, ``guard``, ``slo_files`` (with ``prometheus``, ``allowance``,
``budget_gate``), ``runtime``, ``windows`` and ``runbook`` are decoded by msgspec into
the Structs below: types, ranges, patterns and unknown keys are the schema's job
(``Meta`` constraints), and every duration goes through the one grammar of
``chaoslab.units`` (the ``Seconds`` field types). Hand-written checks remain only for
what a schema cannot say: which keys apply to which SLI kind, and references between
objectives. Code downstream takes these models; nothing re-parses the raw sections.

Each ``decode_*`` function returns the model or a list of ``Problem``s whose ``path`` is
the field path in the experiment (the compiler adds file and line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from chaoslab.errors import Problem
from chaoslab.model.reader import plain
from chaoslab.units import MAX_DURATION_S, parse_duration


class Strategy(StrEnum):
    """Chaos Toolkit's hypothesis strategies."""

    DEFAULT = "default"
    BEFORE_ONLY = "before-method-only"
    AFTER_ONLY = "after-method-only"
    DURING_ONLY = "during-method-only"
    CONTINUOUSLY = "continuously"

    @property
    def before(self) -> bool:
        return self in (Strategy.DEFAULT, Strategy.BEFORE_ONLY, Strategy.CONTINUOUSLY)

    @property
    def after(self) -> bool:
        return self in (Strategy.DEFAULT, Strategy.AFTER_ONLY, Strategy.CONTINUOUSLY)

    @property
    def during(self) -> bool:
        return self in (Strategy.DURING_ONLY, Strategy.CONTINUOUSLY)


class RollbackStrategy(StrEnum):
    """Accepted for compatibility. chaoslab's default is ALWAYS (Chaos Toolkit: DEFAULT)."""

    ALWAYS = "always"
    DEFAULT = "default"
    NEVER = "never"
    DEVIATED = "deviated"


# --- durations: one grammar, bounds per field ----------------------------------------------


if TYPE_CHECKING:  # the decoded values are plain floats; the classes only pick the bounds
    Seconds = float
    PositiveSeconds = float
    DaySeconds = float
    PositiveDaySeconds = float
    GuardSeconds = float
    UnitSeconds = float
else:

    class Seconds(float):
        """A duration field: ``10s``, ``500ms``, ``2m`` or seconds; finite and ``>= 0``."""

        positive: ClassVar[bool] = False
        max_s: ClassVar[float] = MAX_DURATION_S
        unit_required: ClassVar[bool] = False

    class PositiveSeconds(Seconds):
        positive = True

    class DaySeconds(Seconds):
        """Windows and run-level deadlines: at most a day."""

        max_s = 86400.0

    class PositiveDaySeconds(DaySeconds):
        positive = True

    class GuardSeconds(Seconds):
        """Guard windows: positive, at most an hour."""

        positive = True
        max_s = 3600.0

    class UnitSeconds(Seconds):
        """SLO thresholds: positive and written with a unit (``250ms``: is 250 ms or s?)."""

        positive = True
        unit_required = True


def _dec_hook(tp: type, obj: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, Seconds) and tp is not float:
        if getattr(tp, "unit_required", False) and not isinstance(obj, str):
            raise ValueError(f"give the duration with a unit, got {obj!r} (e.g. 250ms or 10s)")
        seconds = parse_duration(
            obj, positive=getattr(tp, "positive", False), max_s=getattr(tp, "max_s", None)
        )
        return tp(seconds)
    # msgspec's dec_hook protocol: NotImplementedError means "not a type this hook decodes"
    raise NotImplementedError(f"no decoder for {tp}")


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")
_MISSING = re.compile(r"Object missing required field `(.*)`")
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
MAX_PROBLEMS = 50


def decode[T](raw: Any, tp: type[T], path: str, hint: str | None = None) -> T | list[Problem]:
    """``raw`` as ``tp`` (msgspec, strict types), or every problem at its field path.

    msgspec stops at the first error; to report them all in one pass the offending key
    is dropped from a copy and the decoding repeated (bounded by ``MAX_PROBLEMS``).
    """
    problems: list[Problem] = []
    dropped: set[str] = set()
    for _ in range(2 * MAX_PROBLEMS):  # each pass drops a key: bounded by the input too
        if len(problems) >= MAX_PROBLEMS:
            break
        try:
            value = msgspec.convert(raw, tp, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            m = _AT.match(str(exc))
            message, at = (m.group(1), m.group(2) or "") if m else (str(exc), "")
            keys: list[str | int] = [k if k else int(i) for k, i in _TOKEN.findall(at)]
            removable = True
            if found := _UNKNOWN.match(message):
                keys.append(found.group(1))
                message = f"unknown field {found.group(1)!r}"
            elif found := _MISSING.match(message):
                keys.append(found.group(1))
                message = f"missing required field {found.group(1)!r}"
                removable = False
            where = path + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)
            if where in dropped:  # missing because we dropped it: drop what holds it
                raw = _without(raw, keys[:-1])
                if raw is None:
                    break
                continue
            dropped.add(where)
            message = message.replace("`", "").replace("Expected", "expected")
            problems.append(Problem(path=where.lstrip("."), message=message, hint=hint))
            raw = _without(raw, keys) if removable else None
            if raw is None:
                break
        else:
            return value if not problems else problems
    return problems


def _without(raw: Any, keys: list[str | int]) -> Any:
    """A copy of ``raw`` without the mapping key holding ``keys`` (None if there is none)."""
    while keys and isinstance(keys[-1], int):
        keys = keys[:-1]
    if not keys:
        return None
    copy = plain(raw)
    node = copy
    try:
        for k in keys[:-1]:
            node = node[k]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(node, dict) or keys[-1] not in node:
        return None
    del node[keys[-1]]
    return copy


class _Frozen(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    def __post_init__(self) -> None:
        # A duration decodes as its ``Seconds`` class (msgspec checks the hook's type);
        # keep plain floats in the model so it encodes anywhere.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and type(value) is not float:
                msgspec.structs.force_setattr(self, name, float(value))


# --- load -----------------------------------------------------------------------------------


class LoadSpec(_Frozen, frozen=True, kw_only=True):
    """The experiment's ``load:`` block: open-loop synthetic requests."""

    target: Annotated[str, Meta(pattern=r"^(lab:.+|https?://.+)$")]  # lab:lb, lab:replica-1, URL
    path: Annotated[str, Meta(pattern=r"^/")] = "/"
    rate: Annotated[float, Meta(gt=0, le=100_000)] = 100.0
    timeout_s: PositiveSeconds = msgspec.field(default=2.0, name="timeout")
    method: Literal["GET", "HEAD"] = "GET"
    max_duration_s: PositiveSeconds = msgspec.field(default=3600.0, name="max_duration")
    connections: Annotated[int, Meta(ge=1, le=10_000)] = 256
    # Named routes (name → path): requests take them in turn instead of ``path``, and
    # objectives with ``route: NAME`` are judged on that route's requests only.
    routes: Annotated[
        dict[Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,40}$")], Annotated[str, Meta(pattern=r"^/")]],
        Meta(max_length=32),
    ] = msgspec.field(default_factory=dict)


LOAD_HINT = "e.g. {target: 'lab:lb', rate: 200, timeout: 2s}; target is lab:<name> or an http(s) URL"


def decode_load(raw: Any, path: str = "load") -> LoadSpec | list[Problem]:
    return decode(raw, LoadSpec, path, LOAD_HINT)


# --- slo ------------------------------------------------------------------------------------

Window = Literal["baseline", "during", "after"]
WINDOWS: tuple[Window, ...] = ("baseline", "during", "after")
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MAX_RATIO = 1.2
DEFAULT_MAX_INCREASE = 0.01
DEFAULT_MIN_SAMPLES = 20


class SLIKind(StrEnum):
    AVAILABILITY = "availability"
    LATENCY = "latency"
    ERROR_RATE = "error-rate"
    TIME_TO_RECOVER = "time-to-recover"


class SLO(_Frozen, frozen=True, kw_only=True):
    """One objective. Exactly the fields its kind needs are set (``decode_slos`` ensures it)."""

    name: Annotated[str, Meta(min_length=1)]
    sli: SLIKind
    objective: Annotated[float, Meta(gt=0, lt=1)] | None = None  # a ratio in (0, 1)
    threshold_s: UnitSeconds | None = msgspec.field(default=None, name="threshold")
    percentile: Annotated[float, Meta(gt=0, lt=100)] | None = None  # for "pXX ≤ T"
    of: str | None = None  # TTR: name of the objective that must hold again
    from_event: Literal["start", "revert"] = msgspec.field(default="start", name="from")
    stable_s: UnitSeconds = msgspec.field(default=3.0, name="stable")
    windows: Annotated[tuple[Window, ...], Meta(min_length=1)] = WINDOWS
    confidence: Annotated[float, Meta(ge=0.5, lt=1)] = DEFAULT_CONFIDENCE
    source: str = "load"
    critical: bool = True  # a non-critical objective informs, never decides the run
    compare: Literal["baseline"] | None = None  # judged against the run's baseline window
    max_ratio: Annotated[float, Meta(ge=1, le=1000)] = DEFAULT_MAX_RATIO  # compare, latency
    max_increase: Annotated[float, Meta(ge=0, le=0.99)] = DEFAULT_MAX_INCREASE  # compare, ratios
    min_samples: Annotated[int, Meta(ge=1, le=1_000_000)] = DEFAULT_MIN_SAMPLES  # compare, each side
    no_data: Literal["inconclusive", "pass", "fail"] = "inconclusive"  # compare: too few samples
    route: str | None = None  # judged on the load's requests of this route only (load.routes)

    def describe(self) -> str:
        what = self._describe()
        return what if self.route is None else f"{what} on route {self.route}"

    def _describe(self) -> str:
        if self.compare is not None:
            if self.sli is SLIKind.LATENCY:
                return f"latency ≤ {self.max_ratio:g}× {self.compare}"
            what = "unavailability" if self.sli is SLIKind.AVAILABILITY else "error rate"
            return f"{what} ≤ {self.compare} + {self.max_increase:g}"
        if self.sli is SLIKind.AVAILABILITY:
            return f"availability ≥ {self.objective:g}"
        if self.sli is SLIKind.ERROR_RATE:
            return f"error rate ≤ {self.objective:g}"
        if self.sli is SLIKind.LATENCY:
            ms = f"{(self.threshold_s or 0) * 1000:g}ms"
            if self.percentile is not None:
                return f"p{self.percentile:g} ≤ {ms}"
            return f"fraction ≤ {ms} is ≥ {self.objective:g}"
        return f"time to recover {self.of} ≤ {self.threshold_s:g}s (from {self.from_event})"


_COMMON = {"name", "sli", "windows", "confidence", "source", "critical", "route"}
SLO_KEYS = {
    SLIKind.AVAILABILITY: _COMMON | {"objective"},
    SLIKind.ERROR_RATE: _COMMON | {"objective"},
    SLIKind.LATENCY: _COMMON | {"objective", "threshold", "percentile"},
    SLIKind.TIME_TO_RECOVER: _COMMON | {"threshold", "of", "from", "stable"},
}
_COMPARE_COMMON = _COMMON | {"compare", "min_samples", "no_data"}
COMPARE_KEYS = {
    SLIKind.AVAILABILITY: _COMPARE_COMMON | {"max_increase"},
    SLIKind.ERROR_RATE: _COMPARE_COMMON | {"max_increase"},
    SLIKind.LATENCY: _COMPARE_COMMON | {"max_ratio"},
    SLIKind.TIME_TO_RECOVER: set(),
}
_COMPARE_ONLY = ("max_ratio", "max_increase", "min_samples", "no_data")
_REQUIRED = {
    SLIKind.AVAILABILITY: ("objective",),
    SLIKind.ERROR_RATE: ("objective",),
    SLIKind.LATENCY: ("threshold",),
    SLIKind.TIME_TO_RECOVER: ("threshold", "of"),
}
SLO_HINT = "e.g. {name: availability, sli: availability, objective: 0.99}"


def _kind_problems(entry: Mapping[str, Any], slo: SLO, where: str) -> list[Problem]:
    """What the schema cannot say: which keys apply to which kind of objective."""
    kind = slo.sli.value
    if slo.compare is not None:
        if slo.sli is SLIKind.TIME_TO_RECOVER:
            return [Problem(path=f"{where}.compare", message="a time-to-recover objective cannot compare")]
        allowed = COMPARE_KEYS[slo.sli]
        found = [
            Problem(
                path=f"{where}.{key}",
                message=f"{key!r} does not apply to a {kind} objective with compare: baseline",
                hint=f"allowed: {', '.join(sorted(allowed))}",
            )
            for key in entry
            if key not in allowed
        ]
        if "baseline" in entry.get("windows", ()):
            found.append(
                Problem(
                    path=f"{where}.windows",
                    message="the baseline is what a comparative objective compares with: "
                    "judge it in during or after",
                )
            )
        return found
    allowed = SLO_KEYS[slo.sli]
    found = [
        Problem(
            path=f"{where}.{key}",
            message=f"{key!r} does not apply to a {kind} objective",
            hint=f"allowed: {', '.join(sorted(allowed))}"
            + (
                "; max_ratio, max_increase, min_samples and no_data go with compare: baseline"
                if key in _COMPARE_ONLY
                else ""
            ),
        )
        for key in entry
        if key not in allowed
    ]
    found += [
        Problem(path=f"{where}.{key}", message=f"a {kind} objective needs {key!r}")
        for key in _REQUIRED[slo.sli]
        if key not in entry
    ]
    if slo.sli is SLIKind.LATENCY and ("percentile" in entry) == ("objective" in entry):
        found.append(
            Problem(
                path=f"{where}.{'objective' if 'objective' in entry else 'percentile'}",
                message="a latency objective needs either 'percentile' (pXX ≤ threshold) or "
                "'objective' (fraction within threshold), not both",
                hint="percentile: 99, or objective: 0.95",
            )
        )
    return found


def decode_slos(raw: Any, path: str = "slo") -> tuple[SLO, ...] | list[Problem]:
    """The ``slo:`` list as frozen SLOs, or every problem with its field path."""
    if not isinstance(raw, list):
        return [Problem(path=path, message="expected a list of objectives", hint=SLO_HINT)]
    problems: list[Problem] = []
    slos: list[SLO] = []
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        slo = decode(entry, SLO, where, SLO_HINT)
        if isinstance(slo, list):
            problems += slo
            continue
        found = _kind_problems(entry, slo, where) if isinstance(entry, dict) else []
        problems += found
        if not found:
            windows = slo.windows
            if slo.compare is not None and "windows" not in entry:
                windows = ("during", "after")  # the baseline is what it compares with
            slos.append(msgspec.structs.replace(slo, windows=tuple(w for w in WINDOWS if w in windows)))
    names = [s.name for s in slos]
    by_name = {s.name: s for s in slos}
    for i, slo in enumerate(slos):
        if names.index(slo.name) != i:
            problems.append(
                Problem(path=f"{path}[{i}].name", message=f"duplicate objective name {slo.name!r}")
            )
        if slo.sli is SLIKind.TIME_TO_RECOVER and not problems:
            target = by_name.get(slo.of or "")
            if target is None or target.sli is SLIKind.TIME_TO_RECOVER:
                problems.append(
                    Problem(
                        path=f"{path}[{i}].of",
                        message=f"no objective named {slo.of!r} that is not time-to-recover",
                        hint=f"one of: {', '.join(n for n in names if n != slo.name) or 'none'}",
                    )
                )
    return problems if problems else tuple(slos)


# --- guard ----------------------------------------------------------------------------------


DEFAULT_RISK = 0.01  # at most 1 run in 100 aborted while the system is within tolerance


class HardLimit(_Frozen, frozen=True, kw_only=True):
    error_rate: Annotated[float, Meta(gt=0, le=1)]
    for_s: GuardSeconds = msgspec.field(default=2.0, name="for")


class GuardSection(_Frozen, frozen=True, kw_only=True):
    """The ``guard:`` section as written; ``safety.guard`` fills in the run's defaults."""

    enabled: bool = True
    sequential: bool = True  # the sequential test on the bad-request rate (safety.guard)
    risk: Annotated[float, Meta(gt=0, le=0.5)] = DEFAULT_RISK  # false-abort risk
    allowance: Annotated[int, Meta(ge=0)] | None = None
    burn_rate: Annotated[float, Meta(ge=1)] | None = None
    burn_window_s: GuardSeconds = msgspec.field(default=5.0, name="burn_window")
    objective: Annotated[float, Meta(ge=0, le=0.99999)] | None = None
    hard_limit: HardLimit | bool | None = msgspec.field(default_factory=lambda: HardLimit(error_rate=0.5))
    silence_s: GuardSeconds | None = msgspec.field(default=None, name="silence")
    slow_s: GuardSeconds | None = msgspec.field(default=None, name="slow")  # None: the load's overdue age


GUARD_HINT = (
    "risk, sequential, slow, allowance, burn_rate, burn_window, objective, "
    "hard_limit: {error_rate, for}, silence, enabled"
)


def decode_guard(raw: Any, path: str = "guard") -> GuardSection | list[Problem]:
    guard = decode({} if raw is None else raw, GuardSection, path, GUARD_HINT)
    if isinstance(guard, GuardSection) and guard.hard_limit is True:
        return [Problem(path=f"{path}.hard_limit", message="must be {error_rate: 0.5, for: 2s} or false")]
    return guard


# --- SLO files ------------------------------------------------------------------------------

DEFAULT_SHARE = 0.05
SLO_FILE_KEYS = ("slo_files", "prometheus", "allowance", "budget_gate")


class _Allowance(_Frozen, frozen=True, kw_only=True):
    budget_share: Annotated[float, Meta(gt=0, le=1)] = DEFAULT_SHARE


class _BudgetGate(_Frozen, frozen=True, kw_only=True):
    override: bool = False
    reason: str = ""


class _SLOFilesRaw(_Frozen, frozen=True, kw_only=True):
    slo_files: Annotated[tuple[Annotated[str, Meta(min_length=1)], ...], Meta(min_length=1)]
    prometheus: Annotated[str, Meta(pattern=r"^https?://")] | None = None
    allowance: _Allowance = msgspec.field(default_factory=_Allowance)
    budget_gate: _BudgetGate = msgspec.field(default_factory=_BudgetGate)


class SLOFiles(_Frozen, frozen=True, kw_only=True):
    """``slo_files`` with ``prometheus``, ``allowance`` and ``budget_gate``."""

    files: tuple[str, ...]
    prometheus: str | None = None
    budget_share: float = DEFAULT_SHARE
    override: bool = False
    reason: str = ""


def decode_slo_files(raw: Mapping[str, Any]) -> SLOFiles | None | list[Problem]:
    """The SLO-file keys of the experiment (``raw`` is the whole document)."""
    keys = {k: raw[k] for k in SLO_FILE_KEYS if k in raw}
    if "slo_files" not in keys:
        return [Problem(path=k, message="applies only with slo_files") for k in keys] or None
    section = decode(keys, _SLOFilesRaw, "", "slo_files: [slos/x.yaml], prometheus: http://…")
    if isinstance(section, list):
        return section
    return SLOFiles(
        files=section.slo_files,
        prometheus=section.prometheus,
        budget_share=section.allowance.budget_share,
        override=section.budget_gate.override,
        reason=section.budget_gate.reason,
    )


# --- runtime and windows ----------------------------------------------------------------------


class _HypothesisRuntime(_Frozen, frozen=True, kw_only=True):
    strategy: Strategy = Strategy.DEFAULT
    frequency: PositiveDaySeconds = 1.0
    fail_fast: bool = False


class _RollbacksRuntime(_Frozen, frozen=True, kw_only=True):
    strategy: RollbackStrategy = RollbackStrategy.ALWAYS


class RuntimeSection(_Frozen, frozen=True, kw_only=True):
    """Chaos Toolkit's ``runtime:`` plus chaoslab's ``activity_timeout``."""

    hypothesis: _HypothesisRuntime | None = None
    rollbacks: _RollbacksRuntime | None = None
    activity_timeout: PositiveDaySeconds | None = None


class Windows(_Frozen, frozen=True, kw_only=True):
    """Observation windows around the method."""

    baseline: DaySeconds | None = None
    recovery: DaySeconds | None = None
    after: DaySeconds | None = None


class _TopLevelTimes(msgspec.Struct, frozen=True, kw_only=True):
    timeout: PositiveDaySeconds | None = None  # the whole run's deadline
    lease: PositiveDaySeconds | None = None  # default lease of a fault with no duration


RUNTIME_HINT = "{hypothesis: {strategy, frequency, fail_fast}, rollbacks: {strategy}, activity_timeout}"


def decode_runtime(raw: Mapping[str, Any]) -> dict[str, Any] | list[Problem]:
    """Keyword arguments of ``Runtime`` from ``runtime``, ``windows``, ``timeout``, ``lease``."""
    problems: list[Problem] = []
    rt = decode(raw.get("runtime") or {}, RuntimeSection, "runtime", RUNTIME_HINT)
    win = decode(raw.get("windows") or {}, Windows, "windows", "{baseline: 5s, recovery: 2s, after: 5s}")
    top = decode({k: raw[k] for k in ("timeout", "lease") if k in raw}, _TopLevelTimes, "")
    for part in (rt, win, top):
        if isinstance(part, list):
            problems += part
    if problems:
        return problems
    assert isinstance(rt, RuntimeSection) and isinstance(win, Windows) and isinstance(top, _TopLevelTimes)
    kw: dict[str, Any] = {}
    if rt.hypothesis is not None:
        kw.update(
            strategy=rt.hypothesis.strategy,
            frequency_s=float(rt.hypothesis.frequency),
            fail_fast=rt.hypothesis.fail_fast,
        )
    if rt.rollbacks is not None:
        kw["rollback"] = rt.rollbacks.strategy
    if rt.activity_timeout is not None:
        kw["activity_timeout_s"] = rt.activity_timeout
    if top.timeout is not None:
        kw["timeout_s"] = top.timeout
    if top.lease is not None:
        kw["lease_s"] = top.lease
    observing = raw.get("load") is not None
    kw["baseline_s"] = win.baseline if win.baseline is not None else (5.0 if observing else 0.0)
    kw["recovery_s"] = win.recovery if win.recovery is not None else 0.0
    kw["after_s"] = win.after if win.after is not None else (5.0 if observing else 0.0)
    return kw


# --- runbook ------------------------------------------------------------------------------------


class Runbook(_Frozen, frozen=True, kw_only=True):
    """``runbook:`` as a URL string, a list of steps, or ``{url, steps}``."""

    url: str | None = None
    steps: tuple[str, ...] = ()


def decode_runbook(raw: Any, path: str = "runbook") -> Runbook | None | list[Problem]:
    if raw is None:
        return None
    if isinstance(raw, str):
        return Runbook(url=raw.strip()) if raw.strip() else None
    if isinstance(raw, list):
        steps = decode(raw, tuple[str, ...], path, "a list of steps as text")
        if isinstance(steps, list):
            return steps
        kept = tuple(s for s in steps if s.strip())
        return Runbook(steps=kept) if kept else None
    book = decode(raw, Runbook, path, "a URL, a list of steps, or {url, steps}")
    if isinstance(book, list):
        return book
    return book if book.url or book.steps else None
