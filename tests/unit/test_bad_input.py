"""Bad input: invalid-input exit code, file and field path (and line), nothing executed,
every problem in one pass."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli


def chaoslab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=60)


VALID_TAIL = """
description: d
method:
  - {type: action, name: touch, provider: {type: process, path: touch, arguments: "@MARKER@"}}
"""

CASES: dict[str, tuple[bytes, list[str]]] = {
    "empty.yaml": (b"", ["empty.yaml", "file is empty"]),
    "blank.json": (b"  \n\n", ["file is empty"]),
    "not-yaml.yaml": (b"title: [unclosed\n  - x: {", ["not-yaml.yaml:", "not valid YAML"]),
    "not-json.json": (b'{"title": "t",, }', ["not-json.json:1", "not valid JSON"]),
    "latin1.yaml": (b"title: caf\xe9\n", ["latin1.yaml:1", "not UTF-8"]),
    "list.yaml": (b"- a\n- b\n", ["must be a mapping"]),
    "unsafe.yaml": (
        b"title: !!python/object/apply:os.system ['touch @MARKER@']\ndescription: d\nmethod: []\n",
        ["unsafe.yaml:1", "unsafe or unknown YAML tag"],
    ),
    "no-title.yaml": (VALID_TAIL.encode(), ["at title", "missing required field 'title'"]),
    "method-dict.yaml": (
        b"title: t\ndescription: d\nmethod: {a: 1}\n",
        ["method-dict.yaml:3 at method", "must be a list"],
    ),
    "bad-type.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {type: dance, name: x, provider: {type: process, path: 'true'}}\n",
        ["method[0].type", "unknown activity type 'dance'"],
    ),
    "bad-provider.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {type: action, name: x, provider: {type: ftp}}\n",
        ["method[0].provider.type", "unknown provider type 'ftp'"],
    ),
    "no-module.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {type: action, name: x, provider: {type: python, module: no_such_mod_zz, func: f}}\n",
        ["method[0].provider", "no_such_mod_zz"],
    ),
    "no-func.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {type: action, name: x, provider: {type: python, module: os.path, func: nope}}\n",
        ["method[0].provider", "does not expose a function called 'nope'"],
    ),
    "bad-args.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {type: action, name: x, provider: {type: python, module: os.path, func: basename, arguments: {q: 1}}}\n",
        ["method[0].provider", "basename"],
    ),
    "bad-tolerance.yaml": (
        b"title: t\ndescription: d\nsteady-state-hypothesis:\n  title: h\n  probes:\n    - {type: probe, name: p, tolerance: {type: range, range: [1]}, provider: {type: process, path: 'true'}}\nmethod: []\n",
        ["steady-state-hypothesis.probes[0].tolerance", "two values"],
    ),
    "bad-ref.yaml": (
        b"title: t\ndescription: d\nmethod:\n  - {ref: nothing-by-this-name}\n",
        ["method[0].ref", "points to nothing"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_is_invalid_input_and_runs_nothing(name: str, tmp_path: Path) -> None:
    content, expected = CASES[name]
    marker = tmp_path / "executed"
    f = tmp_path / name
    f.write_bytes(content.replace(b"@MARKER@", str(marker).encode()))
    for command in ("validate", "run"):
        proc = chaoslab(command, str(f), cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        for text in expected:
            assert text in proc.stderr, (text, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not marker.exists()
        assert not (tmp_path / "chaoslab-runs").exists()


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "huge.json"
    with f.open("w") as fh:
        fh.write('{"title": "t", "description": "d", "method": [], "pad": "')
        fh.write("x" * (50 * 1024 * 1024))
        fh.write('"}')
    proc = chaoslab("validate", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    assert "the limit is 8 MiB" in proc.stderr


@pytest.mark.parametrize("ext,opener,closer", [(".json", "[", "]"), (".yaml", "{a: ", "}")])
def test_deep_nesting_is_refused(ext: str, opener: str, closer: str, tmp_path: Path) -> None:
    f = tmp_path / f"deep{ext}"
    f.write_text(opener * 10_000 + closer * 10_000)
    proc = chaoslab("validate", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    assert "nesting is" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_problem_reported_in_one_pass_with_json_output(tmp_path: Path) -> None:
    f = tmp_path / "many.yaml"
    f.write_text(
        "description: 3\n"
        "tags: [ok, '']\n"
        "method:\n"
        "  - {type: dance, name: a, provider: {type: process, path: 'true'}}\n"
        "  - {type: action, name: b, provider: {type: python, module: os.path, func: nope}}\n"
        "  - {do: nodriver.op, target: x}\n"
        "  - {do: process.kill, target: 'pid:1', with: {signal: 9.5, bogus: 1}}\n"
        "  - {do: process.kill, target: 'pid:1', duration: -1s}\n"
        "rollbacks: 7\n"
    )
    proc = chaoslab("validate", "--output", "json", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    problems = json.loads(proc.stdout)["problems"]
    paths = {p["path"] for p in problems}
    assert {
        "title",
        "description",
        "tags",
        "method[0].type",
        "method[1].provider",
        "method[2].do",
        "method[3].with.bogus",
        "method[4].duration",
        "rollbacks",
    } <= paths
    assert all(p["file"] == str(f) for p in problems)
    assert next(p for p in problems if p["path"] == "method[0].type")["line"] == 4


def test_unknown_var_syntax_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text("title: t\ndescription: d\nmethod: []\n")
    proc = chaoslab("run", "--var", "novalue", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--var" in proc.stderr
