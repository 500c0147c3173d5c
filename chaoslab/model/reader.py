"""The one reader for every file chaoslab reads: experiments, ``ref:``'d probes and
actions, var files, scenarios, SLO files, gate suites, SSH inventories and journals.

Bad input gets a clear ``InvalidInput`` (file, line, field path) in bounded time:

- **regular files only**: the path is ``stat``-ed before it is opened, so a FIFO, device,
  directory or socket is refused without blocking; it is then opened ``O_NONBLOCK`` and
  ``fstat``-ed again to close the race with a swap;
- **bounded size and read**: at most ``max_bytes`` are read, whatever the file claims;
- **UTF-8**, with the line and offset of the first bad byte;
- **YAML** is composed with PyYAML's safe loader into a node graph, and that graph is
  checked *before anything is constructed*: alias uses, the node count as if every alias
  were expanded (computed per node, not by expanding), nesting depth, recursive aliases,
  and tags (the safe schema's only). A 0.6 KB alias bomb is refused in milliseconds;
- **JSON** is parsed by ``json`` after a linear bracket-depth check;
- **non-finite numbers** (``.nan``, ``.inf``, ``NaN``, ``1e999``) are refused wherever
  they appear, so none can reach a deadline, a score or a JSON file.

PyYAML does the parsing; only the bounds, which it does not offer, are written here.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from chaoslab.errors import InvalidInput, Problem

if TYPE_CHECKING:
    import yaml

MAX_BYTES = 8 * 1024 * 1024
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1_000  # alias uses in one file
MAX_NODES = 200_000  # nodes of the document as if every alias were expanded
RECURSIVE = "a YAML alias refers to itself (recursive alias)"

SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t
    for t in (
        "null",
        "bool",
        "int",
        "float",
        "str",
        "binary",
        "timestamp",
        "seq",
        "map",
        "set",
        "omap",
        "pairs",
        "merge",
        "value",
    )
)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _bad(
    name: str, message: str, *, line: int | None = None, path: str = "", hint: str | None = None
) -> InvalidInput:
    return InvalidInput([Problem(file=name, line=line, path=path, message=message, hint=hint)])


def _not_regular(mode: int) -> str | None:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


class Document(msgspec.Struct, frozen=True, kw_only=True, dict=True):  # dict: cached_property
    """A parsed file: its data, and where each field path starts (1-based lines)."""

    path: str
    data: Any
    text: str = ""
    node: Any = None  # the composed YAML node, when the document was YAML

    @functools.cached_property
    def lines(self) -> Mapping[str, int]:
        """Field path → line; computed only when a problem needs a line number."""
        if self.node is not None:
            return line_map(self.node)
        if not self.text:
            return {}
        try:
            return line_map(_compose(self.text, self.path)[0])
        except InvalidInput:
            return {}

    def line(self, path: str) -> int | None:
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self.lines.get("")

    def problem(self, path: str, message: str, hint: str | None = None) -> Problem:
        return Problem(file=self.path, path=path, line=self.line(path), message=message, hint=hint)


# --- bytes ------------------------------------------------------------------------------


def read_bytes(path: str | Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> bytes:
    """The bytes of a regular file, at most ``max_bytes``. Raises ``InvalidInput``."""
    name = str(path)
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise _bad(name, f"{what} not found") from None
    except OSError as exc:
        raise _bad(name, f"cannot read the {what}: {exc.strerror}") from None
    if kind := _not_regular(mode):
        raise _bad(
            name, f"is {kind}; the {what} must be a regular file", hint="give the path of a regular file"
        )
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise _bad(name, f"cannot read the {what}: permission denied") from None
        raise _bad(name, f"cannot read the {what}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if kind := _not_regular(st.st_mode):  # swapped between stat and open
            raise _bad(name, f"is {kind}; the {what} must be a regular file")
        if st.st_size > max_bytes:
            raise _bad(name, f"the {what} is {_size(st.st_size)}; the limit is {_size(max_bytes)}")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:  # bounded even if the file grows while we read it
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise _bad(name, f"the {what} is larger than the limit of {_size(max_bytes)}")
        return b"".join(chunks)
    except OSError as exc:
        raise _bad(name, f"cannot read the {what}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> str:
    """``read_bytes`` decoded as UTF-8, with the line of the first bad byte otherwise."""
    return decode(read_bytes(path, max_bytes=max_bytes, what=what), str(path))


def decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _bad(
            name,
            f"not UTF-8 (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            line=line,
            hint="save the file as UTF-8",
        ) from None


def _size(n: int) -> str:
    return f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{n} bytes"


# --- documents --------------------------------------------------------------------------


def load_document(
    path: str | Path, *, max_bytes: int = MAX_BYTES, what: str = "file", mapping: bool = True
) -> Document:
    """Read ``path`` as one JSON or YAML document. Raises ``InvalidInput``."""
    return parse_document(read_bytes(path, max_bytes=max_bytes, what=what), str(path), mapping=mapping)


def load_documents(path: str | Path, *, max_bytes: int = MAX_BYTES, what: str = "file") -> list[Document]:
    """Every document of a multi-document YAML file (``---``); empty documents skipped."""
    name = str(path)
    text = decode(read_bytes(path, max_bytes=max_bytes, what=what), name)
    _check_brackets(text, name)
    out = []
    for node in _compose(text, name, multi=True):
        data = _construct(node, name)
        if data is not None:
            doc = Document(path=name, data=data, text=text, node=node)
            _check_values(doc)
            out.append(doc)
    return out


def parse_document(raw: bytes | str, name: str, *, mapping: bool = True) -> Document:
    """Parse bytes already read (JSON or YAML). Raises ``InvalidInput``."""
    text = raw if isinstance(raw, str) else decode(raw, name)
    if not text.strip():
        raise _bad(name, "the file is empty")
    _check_brackets(text, name)
    data: Any
    node = None
    is_json = name.endswith(".json") or text.lstrip().startswith(("{", "["))
    if is_json:
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            if name.endswith(".json"):
                raise _bad(name, f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
            is_json = False
        except _NonFinite as exc:
            raise _bad(name, f"{exc.args[0]} is not a finite number", hint="write a finite number") from None
        except RecursionError:
            raise _bad(name, f"nesting is deeper than {MAX_DEPTH} levels") from None
    if not is_json:
        nodes = _compose(text, name)
        node = nodes[0] if nodes else None
        data = _construct(node, name) if node is not None else None
    doc = Document(path=name, data=data, text=text, node=node)
    _check_values(doc)
    if mapping and not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise _bad(name, f"the document must be a mapping, got {kind}", line=1)
    return doc


class _NonFinite(Exception):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def _check_brackets(text: str, name: str) -> None:
    """Maximum nesting of flow brackets, ignoring quoted strings. Linear, no recursion:
    the recursive parsers never see absurd nesting."""
    depth = best = 0
    in_str: str | None = None
    escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\" and in_str == '"':
                escaped = True
            elif ch == in_str:
                in_str = None
            continue
        if ch in "\"'":
            in_str = ch
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
        elif ch in "]}":
            depth = max(0, depth - 1)
    if best > MAX_DEPTH:
        raise _bad(name, f"nesting is {best} levels deep; the limit is {MAX_DEPTH}")


def _yaml_error(exc: Exception, name: str) -> InvalidInput:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return _bad(name, f"not valid YAML or JSON: {problem}", line=mark.line + 1 if mark else None)


def _compose(text: str, name: str, *, multi: bool = False) -> list[yaml.Node]:
    """The composed node graphs (aliases are shared nodes here, nothing is expanded),
    each checked against the bounds."""
    import yaml

    nodes: list[yaml.Node] = []
    try:
        loader = yaml.SafeLoader(text)  # checks the characters: may raise already
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _check_graph(node, name)
                nodes.append(node)
            if not multi and nodes:
                if loader.check_node():
                    event = loader.peek_event()  # type: ignore[no-untyped-call]
                    raise _bad(
                        name,
                        "the file holds more than one YAML document",
                        line=event.start_mark.line + 1,
                    )
                break
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    except RecursionError:
        raise _bad(name, f"nesting is deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return nodes


def _check_graph(root: yaml.Node, name: str) -> None:
    """Alias uses, expanded node count, depth, cycles and tags of one composed document,
    in one pass over the *distinct* nodes (sizes and depths are memoised per node)."""

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    seen: set[int] = set()
    aliases = 0
    on_path: set[int] = set()
    # iterative post-order walk: (node, children_done)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if depth[key] > MAX_DEPTH:
                raise _bad(
                    name,
                    f"nesting is more than {MAX_DEPTH} levels deep",
                    line=node.start_mark.line + 1,
                )
            if size[key] > MAX_NODES:
                raise _bad(
                    name,
                    f"the document expands to more than {MAX_NODES:,} nodes (through YAML aliases)",
                    line=node.start_mark.line + 1,
                    hint="YAML aliases (*name) may not multiply the document; write it out",
                )
            continue
        if key in seen:
            if key in on_path:
                raise _bad(
                    name, "a YAML alias refers to itself (recursive alias)", line=node.start_mark.line + 1
                )
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _bad(
                    name,
                    f"more than {MAX_ALIASES} YAML alias uses",
                    line=node.start_mark.line + 1,
                    hint="YAML aliases (*name) may not multiply the document; write it out",
                )
            continue
        seen.add(key)
        if node.tag not in SAFE_TAGS:
            raise _bad(
                name,
                f"unsafe or unknown YAML tag {node.tag!r}",
                line=node.start_mark.line + 1,
                hint="chaoslab loads YAML safely; remove the tag",
            )
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise _bad(
                    name, "a YAML alias refers to itself (recursive alias)", line=kid.start_mark.line + 1
                )
            stack.append((kid, False))
    # A node reached twice was counted once in ``seen``; the per-node sizes already
    # include every expansion, so the root's size is the expanded document's.


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield k
            yield v
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _construct(node: yaml.Node, name: str) -> Any:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. an unhashable mapping key
        raise _bad(name, f"cannot read this YAML value: {exc}", line=node.start_mark.line + 1) from None
    finally:
        loader.dispose()


def _check_values(doc: Document) -> None:
    """Refuse non-finite numbers anywhere (bounded: the graph was bounded above)."""
    stack: list[tuple[Any, str, int]] = [(doc.data, "", 1)]
    while stack:
        value, path, level = stack.pop()
        if level > MAX_DEPTH + 1:
            raise _bad(
                doc.path, f"nesting is more than {MAX_DEPTH} levels deep", path=path, line=doc.line(path)
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(
                doc.path,
                f"{value!r} is not a finite number",
                path=path,
                line=doc.line(path),
                hint="write a finite number",
            )
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((v, f"{path}.{k}" if path else str(k), level + 1))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                stack.append((v, f"{path}[{i}]", level + 1))


def line_map(root: Any) -> dict[str, int]:
    """Field path → line, from a composed YAML node (bounded by the checks above)."""
    import yaml

    lines: dict[str, int] = {"": root.start_mark.line + 1}
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack and len(lines) <= MAX_NODES:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines.setdefault(child, key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((item, child))
    return lines


def plain(data: Any) -> Any:
    """Deep-copy parsed data into plain dict/list (YAML may share anchors)."""
    if isinstance(data, Mapping):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data
