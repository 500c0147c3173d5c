"""Chaos Toolkit's ``process`` provider, without importing chaostoolkit-lib.

Why by hand: importing ``chaoslib`` costs ~90 ms (it imports ``importlib.metadata`` and
looks up its own version, ``charset_normalizer``, ``yaml``...), which is most of the wall
time of a trivial run; ``chaoslab run`` must take at most half of ``chaos run``'s. The
process provider is small and its semantics are copied exactly from chaostoolkit-lib
1.4x: the executable is looked up on PATH; string arguments run through the shell after
the resolved path; list arguments are stringified with ``None``/``""`` dropped; dict
arguments are flattened key, value; the provider's ``timeout`` bounds the process; the
result is ``{"status", "stdout", "stderr"}``. Output that is not UTF-8 is decoded by
chaostoolkit-lib's own ``decode_bytes`` (charset detection). ``${}`` substitution, the
python and http providers, configuration and secrets always go through chaostoolkit-lib;
``tests/unit/test_ctk_equivalence.py`` checks this module against chaostoolkit-lib's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

_SLICE_S = 0.05  # how soon a command that exited with its output held open is noticed
_DRAIN_S = 5.0  # reading what a killed command wrote, at most


class ProcessActivityFailed(Exception):
    """Raised like chaostoolkit-lib's ``ActivityFailed`` for a process that timed out."""


def run_process(
    activity: Mapping[str, Any],
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: Mapping[str, str] | None = None,
    leftovers: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run an already-substituted process activity.

    ``env`` is the child's whole environment (the run's ``.env`` var-file values over
    this process's, ``configuration.activity_env``); None: this process's own.

    ``started`` receives the child as soon as it exists, so the runner can end it when
    the activity is abandoned (deadline) or the run is interrupted: a ``chaoslab run``
    that exits never leaves a process activity running behind it. ``leftovers`` ends
    what the command left running (``chaoslab.engine.proctree``): called when the command
    has exited but something it started still holds its output open (Chaos Toolkit would
    wait for that process), and after a provider ``timeout``.
    """
    provider = activity["provider"]
    timeout = provider.get("timeout", None)
    arguments = provider.get("arguments", [])
    path = shutil.which(os.path.expanduser(provider["path"]))
    shell = False
    argv: Any
    if isinstance(arguments, str):
        shell = True
        argv = f"{path} {arguments}"
    else:
        if isinstance(arguments, dict):
            arguments = itertools.chain.from_iterable(arguments.items())
        argv = [str(p) for p in arguments if p not in (None, "")]
        argv.insert(0, path)
    # Popen + communicate is what subprocess.run does; we need the handle first. Its own
    # session: what it starts without calling setsid is one process group, ended as one.
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ if env is None else env,
        shell=shell,
        start_new_session=True,
    ) as proc:
        if started is not None:
            started(proc)
        try:
            stdout, stderr = _collect(proc, timeout, leftovers)
        except subprocess.TimeoutExpired:
            _kill_group(proc, leftovers)
            raise ProcessActivityFailed("process activity took too long to complete") from None
        except BaseException:
            _kill_group(proc, leftovers)
            raise
    return {"status": proc.returncode, "stdout": _decode(stdout), "stderr": _decode(stderr)}


def _collect(
    proc: subprocess.Popen[bytes], timeout: float | None, leftovers: Callable[[], None] | None
) -> tuple[bytes, bytes]:
    """``communicate`` (raising ``TimeoutExpired`` past ``timeout``); once the command has
    exited while its output is still held open, ``leftovers()`` ends the holders."""
    end = None if timeout is None else time.monotonic() + timeout
    cleared = leftovers is None
    for _ in range(10_000_000):  # bounded in count too: at most ~6 days of 50 ms slices
        wait = None if cleared else _SLICE_S
        if end is not None:
            left = max(0.0, end - time.monotonic())
            wait = left if wait is None else min(wait, left)
        try:
            out, err = proc.communicate(timeout=wait)
            return out, err
        except subprocess.TimeoutExpired:
            if end is not None and time.monotonic() >= end:
                raise
            if not cleared and proc.poll() is not None:
                assert leftovers is not None
                leftovers()
                cleared = True
    raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)


def _kill_group(proc: subprocess.Popen[bytes], leftovers: Callable[[], None] | None) -> None:
    """SIGKILL the command's group, end what escaped it, and let go of the output."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    if leftovers is not None:
        leftovers()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=_DRAIN_S)  # a holder that could not be ended: stop reading
    proc.kill()


def validate_process(activity: Mapping[str, Any]) -> str | None:
    """The problem with a process activity, or None (same checks as chaostoolkit-lib)."""
    name = activity.get("name")
    raw = activity["provider"].get("path")
    if not raw:
        return "a process activity must have a path"
    path = shutil.which(raw)
    if not path:
        return f"path '{raw}' cannot be found, in activity '{name}'"
    if not os.access(path, os.X_OK):
        return f"no access permission to '{raw}', in activity '{name}'"
    return None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        from chaoslib import decode_bytes

        return str(decode_bytes(data))
