"""A Chaos Toolkit control module for the compatibility suite: it records every hook it
gets (which arguments, of what type, what the context and state say, whether what
``before_experiment_control`` stored in the shared context is still there) and, when its
``arguments`` ask, interrupts, exits, fails or writes into the state it is given.

Arguments (all optional): ``interrupt_at``, ``exit_at`` (with ``exit_code``), ``fail_at``:
``"<hook>"`` or ``"<hook>:<activity name>"``; ``write: true`` makes the after hooks write
into their state; ``invalid: true`` makes ``validate_control`` refuse the control.
The trace goes to ``$CTK_STATE/trace.ndjson`` (see ``ctkfuncs.record``).
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import InterruptExecution, InvalidControl

from tests.e2e.ctkfuncs import record

SHARED = "h22_shared"


def _types(**kw: Any) -> dict[str, str]:
    return {k: type(v).__name__ for k, v in sorted(kw.items())}


def _label(context: Any) -> Any:
    if isinstance(context, dict):
        return context.get("name") or context.get("title")
    return context


def _summary(state: Any) -> Any:
    if isinstance(state, list):
        return [(r.get("activity", {}).get("name"), r.get("status")) for r in state]
    if isinstance(state, dict) and "steady_state_met" in state:
        return {"met": state["steady_state_met"], "probes": len(state.get("probes") or [])}
    if isinstance(state, dict) and "activity" in state:
        return {"status": state.get("status"), "output": state.get("output")}
    if isinstance(state, dict) and "status" in state:
        return {"status": state["status"], "deviated": state.get("deviated")}
    return state


def _act(hook: str, context: Any, arguments: dict[str, Any]) -> None:
    here = {hook, f"{hook}:{_label(context)}"}
    if arguments.get("fail_at") in here:
        raise RuntimeError(f"control failure asked at {hook}")
    if arguments.get("interrupt_at") in here:
        raise InterruptExecution(f"control interrupts at {hook}")
    if arguments.get("exit_at") in here:
        raise SystemExit(arguments.get("exit_code", 20))


def _hook(
    hook: str,
    context: Any,
    state: Any,
    experiment: Any,
    configuration: Any,
    secrets: Any,
    settings: Any,
    arguments: dict[str, Any],
    *,
    with_state: bool,
) -> None:
    kw: dict[str, Any] = {
        "context": context,
        "experiment": experiment,
        "configuration": configuration,
        "secrets": secrets,
        "settings": settings,
    }
    if with_state:
        kw["state"] = state
    record(
        hook,
        name=_label(context),
        control=arguments.get("tag", ""),
        types=_types(**kw),
        shared=isinstance(experiment, dict) and experiment.get(SHARED),
        context_shared=isinstance(context, dict) and context.get(SHARED),
        state=_summary(state) if with_state else None,
        config=(configuration or {}).get("compat_value"),
        arguments=sorted(k for k in arguments if k != "tag"),
    )
    if with_state and arguments.get("write") and isinstance(state, dict):
        state[f"written_{hook}"] = arguments.get("tag", "") + ":" + str(_label(context))
    if with_state and arguments.get("write") and isinstance(state, list) and state:
        state[-1][f"written_{hook}"] = arguments.get("tag", "")
    _act(hook, context, arguments)


def validate_control(control: dict[str, Any]) -> None:
    if control.get("provider", {}).get("arguments", {}).get("invalid"):
        raise InvalidControl("this control was declared invalid on purpose")


def configure_control(
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    experiment: Any = None,
    **arguments: Any,
) -> None:
    record(
        "configure_control",
        control=arguments.get("tag", ""),
        types=_types(configuration=configuration, secrets=secrets, settings=settings, experiment=experiment),
    )


def cleanup_control() -> None:
    record("cleanup_control")


def before_experiment_control(
    context: Any,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    if isinstance(context, dict):
        context[SHARED] = "stored by before_experiment_control"
    _hook(
        "before_experiment_control",
        context,
        None,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=False,
    )


def after_experiment_control(
    context: Any,
    state: Any = None,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "after_experiment_control",
        context,
        state,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=True,
    )


def before_hypothesis_control(
    context: Any,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "before_hypothesis_control",
        context,
        None,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=False,
    )


def after_hypothesis_control(
    context: Any,
    state: Any = None,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "after_hypothesis_control",
        context,
        state,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=True,
    )


def before_method_control(
    context: Any,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "before_method_control",
        context,
        None,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=False,
    )


def after_method_control(
    context: Any,
    state: Any = None,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "after_method_control",
        context,
        state,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=True,
    )


def before_rollback_control(
    context: Any,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "before_rollback_control",
        context,
        None,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=False,
    )


def after_rollback_control(
    context: Any,
    state: Any = None,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "after_rollback_control",
        context,
        state,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=True,
    )


def before_activity_control(
    context: Any,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "before_activity_control",
        context,
        None,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=False,
    )


def after_activity_control(
    context: Any,
    state: Any = None,
    experiment: Any = None,
    configuration: Any = None,
    secrets: Any = None,
    settings: Any = None,
    **arguments: Any,
) -> None:
    _hook(
        "after_activity_control",
        context,
        state,
        experiment,
        configuration,
        secrets,
        settings,
        arguments,
        with_state=True,
    )
