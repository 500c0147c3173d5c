"""State is passed in as objects: only the CLI entry modules read chaoslab's home from
the environment, and no module writes the process environment.

An AST scan of every module of the package (DESIGN.md, "Layout": "State ... is passed in
as objects, never read from or written to the environment below the CLI"). A library
function that fell back to ``paths.home()`` when its caller passed nothing would let two
runs in one process with two homes see each other's ledger, locks and lab.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chaoslab"

# The only modules that may read chaoslab's home from the environment: they read it once
# and pass a StatePaths (or the directory) down.
ENTRY_MODULES = frozenset(
    {
        "chaoslab/paths.py",  # defines home() and StatePaths.from_environment
        "chaoslab/cli.py",  # chaoslab run / validate / plan
        "chaoslab/gate/cli.py",
        "chaoslab/lab/cli.py",
        "chaoslab/safety/cli.py",  # recover, halt
        "chaoslab/scheduler/cli.py",
        "chaoslab/serve/cli.py",
        # Called by name from experiment files (a Chaos Toolkit python provider), which
        # have no state object to pass: an entry point, like the CLI.
        "chaoslab/lab/probes.py",
    }
)

HOME_NAMES = frozenset({"CHAOSLAB_HOME", "HOME_ENV"})
READS = frozenset({"get", "getenv", "pop", "setdefault", "__getitem__"})
ENV_WRITES = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"})


def _is_home_name(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value == "CHAOSLAB_HOME"
    if isinstance(node, ast.Name):
        return node.id in HOME_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in HOME_NAMES
    return False


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def state_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """Where ``tree`` reads chaoslab's home from the environment."""
    found: list[tuple[int, str]] = []
    home_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "chaoslab.paths":
            for alias in node.names:
                if alias.name == "home":
                    home_aliases.add(alias.asname or alias.name)
                    found.append((node.lineno, "imports chaoslab.paths.home"))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr == "from_environment":
            found.append((line, "StatePaths.from_environment"))
        elif isinstance(node, ast.Attribute) and node.attr == "home" and isinstance(node.value, ast.Name):
            if node.value.id == "paths":
                found.append((line, "paths.home"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in home_aliases:
            found.append((line, "home()"))
        elif (
            isinstance(node, ast.Subscript)
            and _is_home_name(node.slice)
            and not isinstance(node.ctx, ast.Store)
        ):
            found.append((line, "reads CHAOSLAB_HOME"))
        elif isinstance(node, ast.Call) and node.args and _is_home_name(node.args[0]):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in READS:
                found.append((line, "reads CHAOSLAB_HOME"))
    return found


def environ_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """Where ``tree`` writes the process environment."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        for t in targets:
            if isinstance(t, ast.Subscript) and _is_environ(t.value):
                found.append((line, "os.environ[...] ="))
            elif _is_environ(t):
                found.append((line, "os.environ ="))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_environ(node.func.value) and node.func.attr in ENV_WRITES:
                found.append((line, f"os.environ.{node.func.attr}()"))
            if node.func.attr in ("putenv", "unsetenv"):
                found.append((line, f"os.{node.func.attr}()"))
    return found


def _modules() -> list[tuple[str, ast.AST]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        out.append((rel, ast.parse(path.read_text("utf-8"), filename=rel)))
    return out


def test_the_entry_modules_exist() -> None:
    """A renamed CLI module must be renamed here too (or this list allows nothing)."""
    assert all((PACKAGE.parent / m).is_file() for m in ENTRY_MODULES)


def test_only_the_cli_entry_modules_read_chaoslabs_home_from_the_environment() -> None:
    offenders = [
        f"{rel}:{line}: {what}"
        for rel, tree in _modules()
        if rel not in ENTRY_MODULES and not rel.endswith("/__main__.py")
        for line, what in state_reads(tree)
    ]
    assert not offenders, "library code reads chaoslab's home from the environment:\n" + "\n".join(offenders)


def test_no_module_writes_the_process_environment() -> None:
    offenders = [f"{rel}:{line}: {what}" for rel, tree in _modules() for line, what in environ_writes(tree)]
    assert not offenders, "the process environment is written:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "code",
    [
        "from chaoslab import paths\nx = paths.home() / 'ledger'",
        "from chaoslab.paths import home\nx = home()",
        "from chaoslab.paths import home as h\nx = h()",
        "from chaoslab.paths import StatePaths\nx = StatePaths.from_environment()",
        "import os\nx = os.environ.get('CHAOSLAB_HOME')",
        "import os\nx = os.environ['CHAOSLAB_HOME']",
        "import os\nx = os.getenv('CHAOSLAB_HOME', '/tmp')",
        "from chaoslab.paths import HOME_ENV\nimport os\nx = os.environ.get(HOME_ENV)",
        "def f(env):\n    return env.get('CHAOSLAB_HOME')",
        "from chaoslab import paths\nf = paths.home",
    ],
)
def test_the_scan_finds_every_way_of_reading_the_home(code: str) -> None:
    assert state_reads(ast.parse(code))


@pytest.mark.parametrize(
    "code",
    [
        "from chaoslab.paths import StatePaths\ndef f(state: StatePaths):\n    return state.ledger",
        "import os\nenv = {**os.environ, 'CHAOSLAB_HOME': '/x'}",  # a child's environment
        "x = {'name': 'CHAOSLAB_HOME', 'value': '/var/lib/chaoslab'}",  # a manifest
        "def f(options):\n    return options.home",
    ],
)
def test_the_scan_leaves_passing_state_alone(code: str) -> None:
    assert not state_reads(ast.parse(code))


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.environ['X'] = '1'",
        "import os\nos.environ.update({'X': '1'})",
        "import os\nos.environ.setdefault('X', '1')",
        "import os\nos.putenv('X', '1')",
        "import os\ndel os.environ['X']",
        "from os import environ\nenviron['X'] = '1'",
        "import os\nos.environ |= {'X': '1'}",
        "import os\nos.environ.__setitem__('X', '1')",
    ],
)
def test_the_scan_finds_every_way_of_writing_the_environment(code: str) -> None:
    assert environ_writes(ast.parse(code))


def test_the_scan_leaves_reading_the_environment_alone() -> None:
    code = "import os\nx = os.environ.get('PATH')\nenv = dict(os.environ)\nenv['X'] = '1'"
    assert not environ_writes(ast.parse(code))
