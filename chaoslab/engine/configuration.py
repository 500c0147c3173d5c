"""Loading an experiment's Chaos Toolkit ``configuration`` and ``secrets``.

chaostoolkit-lib loads them (environment keys, ``--var``/``--var-file`` values, vault...),
exactly as ``chaos run`` does. ``chaoslab validate`` and ``chaoslab run`` call
``load_configuration`` before anything runs, so a configuration that reads a missing
environment key is invalid input (exit 2) with nothing touched — as ``chaos validate``
refuses it.
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
    does, a check does not). Raises ``InvalidInput`` naming the file and section."""
    if not (exp.configuration or exp.secrets or variables or var_values):
        return {}, {}  # nothing to load: no need to import chaostoolkit-lib at all
    from chaoslib.configuration import load_configuration as ctk_load_configuration
    from chaoslib.secret import load_secrets

    files = var_values
    # as chaoslib.merge_vars: .env values go to the environment; --var overrides files
    for key, value in (files.env if files else {}).items():
        os.environ[key] = value
    config_vars = {**(files.configuration if files else {}), **(variables or {})}
    secret_vars = dict(files.secrets) if files else {}
    section = "configuration"
    try:
        configuration = ctk_load_configuration(dict(exp.configuration), config_vars) or {}
        section = "secrets"
        secrets = load_secrets(dict(exp.secrets), configuration, secret_vars) or {}
    except Exception as exc:
        raise InvalidInput(
            [Problem(file=exp.source, path=section, message=f"cannot load {section}: {exc}")]
        ) from exc
    if dynamic and any(isinstance(v, dict) and v.get("type") == "probe" for v in exp.configuration.values()):
        from chaoslib.configuration import load_dynamic_configuration

        configuration = load_dynamic_configuration(configuration, secrets)
    return configuration, secrets
