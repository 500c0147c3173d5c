"""The bad-input corpus: every defect the reader refuses, for every kind of file chaoslab
reads and every command that reads it, plus every CLI option with a number, a duration
or an output path.

Each case runs the CLI as a user does and asserts exit code 2, the file (and line, where
the defect has one) in the message, no traceback, no side effect (a marker file the
experiment would create stays absent, outputs are not written), and a time bound of its
own (the child is killed after ``LIMIT_S``; an alias bomb used to hang for ever).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require, run_cli

LIMIT_S = 30.0  # per command, generous for a loaded CI machine; a hang is what it catches


def alias_bomb() -> bytes:
    """0.6 KB of YAML that expands to 10^9 nodes: 9 levels of 10 aliases."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


# defect -> (how to make the file at a path, text the message must hold)
Maker = Callable[[Path, Path], None]


def _write(content: bytes) -> Maker:
    def make(path: Path, marker: Path) -> None:
        path.write_bytes(content.replace(b"@MARKER@", str(marker).encode()))

    return make


def _fifo(path: Path, marker: Path) -> None:
    os.mkfifo(path)


def _device(path: Path, marker: Path) -> None:
    path.symlink_to("/dev/zero")


def _directory(path: Path, marker: Path) -> None:
    path.mkdir()


def _oversize(path: Path, marker: Path) -> None:
    with path.open("wb") as fh:  # sparse: the size is refused before anything is read
        fh.truncate(300 * 2**20)


def _unreadable(path: Path, marker: Path) -> None:
    path.write_text("title: t\n")
    path.chmod(0)


DEFECTS: dict[str, tuple[Maker, list[str]]] = {
    "alias-bomb": (_write(alias_bomb()), ["expands to more than", "YAML aliases"]),
    "fifo": (_fifo, ["is a FIFO"]),
    "device": (_device, ["is a character device"]),
    "directory": (_directory, ["is a directory"]),
    "oversize": (_oversize, ["the limit is"]),
    "not-utf8": (_write(b"title: caf\xe9\n"), [":1", "not UTF-8"]),
    "nan": (_write(b"title: t\nvalue: .nan\n"), [":2 at value", "not a finite number"]),
    "inf": (_write(b"title: t\nvalue: [1, -.inf]\n"), [":2 at value[1]", "not a finite number"]),
    "unsafe-tag": (
        _write(b"title: !!python/object/apply:os.system ['touch @MARKER@']\n"),
        [":1", "unsafe or unknown YAML tag"],
    ),
    "deep": (_write(b"a: " + b"[" * 300 + b"]" * 300 + b"\n"), ["nesting is"]),
    "recursive-alias": (_write(b"a: &a [1, *a]\n"), [":1", "recursive alias"]),
    "unreadable": (_unreadable, ["permission denied"]),
}

TOUCH_MARKER = """title: t
description: d
method:
  - {type: action, name: touch, provider: {type: process, path: touch, arguments: "@MARKER@"}}
"""


def _experiment(tmp: Path, marker: Path, extra: str = "", method: str = "") -> Path:
    f = tmp / "exp.yaml"
    f.write_text(TOUCH_MARKER.replace("@MARKER@", str(marker)) + method + extra)
    return f


# file kind -> (file name, commands: tmp, bad file, marker -> (argv, outputs that must stay absent))
Command = Callable[[Path, Path, Path], tuple[list[str], list[Path]]]

KINDS: dict[str, tuple[str, list[Command]]] = {
    "experiment": (
        "bad.yaml",
        [
            lambda t, f, m: (["validate", str(f)], []),
            lambda t, f, m: (["plan", str(f)], []),
            lambda t, f, m: (["run", str(f), "--run-dir", str(t / "rd")], [t / "rd"]),
        ],
    ),
    "ref": (
        "probes/bad.yaml",
        [
            lambda t, f, m: (["validate", str(_experiment(t, m, method="  - {ref: bad}\n"))], []),
            lambda t, f, m: (
                ["run", str(_experiment(t, m, method="  - {ref: bad}\n")), "--run-dir", str(t / "rd")],
                [t / "rd"],
            ),
        ],
    ),
    "var-file": (
        "vars.yaml",
        [
            lambda t, f, m: (
                ["run", str(_experiment(t, m)), "--var-file", str(f), "--run-dir", str(t / "rd")],
                [t / "rd"],
            ),
        ],
    ),
    "scenario": (
        "scenario.yaml",
        [
            lambda t, f, m: (["gameday", "run", str(f), "--runs-dir", str(t / "rd")], [t / "rd"]),
            lambda t, f, m: (
                ["export", "cronjob", str(f), "--out-file", str(t / "k8s.yaml")],
                [t / "k8s.yaml"],
            ),
            lambda t, f, m: (["schedule", "list", "-s", str(f)], []),
        ],
    ),
    "slo-file": (
        "slo.yaml",
        [
            lambda t, f, m: (
                ["slo", "rules", str(f), "--out-file", str(t / "rules.yaml")],
                [t / "rules.yaml"],
            ),
            lambda t, f, m: (["slo", "status", str(f)], []),
            lambda t, f, m: (
                ["run", str(_experiment(t, m, extra=f"slo_files: [{f}]\n")), "--run-dir", str(t / "rd")],
                [t / "rd"],
            ),
        ],
    ),
    "gate-suite": (
        "suite.yaml",
        [
            lambda t, f, m: (["gate", "--suite", str(f), "--output-dir", str(t / "gate")], []),
        ],
    ),
    "inventory": (
        "inventory.yaml",
        [
            lambda t, f, m: (
                [
                    "run",
                    str(
                        _experiment(
                            t,
                            m,
                            method=f"  - {{do: ssh.kill, target: 'ssh:all', with: {{inventory: '{f}', name: x}}}}\n",
                        )
                    ),
                    "--run-dir",
                    str(t / "rd"),
                ],
                [t / "rd"],
            ),
        ],
    ),
    "journal": (
        "journal.yaml",
        [
            lambda t, f, m: (["report", str(f), "--html", str(t / "r.html")], [t / "r.html"]),
        ],
    ),
}

