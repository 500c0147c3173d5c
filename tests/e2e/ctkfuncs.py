"""Python provider functions and a control module used by the compatibility experiments.

State lives in files under ``$CTK_STATE`` so the same experiment behaves the same under
``chaos run`` and ``chaoslab run`` (each in its own process).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def _state() -> Path:
    p = Path(os.environ["CTK_STATE"])
    p.mkdir(parents=True, exist_ok=True)
    return p


def record(event: str, **data: Any) -> str:
    with (_state() / "trace.ndjson").open("a") as fh:
        fh.write(json.dumps({"event": event, **data}) + "\n")
    return event


def read_counter(name: str = "counter") -> int:
    f = _state() / name
    return int(f.read_text()) if f.exists() else 0


def set_counter(value: int, name: str = "counter") -> int:
    (_state() / name).write_text(str(value))
    record("set_counter", value=value)
    return value


def yes() -> bool:
    return True


def echo(value: Any) -> Any:
    return value


def status_doc(code: int = 200) -> dict[str, Any]:
    return {"status": code, "body": {"health": {"db": "ok", "replicas": 3}}, "headers": {}}


def sleep_for(seconds: float) -> float:
    record("sleep_start", seconds=seconds)
    time.sleep(seconds)
    record("sleep_end", seconds=seconds)
    return seconds


def sleep_quietly(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def boom() -> None:
    raise RuntimeError("boom from the action")


def greater_than(value: int, limit: int = 1) -> bool:
    return value > limit


# --- a Chaos Toolkit control module -----------------------------------------------------


def configure_control(
    configuration: Any = None, secrets: Any = None, settings: Any = None, experiment: Any = None
) -> None:
    record("configure_control")


def before_experiment_control(context: Any, **kwargs: Any) -> None:
    record("before_experiment_control", title=context.get("title"))


def after_experiment_control(context: Any, state: Any, **kwargs: Any) -> None:
    record("after_experiment_control")


def before_method_control(context: Any, **kwargs: Any) -> None:
    record("before_method_control")


def after_method_control(context: Any, **kwargs: Any) -> None:
    record("after_method_control")


def before_activity_control(context: Any, **kwargs: Any) -> None:
    record("before_activity_control", name=context.get("name"))


def after_activity_control(context: Any, state: Any, **kwargs: Any) -> None:
    record("after_activity_control", name=context.get("name"))


def before_rollback_control(context: Any, **kwargs: Any) -> None:
    record("before_rollback_control")


def after_rollback_control(context: Any, **kwargs: Any) -> None:
    record("after_rollback_control")


# --- leaving a run as chaostoolkit-lib lets python code leave it ------------------------


def _traced(event: str) -> bool:
    trace = _state() / "trace.ndjson"
    try:
        lines = trace.read_text().splitlines()
    except FileNotFoundError:
        return False
    return any(json.loads(line)["event"] == event for line in lines)


def _wait_for(event: str, timeout: float = 20.0) -> None:
    """Readiness handshake: wait (bounded) until ``event`` is in the trace."""
    from tests.conftest import poll  # pytest is there in both runners' environments

    poll(lambda: _traced(event), timeout_s=timeout, interval_s=0.01)


def leave_gracefully(after: str = "sleep_start") -> str:
    """``chaoslib.exit.exit_gracefully()`` from a provider (SIGUSR1 to this process), once
    the background activity has started."""
    from chaoslib.exit import exit_gracefully

    _wait_for(after)
    record("leave_gracefully")
    exit_gracefully()
    time.sleep(5)  # the signal ends the run first; a runner that ignored it waits here
    record("leave_gracefully_ignored")
    return "ignored"


def leave_ungracefully(after: str = "sleep_start") -> str:
    """``chaoslib.exit.exit_ungracefully()`` from a provider (SIGUSR2 to this process),
    once the background activity has started."""
    from chaoslib.exit import exit_ungracefully

    _wait_for(after)
    record("leave_ungracefully")
    exit_ungracefully()
    time.sleep(5)  # as above: only a runner that ignored the signal gets here
    record("leave_ungracefully_ignored")
    return "ignored"


def raise_error() -> None:
    raise RuntimeError("this probe raises")


def set_flag(name: str = "flag") -> bool:
    (_state() / name).write_text("1")
    record("set_flag", name=name)
    return True


def flag_absent(name: str = "flag") -> bool:
    """A safeguard probe: healthy (True) until ``set_flag`` raised the flag."""
    return not (_state() / name).exists()


def interrupt_now() -> None:
    """A provider ending the run as chaostoolkit-lib lets it: ``InterruptExecution``."""
    from chaoslib.exceptions import InterruptExecution

    record("interrupt_now")
    raise InterruptExecution("the provider interrupts the run")


def exit_now(code: int = 20) -> None:
    record("exit_now", code=code)
    raise SystemExit(code)
