"""Contract cases of the docker driver, on the real Docker Engine.

Each case gets a ``DockerLab`` of its own (``tests/integration/dockerlab``): the daemon
answering on the default socket (CI starts it with ``.ci/docker-up.sh``; without one the
lab starts and stops a ``dockerd`` per case, which works but is slow), a busybox image
imported for the case, and labelled containers and networks removed on exit.

"Visible on the target" is read from the daemon (``docker inspect`` through the SDK) or
from the kernel (the container's cgroup files, ``/proc`` of its processes), never
through the driver.

``kill`` and ``restart`` have no lease: their target is a busybox httpd that waits 1 s
before serving, with a healthcheck and (for ``kill``) the restart policy ``always``, so
the outage lasts long enough to be seen and then heals by itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import RevertRecord
from tests.contract.cases import FaultCase, Target
from tests.integration.dockerlab import BUSYBOX, DOCKER_SOCK, DockerLab, docker_lab, free_port

# 3 s, not less: the watchdog is a fresh Python process that must load the driver and the
# docker SDK before the lease ends. (The stressor's in-container `timeout` also counts
# whole seconds, rounded down.)
LEASE_S = 3.0
HEAL_S = 15.0
SLOW_START_S = 1  # the httpd target serves (and turns healthy) this long after each start
SPINNER = b"while :; do :; done"  # the driver's CPU stressor, as it appears in /proc


def _engine() -> tuple[bool, str]:
    if importlib.util.find_spec("docker") is None:
        return False, "the docker SDK (pip install 'chaoslab[docker]')"
    if not Path(BUSYBOX).exists():
        return False, f"{BUSYBOX} (apt-get install busybox-static)"
    if Path(DOCKER_SOCK).exists():
        return True, ""
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        return False, "a Docker Engine (apt-get install docker.io; run .ci/docker-up.sh as root)"
    return True, ""


@dataclass(frozen=True, kw_only=True)
class Container:
    """The container under test, its lab, and the network a ``disconnect`` acts on."""

    lab: DockerLab
    container: Any
    network: str | None = None

    def attrs(self) -> dict[str, Any]:
        self.container.reload()
        attrs: dict[str, Any] = self.container.attrs
        return attrs

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.attrs()["State"]
        return state


@contextlib.contextmanager
def _lab(tmp_path: Path) -> Iterator[DockerLab]:
    with docker_lab(tmp_path / "dockerd.log") as lab:
        if not lab.image:
            raise RuntimeError(f"no Docker Engine: {lab.problem}")
        yield lab


def _target(lab: DockerLab, container: Any, network: str | None = None) -> Target:
    return Target(
        selector=f"name:{container.name}",
        handle=Container(lab=lab, container=container, network=network),
        args={"network": network} if network else {},
    )


@contextlib.contextmanager
def _sleeper(tmp_path: Path) -> Iterator[Target]:
    with _lab(tmp_path) as lab:
        yield _target(lab, lab.run())


@contextlib.contextmanager
def _on_internal_network(tmp_path: Path) -> Iterator[Target]:
    # A /30: the gateway and one address, the container's (the failure matrix's
    # revert-fails cell takes it while the container is off the network).
    with _lab(tmp_path) as lab:
        net = lab.internal_network(prefix=30)
        yield _target(lab, lab.run(network=net.name), net.name)


def _slow_httpd(lab: DockerLab, restart: str | None) -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}/index.html"
    serve = f"sleep {SLOW_START_S}; exec httpd -f -p 127.0.0.1:{port} -h /www"
    return lab.run(
        command=["sh", "-c", serve],
        network_mode="host",
        healthcheck=["wget", "-q", "-O", "/dev/null", url],
        restart=restart,
    )


@contextlib.contextmanager
def _self_healing_httpd(tmp_path: Path) -> Iterator[Target]:
    with _lab(tmp_path) as lab:
        yield _target(lab, _slow_httpd(lab, restart="always"))


@contextlib.contextmanager
def _httpd(tmp_path: Path) -> Iterator[Target]:
    with _lab(tmp_path) as lab:
        yield _target(lab, _slow_httpd(lab, restart=None))


# --- observers ------------------------------------------------------------------------------


def _out_of_service(target: Target, record: RevertRecord) -> bool:
    state = target.handle.state()
    health = (state.get("Health") or {}).get("Status")
    return not state["Running"] or bool(state.get("Restarting")) or health != "healthy"


def started_anew(target: Target, record: RevertRecord) -> bool:
    """A kill or restart hit: the start the record saw is over (the container is down,
    restarting, or runs a later start), however far it has healed since."""
    before = {str(c["id"]): c.get("started_at") for c in record.data.get("containers", [])}
    seen = before.get(target.handle.container.id)
    if seen is None:
        return False
    state = target.handle.state()
    return not state["Running"] or bool(state.get("Restarting")) or state.get("StartedAt") != seen


def _stopped(target: Target, record: RevertRecord) -> bool:
    return not target.handle.state()["Running"]


def _paused(target: Target, record: RevertRecord) -> bool:
    return bool(target.handle.state()["Paused"])


def _cgroup_file(pid: int, controller: str, name: str) -> Path | None:
    """A cgroup file of ``pid`` as the kernel exposes it (v1 controller or v2 unified)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" or controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") if controllers == "" else Path("/sys/fs/cgroup") / controllers
            candidate = base / path.lstrip("/") / name
            if candidate.exists():
                return candidate
    return None


