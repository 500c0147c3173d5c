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
from collections.abc import Callable, Mapping
from typing import Any

from chaoslab.engine.proctree import END_BOUND_S, shepherd_command


class ProcessActivityFailed(Exception):
    """Raised like chaostoolkit-lib's ``ActivityFailed`` for a process that timed out."""


def run_process(
    activity: Mapping[str, Any],
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run an already-substituted process activity.

    ``env`` is the child's whole environment (the run's ``.env`` var-file values over
    this process's, ``configuration.activity_env``); None: this process's own.

    ``started`` receives the child as soon as it exists, so the runner can end it when
    the activity is abandoned (deadline) or the run is interrupted: a ``chaoslab run``
    that exits never leaves a process activity running behind it.
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
    # Popen + communicate is what subprocess.run does; we need the handle first. The
    # command runs under a shepherd (chaoslab.engine.proctree): when it exits, or when the
    # shepherd gets SIGTERM, its whole tree ends — setsid grandchildren and daemons too —
    # so nothing it started can outlive it holding our stdout.
    with subprocess.Popen(
        shepherd_command(["/bin/sh", "-c", argv] if shell else argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ if env is None else env,
        start_new_session=True,
    ) as proc:
        if started is not None:
            started(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_tree(proc)
            raise ProcessActivityFailed("process activity took too long to complete") from None
        except BaseException:
            _end_tree(proc)
            raise
    return {"status": proc.returncode, "stdout": _decode(stdout), "stderr": _decode(stderr)}


def _end_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the shepherd (it ends the whole tree, bounded); SIGKILL its group if it
    has not ended in time."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=END_BOUND_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.communicate()


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
