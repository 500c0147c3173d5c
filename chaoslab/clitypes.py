"""Click parameter types for every command's numbers and durations: finite only.

``click.FloatRange`` accepts ``nan`` (every comparison with it is false) and ``inf``;
these types refuse both, and durations use the one grammar of ``chaoslab.units``.
A bad value is a usage error: exit code 2, the option named, no traceback.

Input files are declared ``click.Path(readable=False)`` throughout the CLI: whether a
file can be read (permission, kind, size, encoding) is for ``chaoslab.model.reader`` to
say, so every command words it the same way.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import click

from chaoslab.units import parse_duration


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``10s``, ``500ms``, ``2m`` or a number of seconds; finite, ``>= 0``, bounded."""

    name = "duration"

    def __init__(self, *, positive: bool = False, max_s: float | None = None) -> None:
        self.positive = positive
        self.max_s = max_s

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value) and value >= 0:
            seconds = value  # a default already in seconds
        else:
            try:
                seconds = parse_duration(value, positive=self.positive, max_s=self.max_s)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if self.max_s is not None and seconds > self.max_s:
            self.fail(f"{value!r} is longer than {self.max_s:g}s", param, ctx)
        return seconds


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if rv is not None and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def _first_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            return parent
    return Path("/")


class OutputFile(click.ParamType):  # type: ignore[type-arg]
    """A file chaoslab will write: checked before anything runs (its directory exists or
    can be created, and is writable; the path is not a directory, FIFO or device), so a
    run never ends in a traceback after the work is done. Writers create missing
    directories. ``-`` (stdout) passes when ``allow_dash``."""

    name = "file"

    def __init__(self, *, allow_dash: bool = False) -> None:
        self.allow_dash = allow_dash

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if self.allow_dash and text == "-":
            return text
        if not text or "\0" in text:
            self.fail(f"{text!r} is not a usable file name", param, ctx)
        path = Path(text)
        if path.exists():
            mode = path.stat().st_mode
            if not stat.S_ISREG(mode) and text != os.devnull:
                self.fail(f"{text} exists and is not a regular file", param, ctx)
            if not os.access(path, os.W_OK):
                self.fail(f"{text} is not writable", param, ctx)
            return text
        existing = _first_existing(path.parent)  # missing directories are created
        if not existing.is_dir():
            self.fail(f"cannot write {text}: {existing} is not a directory", param, ctx)
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"cannot write {text}: directory {existing} is not writable", param, ctx)
        return text


class OutputDir(click.ParamType):  # type: ignore[type-arg]
    """A directory chaoslab will create and write into: checked before anything runs."""

    name = "directory"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text or "\0" in text:
            self.fail(f"{text!r} is not a usable directory name", param, ctx)
        path = Path(text)
        existing = _first_existing(path)
        if not existing.is_dir():
            self.fail(f"cannot create {text}: {existing} is not a directory", param, ctx)
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"cannot write into {text}: {existing} is not writable", param, ctx)
        return text
