"""Edge-column hooks of the docker driver (tests/integration/matrix_edges.py).

The machine's dockerd is shared by every test, so nothing here stops or freezes it:
each break acts on the cell's own container (its runtime state, its writable layer, the
address pool of its own network) and is undone on exit.

- **revert fails**, per fault, on the real thing:

  - ``kill``/``restart`` (the revert waits for the service to heal): the content the
    service serves is moved away, so its healthcheck fails and it never turns healthy
    again, restart or not;
  - ``stop`` (revert: start): the container's command is replaced in its writable layer
    by a file that cannot be executed, so ``docker start`` fails in runc;
  - ``pause``/``throttle`` (revert: unpause, update): the container's runtime state
    (runc's ``state.json`` directory) is moved away, so every runtime call on that one
    container fails ("container does not exist") while dockerd and every other
    container carry on;
  - ``stress`` (revert: kill the stressors through ``docker exec``): a co-tenant pauses
    the container; no exec reaches it, and its stressors are frozen, not gone;
  - ``disconnect`` (revert: connect): the container's network is a /30 with one address;
    while the container is off it, another container takes that address, so the
    reconnect finds no free address ("no available IPv4 addresses").

- **target unreachable**: ``DOCKER_HOST`` names the socket of a daemon that died: the
  file is there, bound, and nobody listens (connection refused).
- **named two ways**: run B names the container by its label instead of its name.
- **relative path**: docker faults take no path; the daemon address is written in the
  relative form ``unix://var/run/docker.sock``, which the SDK reads from ``/`` whatever the
  working directory (so does chaoslab's reachability check); a listening decoy socket
  under that relative name in ``elsewhere`` must never be dialled.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord
from tests.conftest import wait_until
from tests.contract.cases import Target
from tests.integration.dockerlab import LABEL
from tests.integration.matrix_edges import EdgeHooks, Variant

RUNC_ROOT = Path("/run/docker/runtime-runc/moby")  # dockerd's default runc state root
WAIT_S = 20.0


def _state(target: Target) -> dict[str, Any]:
    state: dict[str, Any] = target.handle.state()
    return state


def _health(target: Target) -> str:
    return str((_state(target).get("Health") or {}).get("Status", "none"))


def _wait_running(target: Target) -> None:
    wait_until(
        lambda: _state(target)["Running"] and not _state(target).get("Restarting"),
        timeout_s=WAIT_S,
        interval_s=0.05,
        what="the container to run",
    )


def _exec(target: Target, *cmd: str) -> None:
    out = target.handle.container.exec_run(list(cmd))
    assert out.exit_code == 0, (cmd, out.output)


# --- revert fails ---------------------------------------------------------------------------


@contextlib.contextmanager
def _content_gone(target: Target, record: RevertRecord) -> Iterator[None]:
    """The service's content moved away: its healthcheck fails, so however often the
    container restarts it never turns healthy (the heal the revert waits for)."""
    _wait_running(target)  # a killed container is restarted by its policy first
    _exec(target, "mv", "/www/index.html", "/www/index.html.away")
    try:
        wait_until(lambda: _health(target) != "healthy", timeout_s=WAIT_S, interval_s=0.05, what="unhealthy")
        yield
    finally:
        _wait_running(target)
        _exec(target, "mv", "/www/index.html.away", "/www/index.html")
        # Lifted once the service is healthy again, as its healer would make it.
        wait_until(lambda: _health(target) == "healthy", timeout_s=WAIT_S, interval_s=0.05, what="healthy")


def _archive(name: str, *, data: bytes | None = None, link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            assert data is not None
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextlib.contextmanager
def _command_broken(target: Target, record: RevertRecord) -> Iterator[None]:
    """The stopped container's command (busybox ``sleep``) replaced in its writable layer
    by a file that is not executable: ``docker start`` fails in runc."""
    container = target.handle.container
    assert not _state(target)["Running"], "the stop must have stopped it"
    command = str(target.handle.attrs()["Path"])
    assert "/" not in command, command  # an applet on PATH: /bin/<applet> -> busybox
    assert container.put_archive("/bin", _archive(command, data=b"not a program\n"))
    try:
        yield
    finally:
        assert container.put_archive("/bin", _archive(command, link="busybox"))


@contextlib.contextmanager
def _runtime_lost(target: Target, record: RevertRecord) -> Iterator[None]:
    """runc's state of this one container moved away: unpause, update and exec on it
    fail at once ("container does not exist"); dockerd and other containers carry on."""
    state = RUNC_ROOT / target.handle.container.id
    assert (state / "state.json").is_file(), f"no runc state at {state} (dockerd's default runc root)"
    away = state.with_name(f"{state.name}.away-{uuid.uuid4().hex[:6]}")
    state.rename(away)
    try:
        yield
    finally:
        away.rename(state)


@contextlib.contextmanager
def _paused_by_another(target: Target, record: RevertRecord) -> Iterator[None]:
    """Someone else pauses the container (``docker pause``): the stressors are frozen."""
    container = target.handle.container
    container.pause()
    try:
        yield
    finally:
        container.unpause()


@contextlib.contextmanager
def _address_taken(target: Target, record: RevertRecord) -> Iterator[None]:
    """Another container takes the only free address of the container's /30 network
    while it is off it: the reconnect finds no address."""
    net = target.handle.network
    assert net is not None
    lab = target.handle.lab
    holder = lab.run(network=net, labels={f"{LABEL}.role": "address-holder"})
    try:
        yield
    finally:
        holder.remove(force=True)


# --- unreachable, two names, relative ----------------------------------------------------------


@contextlib.contextmanager
def _dead_daemon(target: Target, workdir: Path) -> Iterator[Variant]:
    """A daemon that died and left its socket: bound, nobody listening."""
    short = Path(tempfile.mkdtemp(prefix="cl-dead-"))  # unix socket paths: at most 107 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "docker.sock"))
        yield Variant(env={"DOCKER_HOST": f"unix://{short}/docker.sock"})
    finally:
        sock.close()
        shutil.rmtree(short, ignore_errors=True)


@contextlib.contextmanager
def _by_label(target: Target, workdir: Path) -> Iterator[Variant]:
    """The same container by its lab label (the lab runs no other container)."""
    lab = target.handle.lab
    (only,) = lab.containers()
    assert only.id == target.handle.container.id
    yield Variant(selector=f"label:{LABEL}={lab.session}")


RELATIVE_HOST = "unix://var/run/docker.sock"


@contextlib.contextmanager
def _relative_host(target: Target, here: Path, elsewhere: Path) -> Iterator[Variant]:
    """``DOCKER_HOST`` in its relative form; a decoy daemon socket under the same
    relative name in ``elsewhere`` counts who dials it."""
    decoy_dir = elsewhere / "var" / "run"
    decoy_dir.mkdir(parents=True)
    short = Path(tempfile.mkdtemp(prefix="cl-decoy-"))
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dialled: list[bool] = []
    stop = threading.Event()

    def count() -> None:
        decoy.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = decoy.accept()
            except OSError:
                continue
            dialled.append(True)
            conn.close()

    try:
        decoy.bind(str(short / "docker.sock"))
        decoy.listen(8)
        (decoy_dir / "docker.sock").symlink_to(short / "docker.sock")
        thread = threading.Thread(target=count, daemon=True)
        thread.start()
        try:
            yield Variant(env={"DOCKER_HOST": RELATIVE_HOST}, relative=(RELATIVE_HOST,))
        finally:
            stop.set()
            thread.join(timeout=5)
        assert not dialled, "something dialled the decoy daemon under the relative name"
    finally:
        decoy.close()
        shutil.rmtree(short, ignore_errors=True)


def _hooks(break_revert: Any, **over: Any) -> EdgeHooks:
    return EdgeHooks(
        break_revert=break_revert,
        unreachable=_dead_daemon,
        alias=_by_label,
        relative=_relative_host,
        **over,
    )


HOOKS: dict[str, EdgeHooks] = {
    # The heal the revert waits for cannot come: a short wait, so the cell takes seconds.
    "docker.kill": _hooks(_content_gone, revert_fails_args={"timeout": "3s"}),
    "docker.restart": _hooks(_content_gone, revert_fails_args={"timeout": "3s"}),
    "docker.stop": _hooks(_command_broken),
    "docker.pause": _hooks(_runtime_lost),
    "docker.throttle": _hooks(_runtime_lost),
    "docker.stress": _hooks(_paused_by_another),
    "docker.disconnect": _hooks(_address_taken),
}
