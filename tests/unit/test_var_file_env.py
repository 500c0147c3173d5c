"""``.env`` var files reach configuration, secrets and process activities without
``os.environ`` ever being written (chaoslib's ``merge_vars`` writes it, so two runs in one
process would see each other's values).

The reference for the semantics is chaostoolkit-lib itself: each case is loaded once by
chaoslab with the values in a var file, and once by chaoslib with the same values really
in the process environment (what ``chaos run --var-file x.env`` does); both must agree.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from chaoslib.configuration import load_configuration as ctk_load_configuration
from chaoslib.secret import load_secrets as ctk_load_secrets

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import load_experiment
from chaoslab.engine.configuration import load_configuration
from chaoslab.engine.runner import Runner, RunOptions
from chaoslab.errors import InvalidInput
from chaoslab.model.varfile import VarValues, read_var_files
from chaoslab.verdict import Verdict
from tests.statepaths import env_state

# Names no other test or the machine uses: the process environment must never hold them.
A, B, C = "CHAOSLAB_T_VARFILE_A", "CHAOSLAB_T_VARFILE_B", "CHAOSLAB_T_VARFILE_C"

EXPERIMENT = """
title: {title}
description: configuration and secrets from a .env var file
configuration:
  plain: {title}
  text: {{type: env, key: {a}}}
  port: {{type: env, key: {b}, env_var_type: int}}
  flag: {{type: env, key: {c}, env_var_type: bool, default: "no"}}
  missing_with_default: {{type: env, key: CHAOSLAB_T_VARFILE_UNSET, default: fallback}}
secrets:
  scope:
    token: {{type: env, key: {a}}}
    inline: literal
method:
  - type: action
    name: show
    provider:
      type: process
      path: sh
      arguments: ["-c", 'printf "%s|%s|%s" "$1" "$2" "${a_ref}" > "$3"', "sh", "${{text}}", "${{token}}", "{out}"]
