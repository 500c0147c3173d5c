"""Property-based fuzzing of the one reader and the experiment compiler.

Over generated documents (YAML built from anchors, aliases, tags, flow and block
collections, odd scalars, non-finite numbers, bad bytes; and structured experiments with
mistyped sections), every failure must be chaoslab's ``InvalidInput``: never a
TypeError, RecursionError, MemoryError or a hang. Bounded to a few seconds in the suite;
``CHAOSLAB_FUZZ_EXAMPLES=5000`` runs it longer.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaoslab.drivers.registry import DriverRegistry
from chaoslab.engine.compile import compile_document
from chaoslab.errors import InvalidInput
from chaoslab.model.reader import Document, parse_document

EXAMPLES = int(os.environ.get("CHAOSLAB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the time bound is asserted per example below, in CPU time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PER_EXAMPLE_S = 2.0
REGISTRY = DriverRegistry(load_installed=False)

PIECES = (
    "x",
    "1",
    "-1",
    "1.5",
    ".nan",
    ".inf",
    "-.inf",
    "1e999",
    "NaN",
    "true",
    "null",
    "~",
    "''",
    '"\\ud800"',
    '"\\x07bell"',
    "2024-01-01",
    "!!binary aGVsbG8=",
    "!!python/object:os.system x",
    "!custom x",
    "*a",
    "*undefined",
    "&a 1",
    "10s",
    "-5s",
    "9999999h",
    "<<: *a",
    "{",
    "]",
    "|",
    ">",
    "? x",
)
SCALARS = st.sampled_from(PIECES)
KEYS = st.sampled_from(
    ["title", "description", "method", "runtime", "windows", "load", "slo", "guard", "sli", "x", "<<", "&a k"]
)


def _yaml(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return SCALARS
    inner = _yaml(depth - 1)
    flow_list = st.lists(inner, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]")
    flow_map = st.lists(st.tuples(KEYS, inner), max_size=5).map(
        lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
    )
    anchored = st.tuples(st.sampled_from(["&a ", "&b ", ""]), st.one_of(flow_list, flow_map)).map("".join)
    return st.one_of(inner, flow_list, flow_map, anchored)


DOCUMENTS = st.lists(st.tuples(KEYS, _yaml(3)), min_size=0, max_size=8).map(
    lambda kv: "\n".join(f"{k}: {v}" for k, v in kv) + "\n"
)


@functools.cache
def _warm() -> None:
    """Lazy imports happen once here, not inside a timed example."""
    doc = parse_document(b"title: t\ndescription: d\nmethod: []\nslo: []\nguard: {}\n", "warm.yaml")
    compile_document(doc, registry=REGISTRY)


def _bounded(fn: Any, *args: Any) -> Any:
    _warm()
    # CPU time of this thread: an expansion or a loop burns it; a machine busy with other
    # work only delays it (wall time would make the bound flaky under load)
    started = time.thread_time()
    try:
        return fn(*args)
    finally:
        assert time.thread_time() - started < PER_EXAMPLE_S


@FUZZ
@given(DOCUMENTS)
def test_every_generated_yaml_document_parses_or_is_invalid_input(text: str) -> None:
    try:
        doc = _bounded(parse_document, text.encode("utf-8", "surrogatepass"), "fuzz.yaml")
    except InvalidInput as exc:
        assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)
        return
    assert isinstance(doc, Document) and isinstance(doc.data, dict)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_are_invalid_input(raw: bytes) -> None:
    for name in ("fuzz.yaml", "fuzz.json"):
        try:
            _bounded(parse_document, raw, name)
        except InvalidInput as exc:
            assert exc.problems


JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**12), max_value=10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["10s", "500ms", "-1s", "nan", "lab:lb", "http://127.0.0.1:1", "availability"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10) | KEYS, children, max_size=4)
    ),
    max_leaves=25,
)

SECTIONS = st.fixed_dictionaries(
    {"title": st.just("t"), "description": st.just("d"), "method": st.just([])},
    optional={
        "runtime": JSONISH
        | st.fixed_dictionaries(
            {},
            optional={
                "rollbacks": JSONISH,
                "hypothesis": JSONISH,
                "activity_timeout": JSONISH,
            },
        ),
        "windows": JSONISH,
        "load": JSONISH,
        "slo": JSONISH | st.lists(JSONISH, max_size=3),
        "guard": JSONISH,
        "slo_files": JSONISH,
        "allowance": JSONISH,
        "budget_gate": JSONISH,
        "prometheus": JSONISH,
        "runbook": JSONISH,
        "lab": JSONISH,
        "timeout": JSONISH,
        "lease": JSONISH,
        "sli": JSONISH,
        "tags": JSONISH,
    },
)


@FUZZ
@given(SECTIONS)
def test_every_mistyped_section_is_invalid_input_not_a_crash(data: dict[str, Any]) -> None:
    # Through the reader, as a user's file would come: dumped as YAML, read back.
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    try:
        doc = _bounded(parse_document, text.encode("utf-8", "surrogatepass"), "fuzz.yaml")
        _bounded(lambda: compile_document(doc, registry=REGISTRY))
    except InvalidInput as exc:
        assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)


def test_the_fuzzer_generates_every_defect_the_reader_guards() -> None:
    """So it cannot pass by never generating them."""
    for needed in (
        ".nan",
        "-.inf",
        "1e999",
        "*a",
        "&a 1",
        "*undefined",
        "!!python/object:os.system x",
        "<<: *a",
    ):
        assert needed in PIECES


OTHER_KEYS = st.sampled_from(
    [
        "name",
        "steps",
        "trigger",
        "experiments",
        "weight",
        "thresholds",
        "hosts",
        "apiVersion",
        "kind",
        "spec",
        "slos",
        "objective",
        "x",
    ]
)
OTHER_DOCUMENTS = st.lists(st.tuples(OTHER_KEYS, _yaml(3)), min_size=0, max_size=6).map(
    lambda kv: "\n".join(f"{k}: {v}" for k, v in kv) + "\n"
)


@functools.cache
def _loaders() -> dict[str, Any]:
    """The loaders, each called once first so lazy imports are not timed as parsing."""
    import tempfile

    loaders = _loader_functions()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "warm.yaml"
        f.write_text("name: warm-up\n")
        for load in loaders.values():
            try:
                load(f)
            except InvalidInput:
                pass
    return loaders


def _loader_functions() -> dict[str, Any]:
    from chaoslab.drivers.ssh.inventory import load_inventory
    from chaoslab.gate.suite import load_suite
    from chaoslab.model.openslo import load_slo_files
    from chaoslab.scheduler.scenario import load_scenario

    return {
        "scenario": load_scenario,
        "suite": load_suite,
        "slo": lambda p: load_slo_files([p]),
        "inventory": load_inventory,
    }


@FUZZ
@given(OTHER_DOCUMENTS, st.sampled_from(["scenario", "suite", "slo", "inventory"]))
def test_every_file_kind_loads_or_is_invalid_input(text: str, kind: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "fuzz.yaml"
        f.write_text(text, "utf-8", errors="surrogatepass")
        try:
            _bounded(_loaders()[kind], f)
        except InvalidInput as exc:
            assert exc.problems