CASES = [
    (kind, defect, i)
    for kind, (_, commands) in KINDS.items()
    for defect in DEFECTS
    for i in range(len(commands))
    # a run directory is a journal's home; `schedule list -s` takes directories of scenarios
    if not (defect == "directory" and (kind == "journal" or (kind == "scenario" and i == 2)))
]


def _check(
    proc: subprocess.CompletedProcess[str], elapsed: float, expected: list[str], *, names: str
) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert names in out, (names, out)
    for text in expected:
        assert text in out, (text, out)
    assert elapsed < LIMIT_S


@pytest.mark.parametrize(("kind", "defect", "command"), CASES)
def test_bad_file_of_every_kind_is_refused_cleanly(
    kind: str, defect: str, command: int, tmp_path: Path
) -> None:
    wrapper: list[str] = []
    if defect == "unreadable" and os.geteuid() == 0:
        # root reads any file through CAP_DAC_OVERRIDE: drop it (and DAC_READ_SEARCH) from
        # the child, so the mode-000 file is unreadable to it as to any other user
        require(shutil.which("setpriv") is not None, "setpriv (Debian: util-linux)")
        wrapper = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    name, commands = KINDS[kind]
    marker = tmp_path / "marker"
    bad = tmp_path / name
    bad.parent.mkdir(parents=True, exist_ok=True)
    make, expected = DEFECTS[defect]
    make(bad, marker)
    argv, outputs = commands[command](tmp_path, bad, marker)
    started = time.monotonic()
    proc = run_cli(*argv, cwd=tmp_path, timeout=LIMIT_S, wrapper=wrapper)
    elapsed = time.monotonic() - started
    # the inventory is named as resolved (a symlink to /dev/zero is named /dev/zero)
    names = "/dev/zero" if (kind == "inventory" and defect == "device") else str(bad)
    _check(proc, elapsed, expected, names=names)
    assert not marker.exists(), "the experiment ran although its input was invalid"
    for out in outputs:
        assert not out.exists(), f"{out} was written"
    assert not (tmp_path / "chaoslab-runs").exists()


def test_alias_bomb_is_refused_in_well_under_a_second_in_process(tmp_path: Path) -> None:
    from chaoslab.errors import InvalidInput
    from chaoslab.model.reader import load_document

    f = tmp_path / "bomb.yaml"
    f.write_bytes(alias_bomb())
    assert f.stat().st_size < 700
    cpu, wall = time.thread_time(), time.monotonic()
    with pytest.raises(InvalidInput, match="expands to more than"):
        load_document(f)
    # CPU time is what an expansion burns; wall time only catches a wait (under load, loosely)
    assert time.thread_time() - cpu < 0.5
    assert time.monotonic() - wall < 10


# --- CLI options -------------------------------------------------------------------------------


def _ok(tmp: Path, marker: Path) -> str:
    return str(_experiment(tmp, marker))


