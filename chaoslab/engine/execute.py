"""Executing one activity under a deadline.

Chaos Toolkit provider activities (python, process, http) are executed by
chaostoolkit-lib's ``run_activity``, tolerances judged by its ``within_tolerance``;
chaoslab adds the deadline. Driver probes call the driver.

Every activity runs on its own daemon thread and the caller waits with a deadline: a
hung activity is abandoned (reported ``timed-out``) and can never keep rollbacks or
reverts from running, nor keep the process from exiting.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from chaoslab.drivers.base import DriverContext, check_args, with_defaults
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.proctree import ActivityTrees
from chaoslab.engine.signals import HANDLED
from chaoslab.errors import ChaoslabError, InvalidInput
from chaoslab.model.experiment import Activity, ActivityKind


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # succeeded | failed | timed-out
    output: Any
    error: str | None
    start: float
    end: float
    tolerance_met: bool | None = None
    exception: BaseException | None = None


class Deadline(Exception):
    pass


def call_with_deadline(
    fn: Callable[[], Any], timeout_s: float | None, name: str, tick: Callable[[], None] | None = None
) -> Any:
    """Run ``fn`` on a daemon thread; raise ``Deadline`` if it outlives ``timeout_s``.

    The caller's thread only waits, so signal handlers (Ctrl-C) still run promptly.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the caller's mask, for what it spawns
        try:
            box["value"] = fn()
        except BaseException as exc:  # carried back to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    t = threading.Thread(target=target, name=f"activity:{name}", daemon=True)
    # The run's signal handler raises in this (main) thread. Landing inside
    # ``Thread.start`` it would make CPython forget a thread that did start (whose
    # bootstrap then dies with a KeyError traceback): hold those signals for the start
    # only; a pending one is delivered right after.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        t.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    # Wait in short slices so a signal handler in the main thread can interrupt us.
    end = None if timeout_s is None else time.monotonic() + timeout_s
    while not done.wait(0.05 if end is None else max(0.0, min(0.05, end - time.monotonic()))):
        if tick is not None:
            tick()
        if end is not None and time.monotonic() >= end:
            raise Deadline(f"{name} exceeded its deadline of {timeout_s:g}s and was abandoned")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def has_placeholder(value: Any) -> bool:
    """Whether ``value`` holds a ``${...}`` anywhere (then chaostoolkit-lib substitutes)."""
    if isinstance(value, str):
        return "$" in value
    if isinstance(value, Mapping):
        return any(has_placeholder(k) or has_placeholder(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_placeholder(v) for v in value)
    return False


def substitute(value: Any, configuration: Mapping[str, Any], secrets: Mapping[str, Any]) -> Any:
    """chaostoolkit-lib's ``${}`` substitution (imported only when there is something to do)."""
    if not has_placeholder(value):
        return copy.deepcopy(value)
    from chaoslib import substitute as ctk_substitute

    return ctk_substitute(copy.deepcopy(value), dict(configuration), dict(secrets))


def run_provider(
    activity: Activity,
    configuration: Mapping[str, Any],
    secrets: Mapping[str, Any],
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: Mapping[str, str] | None = None,
    leftovers: Callable[[], None] | None = None,
) -> Any:
    """Execute a python/process/http provider with chaostoolkit-lib's own provider code.

    ``env``: a process activity's environment (None: this process's own); ``started``
    and ``leftovers``: see ``ctkprocess.run_process``.

    The provider modules are imported one by one (not ``chaoslib.activity``) so that an
    experiment without http activities never pays for importing ``requests``.
    """
    ctk = copy.deepcopy(dict(activity.ctk))
    kind = ctk["provider"]["type"]
    config, secs = dict(configuration), dict(secrets)
    if kind == "python":
        from chaoslib.provider.python import run_python_activity

        return run_python_activity(ctk, config, secs)
    if kind == "process":
        from chaoslab.engine.ctkprocess import run_process

        if has_placeholder(ctk["provider"]):
            ctk["provider"] = substitute(ctk["provider"], config, secs)
        return run_process(ctk, started, env, leftovers)
    from chaoslib.provider.http import run_http_activity

    return run_http_activity(ctk, config, secs)


def run_driver_probe(
    activity: Activity,
    registry: DriverRegistry,
    ctx: DriverContext,
    configuration: Mapping[str, Any],
    secrets: Mapping[str, Any],
) -> Any:
    assert activity.driver and activity.operation
    driver = registry.get(activity.driver)
    op = driver.operation(activity.operation)
    assert op is not None
    args = substitute(dict(activity.args), configuration, secrets)
    target = substitute(activity.target, configuration, secrets)
    problems = check_args(op, args, f"{activity.path}.with")
    if problems:
        raise InvalidInput(problems)
    return driver.probe(ctx, op, with_defaults(op, args), target)


def judge_tolerance(
    activity: Activity, value: Any, configuration: Mapping[str, Any], secrets: Mapping[str, Any]
) -> bool:
    tolerance = copy.deepcopy(activity.tolerance)
    if isinstance(tolerance, str):
        tolerance = substitute(tolerance, configuration, secrets)
    if not isinstance(tolerance, dict):
        return scalar_tolerance(tolerance, value)
    from chaoslib.hypothesis import within_tolerance

    if tolerance.get("type") == "probe":
        tolerance.setdefault("provider", {}).setdefault("arguments", {})
    return bool(within_tolerance(tolerance, value, dict(configuration), dict(secrets)))


def scalar_tolerance(tolerance: Any, value: Any) -> bool:
    """Chaos Toolkit's bool/int/str/list tolerance rules, without importing
    ``chaoslib.hypothesis`` (which pulls in ``requests`` and ``jsonpath2``: ~80 ms of
    start-up on every run). ``tests/unit/test_ctk_equivalence.py`` checks this against
    chaostoolkit-lib's ``within_tolerance`` on every case; dict tolerances (regex,
    jsonpath, range, probe) always go to chaostoolkit-lib.
    """
    if isinstance(tolerance, bool):
        return bool(value == tolerance)
    if isinstance(tolerance, int):
        if isinstance(value, dict) and "status" in value:
            return bool(value["status"] == tolerance)
        return bool(value == tolerance)
    if isinstance(tolerance, str):
        return bool(value == tolerance)
    if isinstance(tolerance, list):
        if isinstance(value, dict) and "status" in value:
            return value["status"] in tolerance
        if len(tolerance) == 2:
            return bool(tolerance[0] <= value <= tolerance[1])
        return value in tolerance
    return False


def execute(
    activity: Activity,
    *,
    registry: DriverRegistry,
    ctx: DriverContext,
    configuration: Mapping[str, Any],
    secrets: Mapping[str, Any],
    default_timeout_s: float,
    tick: Callable[[], None] | None = None,
    trees: ActivityTrees | None = None,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run a provider activity or a driver probe (faults go through ``FaultManager``).

    ``tick`` is called every 50 ms while the activity runs (the runner ends timed faults
    on time with it). ``trees`` holds the run's activity process trees: whatever the
    activity started is ended at its deadline, on an interruption, and by
    ``trees.end_all()`` when the run winds down with the activity still running. ``env``
    is a process activity's environment (``configuration.activity_env``; None: inherit)."""
    timeout = activity.timeout_s or default_timeout_s
    start = time.time()
    provider = activity.kind is ActivityKind.PROVIDER
    spawns = provider and (activity.ctk.get("provider") or {}).get("type") in ("python", "process")
    if trees is None:  # no run to wind down: this call ends what it abandons itself
        own = ActivityTrees()
        try:
            return execute(
                activity,
                registry=registry,
                ctx=ctx,
                configuration=configuration,
                secrets=secrets,
                default_timeout_s=default_timeout_s,
                tick=tick,
                trees=own,
            )
        finally:
            own.end_all()
    with trees.activity(spawns) as tree:

        def body() -> Any:
            tree.runs_on(threading.get_native_id())  # what this thread forks is the activity's
            if provider:
                return run_provider(
                    activity, configuration, secrets, lambda p: tree.started(p.pid), env, tree.clear
                )
            return run_driver_probe(activity, registry, ctx, configuration, secrets)

        try:
            output = call_with_deadline(body, timeout, activity.name, tick)
        except Deadline as exc:
            tree.end()
            return Outcome(status="timed-out", output=None, error=str(exc), start=start, end=time.time())
        except ChaoslabError as exc:
            tree.end()  # e.g. RunInterrupted: the activity's processes must not outlive the run
            return Outcome(
                status="failed", output=None, error=str(exc), start=start, end=time.time(), exception=exc
            )
        except Exception as exc:
            import traceback  # the error path only

            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if type(exc).__name__ in ("ActivityFailed", "ProcessActivityFailed"):
                error = f"chaoslib.exceptions.ActivityFailed: {exc}"
            return Outcome(
                status="failed", output=None, error=error, start=start, end=time.time(), exception=exc
            )
    met = None
    if activity.has_tolerance:
        try:
            met = judge_tolerance(activity, output, configuration, secrets)
        except Exception as exc:
            return Outcome(
                status="failed",
                output=output,
                error=f"tolerance could not be evaluated: {exc}",
                start=start,
                end=time.time(),
                tolerance_met=False,
            )
    return Outcome(
        status="succeeded", output=output, error=None, start=start, end=time.time(), tolerance_met=met
    )
