"""Reading experiment files safely: size, encoding, safe YAML, nesting depth, line numbers.

Files are parsed by PyYAML's *safe* loader only (JSON is parsed by ``json``). To point
at the line of a problem we compose the YAML node tree once and record where every field
path starts; JSON documents are YAML flow documents, so the same map serves both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import InvalidInput, Problem

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64


class Document(msgspec.Struct, frozen=True, kw_only=True, dict=True):  # dict: cached_property
    """A parsed file: its data and where each field path starts (1-based lines)."""

    path: str
    data: Any
    text: str = ""

    @functools.cached_property
    def lines(self) -> Mapping[str, int]:
        """Field path → line; computed only when a problem needs a line number."""
        return _line_map(self.text) if self.text else {}

    def line(self, path: str) -> int | None:
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return None

    def problem(self, path: str, message: str, hint: str | None = None) -> Problem:
        return Problem(file=self.path, path=path, line=self.line(path), message=message, hint=hint)


def load_document(path: str | Path) -> Document:
    """Read ``path`` as JSON or YAML. Raises ``InvalidInput`` for anything unsafe or broken."""
    name = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InvalidInput([Problem(file=name, message="file not found")]) from None
    except OSError as exc:
        raise InvalidInput([Problem(file=name, message=f"cannot read: {exc.strerror}")]) from None
    if p.is_dir():
        raise InvalidInput([Problem(file=name, message="is a directory, not an experiment file")])
    if size > MAX_BYTES:
        raise InvalidInput(
            [
                Problem(
                    file=name, message=f"file is {size / 1e6:.1f} MB; the limit is {MAX_BYTES // 2**20} MiB"
                )
            ]
        )
    raw = p.read_bytes()
    return parse_document(raw, name)


def parse_document(raw: bytes, name: str) -> Document:
    if not raw.strip():
        raise InvalidInput([Problem(file=name, message="file is empty")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            [
                Problem(
                    file=name,
                    line=line,
                    message=f"not UTF-8 (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                )
            ]
        ) from None
    # Reject absurd nesting before any recursive parser sees it.
    depth = _bracket_depth(text)
    if depth > MAX_DEPTH:
        raise InvalidInput(
            [Problem(file=name, message=f"nesting is {depth} levels deep; the limit is {MAX_DEPTH}")]
        )

    is_json = name.endswith(".json") or text.lstrip().startswith(("{", "["))
    data: Any
    try:
        if is_json:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                if name.endswith(".json"):
                    raise InvalidInput(
                        [
                            Problem(
                                file=name,
                                line=exc.lineno,
                                message=f"not valid JSON: {exc.msg} (column {exc.colno})",
                            )
                        ]
                    ) from None
                data = _safe_yaml(text, name)
        else:
            data = _safe_yaml(text, name)
    except RecursionError:
        raise InvalidInput(
            [Problem(file=name, message=f"nesting is deeper than {MAX_DEPTH} levels")]
        ) from None
    depth = _data_depth(data)
    if depth > MAX_DEPTH:
        raise InvalidInput(
            [Problem(file=name, message=f"nesting is {depth} levels deep; the limit is {MAX_DEPTH}")]
        )
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise InvalidInput(
            [
                Problem(
                    file=name, line=1, message=f"the document must be a mapping (an experiment), got {kind}"
                )
            ]
        )
    return Document(path=name, data=data, text=text)


def _safe_yaml(text: str, name: str) -> Any:
    import yaml  # JSON experiments never pay for it

    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise InvalidInput(
            [
                Problem(
                    file=name,
                    line=mark.line + 1 if mark else None,
                    message=f"unsafe or unknown YAML tag: {exc.problem}",
                    hint="chaoslab loads YAML safely; remove the tag",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(
            [
                Problem(
                    file=name,
                    line=mark.line + 1 if mark else None,
                    message=f"not valid YAML or JSON: {problem}",
                )
            ]
        ) from None


def _bracket_depth(text: str) -> int:
    """Maximum nesting of flow brackets, ignoring quoted strings. Linear, no recursion."""
    depth = best = 0
    in_str: str | None = None
    escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == in_str:
                in_str = None
            continue
        if ch in "\"'":
            in_str = ch
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "\n" and in_str is None:
            pass
    return best


def _data_depth(data: Any) -> int:
    best = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in node)
    return best


def _line_map(text: str) -> dict[str, int]:
    """Field path → line, from YAML's composed node tree (works for JSON too)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: dict[str, int] = {}
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if path:
            lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = str(key.value)
                child = f"{path}.{k}" if path else k
                lines.setdefault(child, key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, f"{path}[{i}]"))
    return lines


def plain(data: Any) -> Any:
    """Deep-copy parsed data into plain dict/list (YAML may share anchors)."""
    if isinstance(data, Mapping):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data
