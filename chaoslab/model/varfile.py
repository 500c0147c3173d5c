"""``--var-file``: configuration and secrets for a run, read once before it starts.

Chaos Toolkit's formats: a JSON/YAML mapping with ``configuration`` and ``secrets``
mappings, or a ``.env`` file of ``NAME=VALUE`` lines put into the run's environment.
Unlike ``chaoslib.merge_vars`` (which logs and skips what it cannot read), an unusable
var file is invalid input: exit code 2 before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import InvalidInput, Problem
from chaoslab.model.reader import load_document, plain, read_text

_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class VarValues(msgspec.Struct, frozen=True, kw_only=True):
    """What every var file of a run gives, later files overriding earlier ones."""

    configuration: Mapping[str, Any] = msgspec.field(default_factory=dict)
    secrets: Mapping[str, Any] = msgspec.field(default_factory=dict)
    env: Mapping[str, str] = msgspec.field(default_factory=dict)


def read_var_files(paths: Sequence[str | Path]) -> VarValues:
    """Read every var file through the one reader. Raises ``InvalidInput``."""
    configuration: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    env: dict[str, str] = {}
    problems: list[Problem] = []
    for p in paths:
        name = str(p)
        try:
            if Path(name).suffix in (".yaml", ".yml", ".json"):
                doc = load_document(name, what="var file")
                for key in ("configuration", "secrets"):
                    value = doc.data.get(key, {})
                    if not isinstance(value, dict):
                        problems.append(doc.problem(key, f"'{key}' must be a mapping of names to values"))
                        continue
                    (configuration if key == "configuration" else secrets).update(plain(value))
            else:
                env.update(_dotenv(read_text(name, what="var file"), name, problems))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(problems)
    return VarValues(configuration=configuration, secrets=secrets, env=env)


def _dotenv(text: str, name: str, problems: list[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not set(key) <= _ENV_NAME_OK or "\0" in value:
            problems.append(
                Problem(
                    file=name,
                    line=i,
                    message="not a NAME=VALUE line",
                    hint="a .env file holds NAME=VALUE lines",
                )
            )
            continue
        out[key] = value
    return out