def _cpu_capped(target: Target, record: RevertRecord) -> bool:
    pid = int(target.handle.state()["Pid"])
    v1 = _cgroup_file(pid, "cpu", "cpu.cfs_quota_us")
    if v1 is not None:
        return int(v1.read_text()) > 0
    v2 = _cgroup_file(pid, "cpu", "cpu.max")
    assert v2 is not None, f"no CPU controller file for pid {pid}"
    return v2.read_text().split()[0] != "max"


def _spinning(target: Target, record: RevertRecord) -> bool:
    """A CPU spinner runs inside the container (its cgroup names the container id)."""
    cid = target.handle.container.id
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            inside = cid in (proc / "cgroup").read_text()
        except (OSError, IndexError):
            continue
        # `timeout ... sh -c <loop>` carries the loop in its argv too; the shell is the spinner.
        if inside and SPINNER in cmdline and not cmdline.startswith(b"timeout") and status != "Z":
            return True
    return False


def _off_network(target: Target, record: RevertRecord) -> bool:
    networks = target.handle.attrs()["NetworkSettings"]["Networks"] or {}
    return target.handle.network not in networks


CASES = [
    FaultCase(
        id="docker.kill",
        driver="docker",
        op="kill",
        args={"timeout": "20s"},
        make_target=_self_healing_httpd,
        observe=_out_of_service,
        lease_s=None,
        heal_s=HEAL_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.restart",
        driver="docker",
        op="restart",
        args={"grace": "1s", "timeout": "20s"},
        make_target=_httpd,
        observe=_out_of_service,
        lease_s=None,
        heal_s=HEAL_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.stop",
        driver="docker",
        op="stop",
        args={"grace": "1s"},
        make_target=_sleeper,
        observe=_stopped,
        lease_s=LEASE_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.pause",
        driver="docker",
        op="pause",
        make_target=_sleeper,
        observe=_paused,
        lease_s=LEASE_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.throttle",
        driver="docker",
        op="throttle",
        args={"cpus": 0.2},
        make_target=_sleeper,
        observe=_cpu_capped,
        lease_s=LEASE_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.stress",
        driver="docker",
        op="stress",
        args={"kind": "cpu", "workers": 1},
        make_target=_sleeper,
        observe=_spinning,
        lease_s=LEASE_S,
        available=_engine,
    ),
    FaultCase(
        id="docker.disconnect",
        driver="docker",
        op="disconnect",
        make_target=_on_internal_network,
        observe=_off_network,
        lease_s=LEASE_S,
        available=_engine,
    ),
]
