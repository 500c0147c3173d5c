"""The import graph of ``chaoslab`` has no cycles and no import against the layer order.

``lint-imports`` (CI, ``.ci/run``) enforces the same with import-linter's ``layers`` and
``acyclic_siblings`` contracts; this module measures the graph with grimp, the library
import-linter is built on, so a failure names every offending import and prints a cycle
edge by edge, and so the numbers in the CHANGELOG can be recomputed for any checkout::

    .venv/bin/python tests/unit/test_import_graph.py      # prints the counts

What is counted (TYPE_CHECKING imports included, as import-linter counts them):

- a *package* is a child of ``chaoslab`` (``chaoslab.engine``, ``chaoslab.cli``…); package
  A depends on B when a module in A imports a module in B;
- a *back-edge* is a dependency of a package on a package of a higher layer, or on an
  independent sibling of its own layer (the order of the ``layers`` contract in
  ``pyproject.toml``, without its ``ignore_imports``);
- a *cycle* is a strongly connected group of two or more packages (package level), or of
  two or more modules (module level: every module, package ``__init__`` modules included).
"""

from __future__ import annotations

import copy
import sys
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import grimp
import pytest

ROOT = "chaoslab"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(ROOT, cache_dir=None)  # no cache: tests leave no file behind


def layers(pyproject: Path = PYPROJECT) -> list[list[str]]:
    """The layer contract's layers, top first, each a list of its (independent) siblings."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def package_of(module: str) -> str | None:
    """The child of ``chaoslab`` a module belongs to (None for ``chaoslab`` itself)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None


def package_imports(graph: grimp.ImportGraph) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Every (importer package, imported package) pair, with the module imports behind it."""
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = package_of(importer), package_of(imported)
            if a is not None and b is not None and a != b:
                edges.setdefault((a, b), []).append((importer, imported))
    return edges


def back_edges(
    graph: grimp.ImportGraph, order: list[list[str]]
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Package dependencies that point up the layer order, or across one layer."""
    rank = {name: i for i, layer in enumerate(order) for name in layer}
    return {
        (a, b): imports
        for (a, b), imports in package_imports(graph).items()
        if a in rank and b in rank and rank[a] >= rank[b]
    }


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more nodes (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    nodes = sorted({*edges, *(m for targets in edges.values() for m in targets)})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def one_cycle(edges: Mapping[str, Iterable[str]], group: list[str]) -> list[str]:
    """A shortest cycle through the group's first node, as a path that ends where it began."""
    members = set(group)
    start = group[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges.get(node, ())):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{group} is not strongly connected")


def package_graph(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, b in package_imports(graph):
        out.setdefault(a, set()).add(b)
    return out


def module_graph(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def describe(graph: grimp.ImportGraph, path: list[str]) -> str:
    """A module cycle, one import per line with where it is written."""
    lines = []
    for importer, imported in zip(path, path[1:], strict=False):
        where = graph.get_import_details(importer=importer, imported=imported)
        at = f" (line {where[0]['line_number']}: {where[0]['line_contents']})" if where else ""
        lines.append(f"  {importer} -> {imported}{at}")
    return "\n".join(lines)


def describe_packages(graph: grimp.ImportGraph, path: list[str]) -> str:
    """A package cycle, each step with one module import that makes it."""
    imports = package_imports(graph)
    return "\n".join(
        f"  {a} -> {b} (e.g. {imports[(a, b)][0][0]} -> {imports[(a, b)][0][1]})"
        for a, b in zip(path, path[1:], strict=False)
    )


def measure(graph: grimp.ImportGraph, order: list[list[str]]) -> dict[str, int]:
    backs = back_edges(graph, order)
    return {
        "back-edges (package pairs)": len(backs),
        "back-edges (module imports)": sum(len(v) for v in backs.values()),
        "package cycles": len(cycles(package_graph(graph))),
        "module cycles": len(cycles(module_graph(graph))),
    }


def test_every_package_has_a_layer() -> None:
    placed = {name for layer in layers() for name in layer}
    children = {package_of(m) for m in _graph().modules} - {None}
    assert children <= placed, (
        f"place these in the layers contract of pyproject.toml: {sorted(children - placed)}"
    )


def test_no_back_edges() -> None:
    backs = back_edges(_graph(), layers())
    listed = "\n".join(f"  {a} -> {b}: {imports}" for (a, b), imports in sorted(backs.items()))
    assert not backs, f"imports against the layer order of pyproject.toml:\n{listed}"


def test_no_package_cycles() -> None:
    graph = _graph()
    edges = package_graph(graph)
    found = cycles(edges)
    assert not found, "package import cycles:\n" + "\n\n".join(
        describe_packages(graph, one_cycle(edges, group)) for group in found
    )


def test_no_module_cycles() -> None:
    graph = _graph()
    edges = module_graph(graph)
    found = cycles(edges)
    assert not found, "module import cycles:\n" + "\n\n".join(
        describe(graph, one_cycle(edges, group)) for group in found
    )


def test_the_checks_see_a_planted_cycle() -> None:
    """One import from the bottom layer to the top makes a back-edge, a package cycle
    (errors -> cli -> errors) and a module cycle, and the message prints the cycle."""
    graph = copy.deepcopy(_graph())
    assert graph.direct_import_exists(importer="chaoslab.cli", imported="chaoslab.errors", as_packages=False)
    graph.add_import(
        importer="chaoslab.errors", imported="chaoslab.cli", line_number=1, line_contents="import x"
    )
    counts = measure(graph, layers())
    assert counts["back-edges (package pairs)"] >= 1
    assert counts["package cycles"] >= 1 and counts["module cycles"] >= 1
    edges = module_graph(graph)
    group = next(g for g in cycles(edges) if "chaoslab.errors" in g)
    text = describe(graph, one_cycle(edges, group))
    assert "chaoslab.errors -> chaoslab.cli (line 1: import x)" in text


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, []),  # a module importing itself is no cycle between modules
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected
    for group in expected:
        path = one_cycle(edges, group)
        assert path[0] == path[-1] == group[0]
        assert all(b in edges[a] for a, b in zip(path, path[1:], strict=False))


if __name__ == "__main__":
    graph = grimp.build_graph(ROOT, cache_dir=None)
    order = layers(Path(sys.argv[1]) if len(sys.argv) > 1 else PYPROJECT)
    for name, value in measure(graph, order).items():
        print(f"{name}: {value}")
    for (a, b), imports in sorted(back_edges(graph, order).items()):
        print(f"  back-edge {a} -> {b}: {', '.join(f'{i} -> {j}' for i, j in imports)}")
    for group in cycles(package_graph(graph)):
        print(f"  package cycle: {' -> '.join(one_cycle(package_graph(graph), group))}")
    for group in cycles(module_graph(graph)):
        print(f"  module cycle: {' -> '.join(one_cycle(module_graph(graph), group))}")
