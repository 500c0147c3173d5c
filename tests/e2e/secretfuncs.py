"""Python providers and a control that push secrets through every path a run has
(outputs in several encodings, exception text, control errors). Used by test_secrets."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote


def _encoded(value: str) -> dict[str, Any]:
    return {
        "plain": f"the value is {value}!",
        "url": f"https://svc.test/cb?k={quote(value, safe='')}",
        "b64": base64.b64encode(value.encode()).decode(),
        "json": json.dumps({"inner": value}),
        "repr": repr([value]),
        "bytes": value.encode(),
    }


def leak(value: str, marker: str = "") -> dict[str, Any]:
    """Returns the value in every encoding; says "broken" once ``marker`` exists."""
    state = "broken" if marker and Path(marker).exists() else "healthy"
    return {"state": state, **_encoded(value)}


def dump(secrets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every secret the provider was given (chaostoolkit-lib merges the scopes), encoded."""
    return {k: _encoded(str(v)) for k, v in (secrets or {}).items()}


def boom(value: str) -> None:
    raise RuntimeError(f"login refused for {value} ({quote(value, safe='')})")


def touch(path: str) -> str:
    Path(path).write_text("x")
    return path


def configure_control(configuration: Any = None, secrets: Any = None, **kwargs: Any) -> None:
    """A control that adds a secret of its own (from a source the experiment never names)."""
    if secrets is not None:
        secrets.setdefault("ctl", {})["ctl_token"] = os.environ["H15_CONTROL_SOURCE"]


def after_activity_control(
    context: Any = None, state: Any = None, secrets: Any = None, **kwargs: Any
) -> None:
    token = ((secrets or {}).get("ctl") or {}).get("ctl_token")
    if token and (context or {}).get("name") == "dump-all":
        raise ValueError(f"control saw {token}")
