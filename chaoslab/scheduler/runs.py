"""Running a slot's experiments: one ``chaoslab run`` subprocess per step.

Each step runs ``[sys.executable, "-m", "chaoslab.cli", "run", "--output", "json",
"--run-dir", DIR, EXPERIMENT, --var …]`` through ``chaoslab.engine.child.run_child``,
in its own session (a signal to the scheduler's process group does not reach it; the
scheduler forwards SIGTERM itself, so the run reverts and writes its journal). Its stdout
(the JSON result) goes to ``DIR/result.json`` and its stderr to ``DIR/run.log``: both
outlive the scheduler, so a scheduler that adopts a dead scheduler's slot reads the
outcome from the directory alone.

Directory layout (deterministic from the slot, so an adopter finds it)::

    <runs root>/<scenario>/<slot 20250501T100000Z>/<i>-<step name>/{result.json,run.log,journal.json,…}

A step directory with neither a result nor a journal belongs to a run that died; it is
renamed ``…crashed-N`` before the step runs again, never overwritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.engine.child import StopFlag, chaoslab_command, run_child, verdict_of_exit
from chaoslab.masking import Masker
from chaoslab.paths import child_env
from chaoslab.verdict import Verdict, worst

RESULT_FILE = "result.json"
LOG_FILE = "run.log"


@dataclass(frozen=True, kw_only=True)
class StepPlan:
    """One experiment run of a slot."""

    name: str
    experiment: Path
    vars: Mapping[str, str]
    continue_on: frozenset[str]
    timeout_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class StepResult:
    name: str
    experiment: str
    run_dir: str
    verdict: str
    exit_code: int
    reason: str = ""
    run_id: str | None = None
    duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StepResult:
        return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def step_dir(slot_root: Path, index: int, step: StepPlan) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in step.name)[:60]
    return slot_root / f"{index}-{safe}"


def command(step: StepPlan, run_dir: Path) -> list[str]:
    cmd = chaoslab_command("run", "--output", "json", "--run-dir", str(run_dir))
    for k, v in sorted(step.vars.items()):
        cmd += ["--var", f"{k}={v}"]
    cmd.append(str(step.experiment))
    return cmd


def read_result(step: StepPlan, run_dir: Path, returncode: int | None = None) -> StepResult | None:
    """The step's outcome from its directory; None when the run left no outcome (it died)."""
    raw: dict[str, Any] = {}
    try:
        loaded = json.loads((run_dir / RESULT_FILE).read_text("utf-8"))
        if isinstance(loaded, dict):
            raw = loaded
    except (OSError, ValueError):
        pass
    if "verdict" not in raw:
        try:
            journal = json.loads((run_dir / "journal.json").read_text("utf-8"))
            ours = journal.get("chaoslab") or {}
            raw = {
                "verdict": ours.get("verdict"),
                "exit_code": ours.get("exit_code"),
                "reason": ours.get("reason", ""),
                "run_id": ours.get("run_id"),
            }
            if journal.get("duration") is not None:
                raw["duration_s"] = journal.get("duration")
        except (OSError, ValueError, AttributeError):
            raw = {}
    verdict = raw.get("verdict")
    if verdict not in {v.value for v in Verdict}:
        if returncode is None:
            return None
        # No journal but an exit code: the CLI failed before the engine (e.g. invalid input).
        verdict = verdict_of_exit(returncode).value
        raw = {"reason": _tail(run_dir / LOG_FILE) or f"chaoslab run exited with {returncode}"}
    return StepResult(
        name=step.name,
        experiment=str(step.experiment),
        run_dir=str(run_dir),
        verdict=str(verdict),
        exit_code=int(raw.get("exit_code", Verdict(verdict).exit_code)),
        reason=step_masker(step).text(str(raw.get("reason", ""))),
        run_id=raw.get("run_id"),
        duration_s=raw.get("duration_s"),
    )


def run_step(
    step: StepPlan,
    run_dir: Path,
    *,
    stop: StopFlag,
    on_child: Callable[[int], None] = lambda pid: None,
    stop_grace_s: float = 60.0,
    stream_stderr: bool = False,
    home: Path,
) -> StepResult:
    """Run one step to its end (``chaoslab.engine.child.run_child``). ``stop`` set → SIGTERM
    to the run (it reverts), then SIGKILL after ``stop_grace_s``; the same on the step's
    timeout. The run uses chaoslab's home ``home`` (its ``CHAOSLAB_HOME``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(run_dir / RESULT_FILE, "wb") as out, open(run_dir / LOG_FILE, "wb") as err:
        ended = run_child(
            command(step, run_dir),
            stdout=out,
            stderr=None if stream_stderr else err,
            stop=stop,
            timeout_s=step.timeout_s,
            grace_s=stop_grace_s,
            on_child=on_child,
            env=child_env(home),
        )
    result = read_result(step, run_dir, ended.returncode)
    assert result is not None  # a return code always yields a result
    if result.duration_s is None:
        result = StepResult(**{**result.to_dict(), "duration_s": round(time.monotonic() - started, 3)})
    return result


def overall(results: Sequence[StepResult]) -> Verdict:
    """The slot's verdict: the worst of its steps' (passed when it had none)."""
    return worst(*(Verdict(r.verdict) for r in results))


def step_masker(step: StepPlan) -> Masker:
    """The secrets ``step``'s experiment names (as its run masks them): history rows
    and webhook payloads hold only masked text, even from a run log's tail."""
    from chaoslab.engine.secrets import add_experiment_secrets, read_structured

    raw = read_structured(step.experiment)
    return add_experiment_secrets(
        Masker(),
        raw=raw if isinstance(raw, dict) else {},
        source=str(step.experiment),
        variables=dict(step.vars),
    )


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]
