"""Bring the lab up, take it down, tell the truth about it.

``base_dir`` everywhere is chaoslab's home, passed in (``StatePaths.home``: ``chaoslab
lab`` reads ``CHAOSLAB_HOME`` once, a run passes its own); the lab lives in
``lab_dir(base_dir)``.

- ``up`` is idempotent: a lab whose supervisor is alive and ready is returned as is.
  A stale state (supervisor gone) is cleaned up first. Concurrent ``up``/``down`` calls
  serialise on an ``flock`` of the home directory (a lock that leaves no file behind).
- ``down`` stops the supervisor by pid (it stops its children), waits until every pid
  recorded in the state has exited, kills leftovers only if their command line shows
  they are lab processes (pids get reused), and removes every file the lab wrote.
- ``status`` checks each recorded pid and asks each component over HTTP; it never trusts
  the state file alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from chaoslab.errors import DriverError
from chaoslab.lab.state import STATE_FILE, LabState
from chaoslab.lab.supervisor import LOG_FILE
from chaoslab.paths import lab_dir

LAB_MARKERS = ("chaoslab.lab.", "chaoslab.drivers.proxy")


@contextlib.contextmanager
def _locked(base_dir: Path) -> Iterator[Path]:
    directory = lab_dir(base_dir)
    anchor = base_dir
    anchor.mkdir(parents=True, exist_ok=True)
    fd = os.open(anchor, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)  # closing releases the lock


def _command_line(pid: int | None) -> str | None:
    """``pid``'s command line ("" while it is exiting), or None if it is gone or a zombie."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _is_lab_process(pid: int | None, marker: str | None = None) -> bool:
    """True if ``pid`` runs now, is not a zombie, and its command line is a lab process."""
    cmd = _command_line(pid)
    markers = (marker,) if marker else LAB_MARKERS
    return cmd is not None and any(m in cmd for m in markers)


def _read_raw(directory: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads((directory / STATE_FILE).read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def _supervisor_pid(raw: dict[str, Any] | None) -> int | None:
    pid = ((raw or {}).get("supervisor") or {}).get("pid")
    return pid if isinstance(pid, int) else None


def _recorded_pids(raw: dict[str, Any]) -> list[int]:
    pids = [p for p in [_supervisor_pid(raw), (raw.get("proxy") or {}).get("pid")] if p]
    pids += [c["pid"] for c in (raw.get("components") or {}).values() if c.get("pid")]
    return pids


def _not_gone(pid: int) -> bool:
    """A lab process, or one still exiting: a dying process's command line reads empty
    before it becomes a zombie, so "not a lab process any more" is not yet "gone"."""
    cmd = _command_line(pid)
    return cmd is not None and (cmd == "" or any(m in cmd for m in LAB_MARKERS))


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until no pid in ``pids`` is a live lab process; return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in pids if _not_gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _not_gone(p)]
    return alive


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        if _is_lab_process(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _stop_all(directory: Path, raw: dict[str, Any] | None, timeout_s: float) -> None:
    if raw:
        pids = _recorded_pids(raw)
        sup = _supervisor_pid(raw)
        if sup and _is_lab_process(sup, "chaoslab.lab.supervisor"):
            os.kill(sup, signal.SIGTERM)
            _wait_gone([sup], timeout_s)
        # Leftovers: a supervisor that was SIGKILLed, or one that did not stop in time.
        left = _wait_gone(pids, 0.5)
        _signal(left, signal.SIGTERM)
        left = _wait_gone(left, 3.0)
        _signal(left, signal.SIGKILL)
        left = _wait_gone(left, 3.0)
        if left:
            raise DriverError(f"lab processes did not exit: {left}", driver="lab")
    for pattern in (STATE_FILE, LOG_FILE, ".lab.*.json"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError, OSError):
        directory.rmdir()  # only if empty: never delete what someone else put there


def _live(directory: Path) -> LabState | None:
    raw = _read_raw(directory)
    sup = _supervisor_pid(raw)
    if raw and (raw.get("supervisor") or {}).get("ready") and _is_lab_process(sup, "chaoslab.lab.supervisor"):
        return LabState(directory=directory, raw=raw)
    return None


def up(
    n_replicas: int,
    restart_delay_s: float,
    base_dir: Path,
    *,
    timeout_s: float = 20.0,
) -> LabState:
    """Start the lab (or return the running one) and wait until every component answers."""
    if n_replicas < 1:
        raise ValueError("n_replicas must be at least 1")
    with _locked(base_dir) as directory:
        if (state := _live(directory)) is not None:
            return state
        _stop_all(directory, _read_raw(directory), timeout_s=5.0)
        directory.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "chaoslab.lab.supervisor",
            "--dir",
            str(directory),
            "--replicas",
            str(n_replicas),
            "--restart-delay",
            str(restart_delay_s),
            "--daemon",
        ]
        with open(directory / LOG_FILE, "ab") as log:
            intermediate = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # detached: the caller's Ctrl-C does not reach it
            )
        intermediate.wait(10)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (state := _live(directory)) is not None:
                return state
            raw = _read_raw(directory)
            error = ((raw or {}).get("supervisor") or {}).get("error")
            if error:
                tail = _log_tail(directory)
                _stop_all(directory, raw, timeout_s=5.0)
                raise DriverError(f"the lab failed to start: {error}\n{tail}", driver="lab")
            time.sleep(0.02)
        tail = _log_tail(directory)
        _stop_all(directory, _read_raw(directory), timeout_s=5.0)
        raise DriverError(f"the lab did not become ready in {timeout_s:g}s\n{tail}", driver="lab")


