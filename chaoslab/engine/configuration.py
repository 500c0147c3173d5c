"""Loading an experiment's Chaos Toolkit ``configuration`` and ``secrets``.

chaostoolkit-lib loads them (environment keys, ``--var``/``--var-file`` values, vault...),
exactly as ``chaos run`` does. ``chaoslab validate`` and ``chaoslab run`` call
``load_configuration`` before anything runs, so a configuration that reads a missing
environment key is invalid input (exit 2) with nothing touched — as ``chaos validate``
refuses it.

A ``.env`` var file: ``chaoslib.merge_vars`` writes its values into ``os.environ``, where
every later run in the process would see them. chaoslab never writes the process
environment: the ``{"type": "env", "key": K}`` entries whose ``K`` a var file defines are
resolved here, with chaostoolkit-lib's own rules (a var-file value wins over the
process environment as ``merge_vars``' overwrite does; ``env_var_type`` cast by
``chaoslib.convert_to_type``; ``--var``/file configuration replacing an entry first;
secret scopes overridden by file secrets), and only the rest goes to chaostoolkit-lib.
Process activities get the values in their own environment (``activity_env``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from chaoslab.errors import InvalidInput, Problem
from chaoslab.model.experiment import Experiment
from chaoslab.model.varfile import VarValues


def load_configuration(
    exp: Experiment,
    variables: Mapping[str, Any] | None = None,
    var_values: VarValues | None = None,
    *,
    dynamic: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(configuration, secrets)``; ``dynamic`` also runs configuration probes (a run
    does, a check does not). Raises ``InvalidInput`` naming the file and section.
    Reads the process environment; never writes it."""
    if not (exp.configuration or exp.secrets or variables or var_values):
        return {}, {}  # nothing to load: no need to import chaostoolkit-lib at all
    from chaoslib.configuration import load_configuration as ctk_load_configuration
    from chaoslib.secret import load_secrets

    files = var_values
    file_env = dict(files.env) if files else {}
    # as chaoslib.merge_vars: --var overrides the var files' configuration
    config_vars = {**(files.configuration if files else {}), **(variables or {})}
    secret_vars = dict(files.secrets) if files else {}
    section = "configuration"
    try:
        configuration = _load_config(ctk_load_configuration, dict(exp.configuration), config_vars, file_env)
        section = "secrets"
        secrets_info = _resolve_secrets(dict(exp.secrets), secret_vars, file_env)
        secrets = load_secrets(secrets_info, configuration, secret_vars) or {}
    except Exception as exc:
        raise InvalidInput(
            [Problem(file=exp.source, path=section, message=f"cannot load {section}: {exc}")]
        ) from exc
    if dynamic and any(isinstance(v, dict) and v.get("type") == "probe" for v in exp.configuration.values()):
        from chaoslib.configuration import load_dynamic_configuration

        configuration = load_dynamic_configuration(configuration, secrets)
    return configuration, secrets


def activity_env(var_values: VarValues | None) -> dict[str, str] | None:
    """The environment of a run's process activities: the process's own plus the
    ``.env`` var files' values (what ``chaos run`` gives them through ``os.environ``).
    None when there is nothing to add (the child inherits)."""
    if var_values is None or not var_values.env:
        return None
    return {**os.environ, **var_values.env}


def _load_config(
    ctk_load: Any, config_info: dict[str, Any], extra_vars: dict[str, Any], file_env: Mapping[str, str]
) -> dict[str, Any]:
    """chaoslib's ``load_configuration`` with ``file_env`` laid over ``os.environ``.

    Mirrors chaoslib 1.4x: an entry named in ``extra_vars`` is first replaced by it
    (and popped, so its ``env`` lookup result is kept); an ``env`` entry is
    ``convert_to_type(env_var_type, env.get(key, default))``. Entries whose key the var
    file defines are resolved here; chaostoolkit-lib loads every other entry itself.
    """
    if not file_env:
        return dict(ctk_load(config_info, extra_vars) or {})
    from chaoslib import convert_to_type

    resolved: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in config_info.items():
        effective = extra_vars[key] if key in extra_vars else value
        is_env = isinstance(effective, dict) and effective.get("type") == "env"
        env_key = effective.get("key") if is_env else None
        if isinstance(env_key, str) and env_key in file_env:
            extra_vars.pop(key, None)
            resolved[key] = convert_to_type(effective.get("env_var_type"), file_env[env_key])
        else:
            rest[key] = value
    loaded = dict(ctk_load(rest, extra_vars) or {}) if rest else {}
    return {key: resolved[key] if key in resolved else loaded[key] for key in config_info}


def _resolve_secrets(secrets_info: Any, extra_vars: Any, file_env: Mapping[str, str]) -> Any:
    """The secrets definition with its ``env`` entries that ``file_env`` defines replaced
    by their values, walked as chaoslib's ``load_secrets`` walks it (a non-None
    ``extra_vars`` entry at the same place wins; vault entries are left alone)."""
    if not file_env or not isinstance(secrets_info, dict):
        return secrets_info
    extra = extra_vars if isinstance(extra_vars, Mapping) else {}
    out: dict[str, Any] = {}
    for key, value in secrets_info.items():
        if not isinstance(value, dict) or extra.get(key) is not None:
            out[key] = value
        elif value.get("type") == "env":
            env_key = value.get("key")
            out[key] = file_env[env_key] if isinstance(env_key, str) and env_key in file_env else value
        elif value.get("type") == "vault":
            out[key] = value
        else:
            out[key] = _resolve_secrets(value, extra.get(key), file_env)
    return out
