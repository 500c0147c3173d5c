"""Reusable activity definitions kept in ``probes/`` and ``actions/`` as YAML files.

An experiment refers to one by name (``ref: lab-healthy``). Each file holds one activity
in either form (Chaos Toolkit provider or chaoslab concise); its name is the file's stem.
Search order: the experiment's own directory and its parent (``probes/``, ``actions/``),
the current directory, then every directory listed in ``CHAOSLAB_LIBRARY``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.errors import InvalidInput
from chaoslab.model.reader import Document, load_document

KINDS = ("probes", "actions")


class LibraryEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    file: str
    data: dict[str, Any]
    document: Document


def search_path(experiment_file: str | None) -> list[Path]:
    roots: list[Path] = []
    if experiment_file:
        here = Path(experiment_file).resolve().parent
        roots += [here, here.parent]
    roots.append(Path.cwd())
    roots += [Path(p) for p in os.environ.get("CHAOSLAB_LIBRARY", "").split(os.pathsep) if p]
    dirs: list[Path] = []
    for root in roots:
        for kind in KINDS:
            d = root / kind
            if d.is_dir() and d not in dirs:
                dirs.append(d)
        if root.name in KINDS and root not in dirs:
            dirs.append(root)
    return dirs


def find(name: str, experiment_file: str | None) -> LibraryEntry | None:
    """The library activity called ``name`` (``probes/x`` or plain ``x``), or None."""
    stem = name.split("/")[-1]
    kind = name.split("/")[0] if "/" in name else None
    for d in search_path(experiment_file):
        if kind and d.name != kind:
            continue
        for ext in (".yaml", ".yml", ".json"):
            f = d / f"{stem}{ext}"
            if f.exists() or f.is_symlink():  # the reader refuses a FIFO, device, directory...
                doc = load_document(f)
                data = dict(doc.data)
                data.setdefault("name", stem)
                return LibraryEntry(name=stem, file=str(f), data=data, document=doc)
    return None


def list_entries(experiment_file: str | None = None) -> list[LibraryEntry]:
    out: list[LibraryEntry] = []
    seen: set[str] = set()
    for d in search_path(experiment_file):
        for f in sorted(d.glob("*.y*ml")) + sorted(d.glob("*.json")):
            if f.stem in seen:
                continue
            try:
                doc = load_document(f)
            except InvalidInput:
                continue
            seen.add(f.stem)
            out.append(LibraryEntry(name=f.stem, file=str(f), data=dict(doc.data), document=doc))
    return out