def _log_tail(directory: Path, lines: int = 15) -> str:
    try:
        text = (directory / LOG_FILE).read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def down(base_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """Stop the lab and remove its files. Returns False if nothing was there."""
    with _locked(base_dir) as directory:
        if not directory.exists():
            return False
        raw = _read_raw(directory)
        _stop_all(directory, raw, timeout_s)
        return raw is not None


def _http_ok(port: int | None, path: str, timeout_s: float = 0.5) -> bool:
    if not port:
        return False
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def status(base_dir: Path) -> dict[str, Any]:
    """The lab as it is now: pids checked, each component asked over HTTP. JSON-able."""
    directory = lab_dir(base_dir)
    raw = _read_raw(directory)
    sup_pid = _supervisor_pid(raw)
    sup_alive = _is_lab_process(sup_pid, "chaoslab.lab.supervisor")
    out: dict[str, Any] = {
        "directory": str(directory),
        "running": bool(raw and sup_alive and (raw.get("supervisor") or {}).get("ready")),
        "supervisor": {"pid": sup_pid, "alive": sup_alive},
        "proxy": None,
        "components": {},
    }
    if not raw:
        out["healthy"] = False
        return out
    if proxy := raw.get("proxy"):
        alive = _is_lab_process(proxy.get("pid"), "chaoslab.drivers.proxy")
        out["proxy"] = {
            "pid": proxy.get("pid"),
            "api_port": proxy.get("api_port"),
            "alive": alive,
            "healthy": alive and _http_ok(proxy.get("api_port"), "/proxies"),
        }
    for name, comp in sorted((raw.get("components") or {}).items()):
        alive = _is_lab_process(comp.get("pid"))
        path = "/__lb/status" if comp.get("kind") == "lb" else "/health"
        restarts = comp.get("restarts") or []
        out["components"][name] = {
            "kind": comp.get("kind"),
            "pid": comp.get("pid"),
            "port": comp.get("port"),
            "proxy_port": comp.get("proxy_port"),
            "alive": alive,
            "healthy": alive and _http_ok(comp.get("port"), path),
            "restarts": len(restarts),
            "last_restart": restarts[-1] if restarts else None,
        }
    comps = out["components"].values()
    out["healthy"] = (
        out["running"]
        and all(c["healthy"] for c in comps)
        and (out["proxy"] is None or out["proxy"]["healthy"])
    )
    return out


def format_status(st: dict[str, Any]) -> str:
    """A plain-text table of ``status()`` for the CLI."""
    if not st.get("running") and not st.get("components"):
        return f"lab: not running ({st.get('directory')})"
    head = "healthy" if st.get("healthy") else "DEGRADED"
    if not st.get("running"):
        head = "NOT RUNNING (stale state)"
    lines = [f"lab: {head}  supervisor pid {st['supervisor']['pid']}  ({st['directory']})"]
    rows = [("NAME", "KIND", "PID", "PORT", "VIA PROXY", "STATE", "RESTARTS")]
    proxy = st.get("proxy")
    if proxy:
        rows.append(("proxy", "proxy", str(proxy["pid"]), str(proxy["api_port"]), "-", _word(proxy), "-"))
    for name, c in st["components"].items():
        rows.append(
            (
                name,
                str(c["kind"]),
                str(c["pid"] or "-"),
                str(c["port"]),
                str(c.get("proxy_port") or "-"),
                _word(c),
                str(c["restarts"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _word(c: dict[str, Any]) -> str:
    if c.get("healthy"):
        return "up"
    return "unhealthy" if c.get("alive") else "DOWN"


def lb_url(state: LabState, path: str = "/") -> str:
    return f"http://127.0.0.1:{state.component('lb').port}{path}"


@contextlib.contextmanager
def running_lab(n_replicas: int = 3, restart_delay_s: float = 1.0, *, base_dir: Path) -> Iterator[LabState]:
    """The lab for the duration of a block; taken down afterwards only if we started it.

    A lab we start is marked with our identity (pid + start time), so that if we die
    without taking it down (SIGKILL), ``stop_orphaned_lab`` (run by ``chaoslab recover``)
    knows it is nobody's and stops it."""
    was_running = _live(lab_dir(base_dir)) is not None
    state = up(n_replicas, restart_delay_s, base_dir)
    marker = _starter_file(base_dir)
    if not was_running:
        me = psutil.Process()
        marker.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}), "utf-8")
    try:
        yield state
    finally:
        if not was_running:
            down(base_dir)
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()


def _starter_file(base_dir: Path) -> Path:
    directory = lab_dir(base_dir)
    return directory.with_name(directory.name + ".started-by.json")


def stop_orphaned_lab(base_dir: Path) -> str | None:
    """Stop the lab if a run started it and died without taking it down; say so.

    Returns None when there is nothing to do (no marker, or its run is still alive).
    """
    marker = _starter_file(base_dir)
    try:
        raw = json.loads(marker.read_text("utf-8"))
        pid, created = int(raw["pid"]), float(raw["create_time"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pid, created = 0, 0.0  # unreadable: nobody can claim it
    try:
        proc = psutil.Process(pid) if pid > 0 else None
        if proc is not None and abs(proc.create_time() - created) < 0.01 and proc.status() != "zombie":
            return None  # the run that started it is alive: its lab
    except psutil.Error:
        pass
    stopped = down(base_dir)
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    if not stopped:
        return None
    return f"stopped the lab that a dead run (pid {pid}) started and left running"