"""


def _exp(tmp: Path, title: str) -> Path:
    f = tmp / f"{title}.yaml"
    out = tmp / f"{title}.out"
    f.write_text(EXPERIMENT.format(title=title, a=A, b=B, c=C, out=out, a_ref="$" + A))
    return f


def _varfile(tmp: Path, name: str, values: dict[str, str]) -> VarValues:
    p = tmp / f"{name}.env"
    p.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return read_var_files([p])


def _not_in_environ() -> None:
    assert not {A, B, C} & set(os.environ), "the test's names must not be in the environment"


def test_env_values_reach_configuration_and_secrets_and_environ_is_untouched(tmp_path: Path) -> None:
    _not_in_environ()
    before = dict(os.environ)
    exp = load_experiment(str(_exp(tmp_path, "one")), registry=DriverRegistry(load_installed=False))
    values = _varfile(tmp_path, "one", {A: "alpha", B: "8080", C: "false"})
    configuration, secrets = load_configuration(exp, None, values)
    assert configuration == {
        "plain": "one",
        "text": "alpha",
        "port": 8080,  # env_var_type cast
        "flag": False,  # the var file's value beats the default
        "missing_with_default": "fallback",
    }
    assert secrets == {"scope": {"token": "alpha", "inline": "literal"}}
    assert dict(os.environ) == before


def test_a_key_neither_the_var_file_nor_the_environment_defines_is_invalid(tmp_path: Path) -> None:
    _not_in_environ()
    exp = load_experiment(str(_exp(tmp_path, "two")), registry=DriverRegistry(load_installed=False))
    with pytest.raises(InvalidInput, match=B):
        load_configuration(exp, None, _varfile(tmp_path, "two", {A: "alpha"}))
    with pytest.raises(InvalidInput, match="int"):
        load_configuration(exp, None, _varfile(tmp_path, "three", {A: "a", B: "not-a-number"}))


# (configuration, secrets, --var, var-file configuration/secrets, .env values)
CASES: list[
    tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str]]
] = [
    ({"x": {"type": "env", "key": A}}, {}, {}, {}, {}, {A: "v"}),
    ({"x": {"type": "env", "key": A, "default": "d"}}, {}, {}, {}, {}, {A: "v"}),
    (
        {"x": {"type": "env", "key": A, "env_var_type": "json"}},
        {},
        {},
        {},
        {},
        {A: '{"type": "env", "key": "K"}'},
    ),
    ({"x": {"type": "env", "key": A, "env_var_type": "float"}}, {}, {}, {}, {}, {A: "1.5"}),
    ({"x": {"type": "env", "key": A, "env_var_type": "bytes"}}, {}, {}, {}, {}, {A: "é"}),
    ({"x": {"type": "env", "key": A, "env_var_type": "bool"}}, {}, {}, {}, {}, {A: "0"}),
    # --var replaces the entry (a plain value, or a definition that reads the var file)
    ({"x": {"type": "env", "key": A}}, {}, {"x": "cli"}, {}, {}, {A: "v"}),
    ({"x": "literal"}, {}, {"x": {"type": "env", "key": A}}, {}, {}, {A: "v"}),
    (
        {"x": {"type": "env", "key": B, "default": "d"}},
        {},
        {},
        {"x": {"type": "env", "key": A}},
        {},
        {A: "v"},
    ),
    ({"x": 1, "y": {"type": "env", "key": A}, "z": {"type": "other"}}, {}, {}, {}, {}, {A: "v"}),
    # secrets: env entries at any depth; a var-file secret at the same place wins
    ({}, {"s": {"k": {"type": "env", "key": A}, "j": "lit"}}, {}, {}, {}, {A: "v"}),
    ({}, {"s": {"k": {"type": "env", "key": A}}}, {}, {}, {"s": {"k": "file"}}, {A: "v"}),
    ({}, {"s": {"k": {"type": "env", "key": A}}}, {}, {}, {"s": {"other": "x"}}, {A: "v"}),
    ({}, {"s": {"type": "env", "key": A}}, {}, {}, {}, {A: "v"}),
]


@pytest.mark.parametrize(("config", "secrets", "cli", "fconf", "fsec", "env"), CASES)
def test_same_result_as_chaoslib_with_the_values_in_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    secrets: dict[str, Any],
    cli: dict[str, Any],
    fconf: dict[str, Any],
    fsec: dict[str, Any],
    env: dict[str, str],
) -> None:
    _not_in_environ()
    f = tmp_path / "exp.json"
    f.write_text(
        json.dumps(
            {
                "title": "t",
                "description": "d",
                "configuration": config,
                "secrets": secrets,
                "method": [{"type": "action", "name": "a", "provider": {"type": "process", "path": "true"}}],
            }
        )
    )
    exp = load_experiment(str(f), registry=DriverRegistry(load_installed=False))
    values = VarValues(configuration=fconf, secrets=fsec, env=env)
    ours = load_configuration(exp, cli, values)
    assert not {A, B, C} & set(os.environ)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ref_conf = ctk_load_configuration(json.loads(json.dumps(config)), {**fconf, **cli}) or {}
    ref_sec = ctk_load_secrets(json.loads(json.dumps(secrets)), ref_conf, dict(fsec)) or {}
    assert ours == (ref_conf, ref_sec)


def test_two_runs_with_two_var_files_in_one_process_never_see_each_other(tmp_path: Path) -> None:
    """Concurrent runs (threads) with different .env files: each run's configuration,
    secrets and process activity see its own values only; os.environ is unchanged."""
    _not_in_environ()
    before = dict(os.environ)
    runners: dict[str, Runner] = {}
    for name in ("a", "b"):
        reg = DriverRegistry(load_installed=False)
        exp = load_experiment(str(_exp(tmp_path, name)), registry=reg)
        values = _varfile(tmp_path, name, {A: f"value-{name}", B: "1" if name == "a" else "2", C: "yes"})
        options = RunOptions(
            run_dir=tmp_path / name / "run", handle_signals=False, var_values=values, state=env_state()
        )
        runners[name] = Runner(exp, registry=reg, options=options, run_id=f"run-{name}")
    start = threading.Barrier(2, timeout=30)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def go(name: str) -> None:
        try:
            start.wait()
            results[name] = runners[name].run()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    for name in ("a", "b"):
        assert results[name].verdict is Verdict.PASSED, results[name].reason
        runner = runners[name]
        assert runner.configuration["text"] == f"value-{name}"
        assert runner.configuration["port"] == (1 if name == "a" else 2)
        assert runner.secrets["scope"]["token"] == f"value-{name}"
        # the process activity got the run's own .env value in its environment
        assert (tmp_path / f"{name}.out").read_text() == f"value-{name}|value-{name}|value-{name}"
    assert dict(os.environ) == before
