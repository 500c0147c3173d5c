"""Where a run's secrets come from, gathered into its ``Masker``.

Sources, each value with a reference when another process can read it again (so a
fault's ledger record can hold a placeholder instead of the value, see
``Masker.seal``):

- the experiment's Chaos Toolkit ``secrets`` (every scope): inline values (reference:
  the experiment file and key path), ``type: env`` (reference: the variable), and what
  chaostoolkit-lib loads at run time (Vault, nested scopes, ``--var-file`` overrides),
  tracked live so a control that adds secrets is covered too;
- ``--var-file`` JSON/YAML files: their ``secrets`` section (reference: the file), and
  their ``configuration`` values of keys marked secret;
- configuration keys marked secret: ``{"type": "env", "key": ..., "secret": true}``, or a
  key whose name says it (password, passwd, secret, token, api_key, apikey, credential,
  private_key, auth) — in the experiment, ``--var`` or a var file;
- credentials in URLs anywhere in the experiment, its configuration, variables, var
  files and SLO files (Prometheus, PostgreSQL DSNs, http provider URLs): the password,
  and ``user:password`` in base64 as HTTP Basic sends it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from chaoslab.masking import Masker, SecretRef

_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth", re.I)


def is_secret_key(name: str, spec: Any = None) -> bool:
    """A configuration key marked secret (by ``secret: true`` or by its name)."""
    if isinstance(spec, Mapping) and spec.get("secret") is True:
        return True
    return bool(_SECRET_NAME.search(name))


def secret_configuration(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """The values of loaded configuration keys marked secret by name."""
    return {k: v for k, v in configuration.items() if is_secret_key(str(k))}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _ctk_secrets(
    masker: Masker, spec: Any, keys: list[str], file: str | None, environ: Mapping[str, str]
) -> None:
    """A CTK ``secrets`` tree: inline values, env references, nested scopes."""
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind == "env":
            name = str(spec.get("key", ""))
            if name in environ:
                masker.add(environ[name], ref={"env": name})
            return
        if kind == "vault":
            return  # read at load time; tracked from the loaded secrets
        for k, v in spec.items():
            _ctk_secrets(masker, v, [*keys, str(k)], file, environ)
        return
    ref: SecretRef | None = {"file": file, "keys": keys} if file else None
    masker.add(spec, ref=ref)


def _configuration(
    masker: Masker, configuration: Mapping[str, Any], file: str | None, environ: Mapping[str, str]
) -> None:
    for key, spec in configuration.items():
        if not is_secret_key(str(key), spec):
            continue
        if isinstance(spec, Mapping) and spec.get("type") == "env":
            name = str(spec.get("key", ""))
            if name in environ:
                masker.add(environ[name], ref={"env": name})
            elif "default" in spec:
                masker.add(spec["default"])
        elif isinstance(spec, Mapping):
            masker.add(spec.get("value", spec))
        else:
            masker.add(spec, ref={"file": file, "keys": ["configuration", str(key)]} if file else None)


def read_structured(path: str | Path) -> Any:
    """A JSON/YAML file's data, or None when it cannot be read (its loader reports that)."""
    try:
        from chaoslab.model.reader import load_document

        return load_document(path).data
    except Exception:  # the file's own loader reports every problem; here: nothing to add
        return None


def add_experiment_secrets(
    masker: Masker,
    *,
    raw: Mapping[str, Any],
    source: str,
    variables: Mapping[str, Any] | None = None,
    var_files: Sequence[str] = (),
    var_values: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Masker:
    """Add every secret an experiment names before it is loaded (see the module doc).

    ``var_files`` are paths (their secrets get a file reference); ``var_values`` is what
    ``chaoslab.model.varfile.read_var_files`` read from them (``.env`` values included).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    variables = variables or {}
    if var_values is not None:
        env = {**env, **dict(getattr(var_values, "env", {}) or {})}
    file = str(Path(source).resolve()) if source and Path(source).is_file() else None
    secrets = raw.get("secrets")
    if isinstance(secrets, Mapping):
        _ctk_secrets(masker, secrets, ["secrets"], file, env)
    configuration = raw.get("configuration")
    if isinstance(configuration, Mapping):
        _configuration(masker, configuration, file, env)
    for key, value in variables.items():
        if is_secret_key(str(key)):
            masker.add(value)
    for var_file in var_files:
        if not str(var_file).endswith((".json", ".yaml", ".yml")):
            continue
        data = read_structured(var_file)
        if not isinstance(data, Mapping):
            continue
        vf = str(Path(var_file).resolve())
        if isinstance(data.get("secrets"), Mapping):
            _ctk_secrets(masker, data["secrets"], ["secrets"], vf, env)
        if isinstance(data.get("configuration"), Mapping):
            _configuration(masker, data["configuration"], vf, env)
        for text in _strings(data):
            masker.add_url_credentials(text)
    if var_values is not None:
        vsecrets = getattr(var_values, "secrets", None)
        if isinstance(vsecrets, Mapping):
            _ctk_secrets(masker, vsecrets, ["secrets"], None, env)
        vconfig = getattr(var_values, "configuration", None)
        if isinstance(vconfig, Mapping):
            _configuration(masker, vconfig, None, env)
            for text in _strings(dict(vconfig)):
                masker.add_url_credentials(text)
    slo_files = raw.get("slo_files")
    if file and isinstance(slo_files, list):  # their Prometheus URLs may carry credentials
        for name in slo_files:
            if isinstance(name, str):
                for text in _strings(read_structured(Path(file).parent / name)):
                    masker.add_url_credentials(text)
    for text in _strings(raw):
        masker.add_url_credentials(text)
    for text in _strings(dict(variables)):
        masker.add_url_credentials(text)
    return masker


def track_loaded(masker: Masker, secrets: Callable[[], Any], configuration: Callable[[], Any]) -> None:
    """Follow the run's loaded secrets and secret configuration values as they change."""
    masker.track(secrets)
    masker.track(lambda: secret_configuration(configuration() or {}))


def resolve_ref(ref: SecretRef, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a secret again from its reference; None when it cannot be read."""
    env = os.environ if environ is None else environ
    if "env" in ref:
        value = env.get(str(ref["env"]))
        return value
    if "file" in ref:
        data = read_structured(str(ref["file"]))
        for key in ref.get("keys", ()):
            if not isinstance(data, Mapping) or key not in data:
                return None
            data = data[key]
        if isinstance(data, str):
            return data
        if isinstance(data, int | float) and not isinstance(data, bool):
            return str(data)
        return None if data is None else json.dumps(data)
    return None