OPTIONS: dict[str, Callable[[Path, Path], list[str]]] = {
    "halt --grace nan": lambda t, m: ["halt", "--grace", "nan"],
    "halt --grace inf": lambda t, m: ["halt", "--grace", "inf"],
    "halt --grace -1s": lambda t, m: ["halt", "--grace", "-1s"],
    "halt --grace 1e999": lambda t, m: ["halt", "--grace", "1e999"],
    "lab up --restart-delay nan": lambda t, m: ["lab", "up", "--restart-delay", "nan"],
    "schedule daemon --tick nan": lambda t, m: ["schedule", "daemon", "--tick", "nan", "-s", str(t)],
    "schedule daemon --tick 0": lambda t, m: ["schedule", "daemon", "--tick", "0", "-s", str(t)],
    "schedule run --on-time inf": lambda t, m: [
        "schedule",
        "run",
        "--once",
        "--on-time",
        "inf",
        "-s",
        str(t),
    ],
    "schedule run --lease .nan": lambda t, m: ["schedule", "run", "--once", "--lease", ".nan", "-s", str(t)],
    "gate --pass-threshold nan": lambda t, m: ["gate", _ok(t, m), "--pass-threshold", "nan"],
    "run --journal-path under a file": lambda t, m: [
        "run",
        _ok(t, m),
        "--journal-path",
        str(t / "exp.yaml" / "journal.json"),
    ],
    "run --run-dir /dev/null/x": lambda t, m: ["run", _ok(t, m), "--run-dir", "/dev/null/x"],
    "run --html a directory": lambda t, m: ["run", _ok(t, m), "--html", str(t)],
    "run --junit a FIFO": lambda t, m: ["run", _ok(t, m), "--junit", str(_mkfifo(t / "pipe.xml"))],
    "run --markdown under a file": lambda t, m: [
        "run",
        _ok(t, m),
        "--markdown",
        str(t / "exp.yaml" / "pm.md"),
    ],
    "run --summary under a file": lambda t, m: ["run", _ok(t, m), "--summary", str(t / "exp.yaml" / "s.md")],
    "gate --output-dir a file": lambda t, m: ["gate", _ok(t, m), "--output-dir", _ok(t, m)],
    "gate --junit under a file": lambda t, m: ["gate", _ok(t, m), "--junit", str(t / "exp.yaml" / "j.xml")],
    "report --html under a file": lambda t, m: [
        "report",
        _ok(t, m),
        "--html",
        str(t / "exp.yaml" / "r.html"),
    ],
    "export cronjob --out-file under a file": lambda t, m: [
        "export",
        "cronjob",
        _ok(t, m),
        "--out-file",
        str(t / "exp.yaml" / "k.yaml"),
    ],
    "slo rules --out-file under a file": lambda t, m: [
        "slo",
        "rules",
        _ok(t, m),
        "--out-file",
        str(t / "exp.yaml" / "r"),
    ],
    "gameday run --runs-dir /dev/null/x": lambda t, m: [
        "gameday",
        "run",
        _ok(t, m),
        "--runs-dir",
        "/dev/null/x",
    ],
}


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_bad_cli_option_is_a_usage_error(case: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    argv = OPTIONS[case](tmp_path, marker)
    option = case.split()[1] if case.split()[1].startswith("--") else case.split()[2]
    started = time.monotonic()
    proc = run_cli(*argv, cwd=tmp_path, timeout=LIMIT_S)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert option in out, (option, out)
    assert elapsed < LIMIT_S
    assert not marker.exists()
    assert not (tmp_path / "chaoslab-runs").exists()


# --- nothing runs until everything is known to be runnable --------------------------------------


def test_a_fault_that_can_never_work_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = _experiment(
        tmp_path,
        marker,
        method="  - {do: stress.disk, with: {path: /nonexistent/dir, mib: 1}, duration: 2s}\n",
    )
    proc = run_cli("run", str(f), "--run-dir", str(tmp_path / "rd"), cwd=tmp_path, timeout=LIMIT_S)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{f}:5 at method[1].with.path" in out and "not a directory" in out
    assert not marker.exists(), "an earlier activity ran before the refusal"
    assert not (tmp_path / "rd").exists()


def test_validate_refuses_more_memory_than_the_machine_has(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = _experiment(
        tmp_path,
        marker,
        method="  - {do: stress.memory, with: {mib: 99999999999}, duration: 2s}\n",
    )
    for command in ("validate", "run"):
        proc = run_cli(command, str(f), cwd=tmp_path, timeout=LIMIT_S)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, out
        assert "method[1].with.mib" in out and "MiB is not possible" in out
        assert "Traceback" not in out
    assert not marker.exists()


def test_input_found_bad_only_after_the_method_started_is_not_called_invalid(tmp_path: Path) -> None:
    """A substituted argument is known only at run time: the run is an error (exit 5),
    since exit 2 promises that nothing ran."""
    marker = tmp_path / "marker"
    f = _experiment(
        tmp_path,
        marker,
        extra="configuration: {p: /nonexistent/dir}\n",
        method="  - {do: stress.disk, with: {path: '${p}', mib: 1}, duration: 2s}\n",
    )
    proc = run_cli("run", str(f), "--run-dir", str(tmp_path / "rd"), cwd=tmp_path, timeout=LIMIT_S)
    out = proc.stdout + proc.stderr
    assert marker.exists()
    assert proc.returncode == 5, out
    assert "invalid input found after the method started" in out


def test_mistyped_runtime_is_a_clear_error_not_a_type_error(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(
        "title: t\ndescription: d\nruntime: {rollbacks: true}\nwindows: {baseline: .nan}\nmethod: []\n"
    )
    proc = run_cli("validate", str(f), cwd=tmp_path, timeout=LIMIT_S)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{f}:4 at windows.baseline" in out and "not a finite number" in out
    f.write_text("title: t\ndescription: d\nruntime: {rollbacks: true}\nmethod: []\n")
    proc = run_cli("validate", str(f), cwd=tmp_path, timeout=LIMIT_S)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"{f}:3 at runtime.rollbacks" in out and "Traceback" not in out
