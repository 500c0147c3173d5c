"""The docker driver: faults on containers through the Docker Engine API (``docker`` SDK).

The SDK is imported lazily inside each call; without it every operation raises
``DriverError`` with the hint ``pip install 'chaoslab[docker]'``. Every SDK and transport
error is translated at this module's boundary (``TargetNotFound`` for a missing
container or network, ``DriverError`` for the rest). The daemon is the one
``docker.from_env()`` finds (``DOCKER_HOST`` etc.) when the fault is planned; the record
keeps its address, absolute (a container id names a container of *that* daemon), and
every later call on the record -- inject, revert, the watchdog, ``chaoslab recover``
from another shell -- talks to that daemon, whatever its own environment says. (With
the environment's TLS settings only if it names the same daemon: otherwise the call
fails and the entry stays open, never "no longer exists" on the wrong daemon.)

Targets (an optional ``docker:`` prefix is accepted; ``KIND=VALUE`` works like ``KIND:VALUE``)::

    name:web                 the container named exactly ``web``
    id:3f2a9c                a container id or a unique prefix of one
    label:app=web            containers whose labels match; ``label:app`` = label present;
    label:app=web,tier=db    several labels are ANDed
    image:busybox:1.36       containers created from that image (reference or image id)

Faults act on *running, unpaused* matches; probes read every match. When no match is
fit for the fault (none runs unpaused; for ``disconnect``, none is on the network) or the
daemon cannot be reached, the fault is planned on what was found and closed as *not
applied* at inject, touching nothing (a dry plan says so at once): the run's identity
locks still see those containers, so a container another run's fault holds paused or stopped is refused as
"locked by" that run, not "not found". Among the matches
the usual selection args pick ``count`` (default 1), ``percent`` or ``all``, at random
with a recorded ``seed`` (``chaoslab.drivers.selection``).

Faults (what the revert does; how the fault ends if the runner dies):

- ``kill``: send ``signal`` (default SIGKILL). No lease. With ``via: process`` (default)
  the signal goes to the container's main process on this host, as a crash would, so the
  restart policy applies; ``docker kill`` (``via: api``) would *disable* the restart
  policy until the next start (Docker documents this), so no policy could ever heal it.
  ``via: process`` needs the daemon on this host (the pid is checked to belong to the
  container's cgroup) and is refused with ``Unsupported`` otherwise. The revert waits up
  to ``timeout`` for the container to run again (and be healthy, if it has a
  healthcheck) and reports ``time_to_recover_s`` from the kill to the daemon's own
  timestamps (``State.StartedAt``, the first passing health check after it), so a late
  revert measures the same value. Without a restart policy it says it cannot heal.
  ``inject`` returns once the daemon has seen the container die; one still running its
  original start ``KILL_SETTLE_S`` after the signal survived it (``data.survived``).
- ``restart``: ``docker restart``; no lease; the revert waits as for ``kill``.
- ``stop`` (revert: start) and ``pause`` (revert: unpause). Leased by a detached
  watchdog (``chaoslab.drivers.watchdog``), armed before the change. It runs on the
  runner's host and talks to the same daemon: it survives the runner, not that host.
  A revert retires the watchdog only once the fault is gone, so a failed revert still
  has the lease behind it; ``check_clean`` counts a watchdog still armed as residue.
- ``throttle``: limit the container to ``cpus`` CPUs through the CFS quota. The record
  holds the exact previous ``CpuQuota``/``CpuPeriod``/``NanoCpus``; revert writes back
  the field that was in use. Caveat of the Engine API: 0 means "leave unchanged", so a
  never-set quota (0) is restored as -1 ("unlimited"), which is the same cgroup value;
  ``check_clean`` compares effective limits. The period is never changed. Watchdog lease.
- ``stress``: ``workers`` CPU spinners (``kind: cpu``) or one process holding ``memory``
  bytes (``kind: memory``) *inside* the container via ``docker exec``. Watchdog lease,
  like ``stop``: the watchdog follows the run's heartbeat, so a dead runner's stressors
  are killed within ``lease.LAPSE_S`` of its last beat, and a fault without duration
  lasts as long as the method. Each stressor is also wrapped in
  ``timeout -s KILL <lease>``, the ceiling enforced in the container itself even if the
  watchdog dies (``timeout`` counts whole seconds, so it is rounded down). Needs ``sh``
  and ``timeout`` in the image (busybox or coreutils). Stressors carry
  ``chaoslab-stress-<fault id>`` in their argv: ``check_clean`` finds them with
  ``docker top``, revert kills them through ``/proc`` from inside the container.
- ``disconnect``: disconnect from ``network``, recording the endpoint (IPAM config,
  aliases, links, driver options, addresses); revert reconnects with the same settings.
  An address chosen by IPAM can only be requested back on networks with a user-configured
  subnet (Docker's rule), so elsewhere the address is reported, not forced. Watchdog lease.

Probes: ``running`` (bool), ``health`` ("healthy", "unhealthy", "starting" or "none"),
``restart_count`` (int). One match gives the value; several give ``{name: value}``.

Written here because the SDK lacks it: ``update_container`` drops zero values and has no
``NanoCpus``, so CPU limits go through the SDK's low-level API client; and Docker's
nanosecond RFC 3339 timestamps are parsed by hand (``datetime`` stops at microseconds).
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import re
import signal
import socket
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from chaoslab.drivers import _proc
from chaoslab.drivers.base import (
    DriverContext,
    Kind,
    LeaseKind,
    Operation,
    Param,
    RevertRecord,
    parse_duration,
)
from chaoslab.drivers.lifecycle import (
    Ask,
    FaultDriver,
    Heal,
    HealingData,
    HealingFault,
    LeasedData,
    LeasedFault,
    not_applied,
)
from chaoslab.drivers.process import parse_signal
from chaoslab.drivers.selection import SELECTION_PARAMS, Selection, pick, resolve_seed
from chaoslab.drivers.watchdog import check_lease, validated
from chaoslab.errors import DriverError, InvalidInput, Problem, TargetNotFound, Unsupported

NAME = "docker"
INSTALL_HINT = "pip install 'chaoslab[docker]'"
TARGET_KINDS = ("name", "id", "label", "image")
API_TIMEOUT_S = 30
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
KILL_SETTLE_S = 2.0  # how long a signalled container may take to die before it "survived"
STRESS_TAG = "chaoslab-stress"
# Kernel floor for cpu.cfs_quota_us (1 ms); Docker rejects less.
MIN_CPU_QUOTA_US = 1000
DEFAULT_CFS_PERIOD_US = 100_000
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")

_SELECT = SELECTION_PARAMS
_TIMEOUT = Param(
    name="timeout",
    type=(str, int, float),
    help="how long revert waits for the container to run (and be healthy) again",
    default="60s",
    duration=True,
)
_GRACE = Param(
    name="grace",
    type=(str, int, float),
    help="time the container gets to stop before SIGKILL",
    default="10s",
    duration=True,
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        name="kill",
        kind=Kind.FAULT,
        summary="Signal the container's main process (default SIGKILL); revert waits to heal",
        params=(
            Param(name="signal", type=(str, int), help="SIGKILL, TERM, 9, ...", default="SIGKILL"),
            Param(
                name="via",
                type=str,
                help="process: signal the main process like a crash (restart policy applies); "
                "api: docker kill (disables the restart policy until the next start)",
                default="process",
                choices=("process", "api"),
            ),
            _TIMEOUT,
            *_SELECT,
        ),
        lease=LeaseKind.NONE,
    ),
    Operation(
        name="restart",
        kind=Kind.FAULT,
        summary="docker restart; revert waits for the container to run (and be healthy)",
        params=(_GRACE, _TIMEOUT, *_SELECT),
        lease=LeaseKind.NONE,
    ),
    Operation(
        name="stop",
        kind=Kind.FAULT,
        summary="docker stop; started again on revert or when the lease ends",
        params=(_GRACE, *_SELECT),
    ),
    Operation(
        name="pause",
        kind=Kind.FAULT,
        summary="docker pause (freezer cgroup); unpaused on revert or when the lease ends",
        params=_SELECT,
    ),
    Operation(
        name="throttle",
        kind=Kind.FAULT,
        summary="Limit the container to CPUS cpus (CFS quota); exact previous limits restored",
        params=(
            Param(
                name="cpus",
                type=(int, float),
                help="CPUs the container may use, e.g. 0.2",
                required=True,
                minimum=0.01,
                maximum=1024,
            ),
            *_SELECT,
        ),
    ),
    Operation(
        name="stress",
        kind=Kind.FAULT,
        summary="CPU spinners or a memory hog inside the container; killed on revert or when the lease ends",
        params=(
            Param(name="kind", type=str, help="cpu or memory", default="cpu", choices=("cpu", "memory")),
            Param(
                name="workers",
                type=int,
                help="CPU spinners (kind cpu)",
                default=1,
                minimum=1,
                maximum=64,
            ),
            Param(
                name="memory",
                type=(str, int),
                help="bytes to hold (kind memory): 64m, 1g, 1048576",
                default="64m",
            ),
            *_SELECT,
        ),
    ),
    Operation(
        name="disconnect",
        kind=Kind.FAULT,
        summary="Disconnect from a network; reconnect with the same settings on revert/lease",
        params=(
            Param(name="network", type=str, help="network name or id", required=True),
            *_SELECT,
        ),
    ),
    Operation(name="running", kind=Kind.PROBE, summary="Whether the container is running"),
    Operation(
        name="health",
        kind=Kind.PROBE,
        summary="Health state: healthy, unhealthy, starting, or none (no healthcheck)",
    ),
    Operation(name="restart_count", kind=Kind.PROBE, summary="Restarts done by the restart policy"),
)

STOP_SETTLE_S = 2.0  # after a stop's grace period, how long the daemon may take to finish it


# --- targets ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Target:
    """A parsed container target. ``value`` is never empty."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def labels(self) -> dict[str, str | None]:
        """``label:a=1,b`` → ``{"a": "1", "b": None}`` (None: the label must exist)."""
        out: dict[str, str | None] = {}
        for part in self.value.split(","):
            key, eq, val = part.partition("=")
            out[key.strip()] = val if eq else None
        return out

    def server_filters(self) -> dict[str, Any]:
        """Filters the daemon applies; results are re-checked by ``matches``."""
        if self.kind == "label":
            return {"label": [k if v is None else f"{k}={v}" for k, v in self.labels().items()]}
        if self.kind == "id":
            return {"id": self.value}
        if self.kind == "name" and not self.is_pattern():
            return {"name": self.value}
        return {}

    def is_pattern(self) -> bool:
        """``name:web-*``: a glob over container names."""
        return self.kind == "name" and any(c in self.value for c in "*?[")

    def matches(self, attrs: Mapping[str, Any], image_tags: Sequence[str]) -> bool:
        if self.kind == "name":
            name = str(attrs.get("Name", "")).lstrip("/")
            if self.is_pattern():
                return fnmatch.fnmatchcase(name, self.value.lstrip("/"))
            return name == self.value.lstrip("/")
        if self.kind == "id":
            return str(attrs.get("Id", "")).startswith(self.value)
        if self.kind == "label":
            have = attrs.get("Config", {}).get("Labels") or {}
            return all(k in have and (v is None or have[k] == v) for k, v in self.labels().items())
        wanted = _normal_ref(self.value)
        image_id = str(attrs.get("Image", ""))
        return (
            _normal_ref(str(attrs.get("Config", {}).get("Image", ""))) == wanted
            or wanted in {_normal_ref(t) for t in image_tags}
            or image_id == self.value
            or (self.value.startswith("sha256:") and image_id.startswith(self.value))
        )


def _normal_ref(ref: str) -> str:
    """``busybox`` and ``busybox:latest`` name the same image."""
    last = ref.rsplit("/", 1)[-1]
    return ref if (":" in last or "@" in ref) else f"{ref}:latest"


def parse_target(target: str | None, *, path: str = "target") -> Target:
    """Parse a container target; raises InvalidInput with a hint when malformed."""
    hint = "use name:NAME (or a glob, name:web-*), id:ID, label:KEY=VALUE[,KEY=VALUE] or image:REF"
    text = (target or "").strip()
    if text.startswith(f"{NAME}:"):
        text = text[len(NAME) + 1 :]
    seps = [i for i in (text.find(":"), text.find("=")) if i > 0]
    if not seps:
        raise InvalidInput([Problem(path=path, message=f"invalid container target {target!r}", hint=hint)])
    kind, value = text[: min(seps)], text[min(seps) + 1 :].strip()
    if kind not in TARGET_KINDS:
        raise InvalidInput([Problem(path=path, message=f"unknown container target kind {kind!r}", hint=hint)])
    if not value or (kind == "label" and any(not k for k in Target(kind=kind, value=value).labels())):
        raise InvalidInput([Problem(path=path, message=f"empty {kind} in target {target!r}", hint=hint)])
    return Target(kind=kind, value=value)


def parse_size(value: Any) -> int:
    """``"64m"`` → 67108864, ``1024`` → 1024. Binary units k, m, g. ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)) and int(m.group(1)) > 0:
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ValueError(f"not a size: {value!r} (use e.g. 64m, 1g or a number of bytes)")


def parse_timestamp(text: str) -> float | None:
    """Docker's RFC 3339 with nanoseconds → Unix time; None for the zero time or junk."""
    m = _TIMESTAMP.match(text or "")
    if not m or text.startswith("0001-"):
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").timestamp()


# --- the SDK boundary ------------------------------------------------------------------


def _sdk() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise DriverError(f"the docker SDK is not installed ({INSTALL_HINT})", driver=NAME) from exc
    return docker


def _transport_errors(docker: Any) -> tuple[type[BaseException], ...]:
    import requests  # a dependency of the docker SDK

    return (docker.errors.DockerException, requests.RequestException, OSError)


def _absolute(base: str) -> str:
    """A daemon address as the SDK dials it: ``unix://d.sock`` is /d.sock, whatever the
    working directory; ``http+unix://`` is ``unix://``."""
    for scheme in ("unix://", "http+unix://"):
        if base.startswith(scheme):
            return "unix:///" + base[len(scheme) :].lstrip("/")
    return base


def _client_settings(docker: Any, daemon: str = "") -> dict[str, Any]:
    """``DockerClient`` keyword arguments: the environment's, or for a record's
    ``daemon`` that address (with the environment's TLS settings only if they are for
    the same daemon)."""
    try:
        settings: dict[str, Any] = dict(docker.utils.kwargs_from_env())
    except docker.errors.DockerException as exc:
        raise DriverError(f"bad Docker client settings: {exc}", driver=NAME, not_applied=True) from exc
    here = _absolute(str(settings.get("base_url") or DEFAULT_SOCKET))
    if daemon and daemon != here:
        settings = {}
    settings["base_url"] = daemon or here
    return settings


def _env_daemon() -> str:
    """The absolute address of the daemon the environment names (what a plan records)."""
    return str(_client_settings(_sdk())["base_url"])


def _preflight(base: str) -> None:
    """Fail early, and cleanly, when a local daemon's socket does not answer.

    docker-py leaks the socket of a failed unix connect (a ResourceWarning in every
    caller) and reports it as a bare "Error while fetching server API version".
    """
    if not base.startswith("unix://"):
        return
    path = base[len("unix://") :]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError as exc:
            raise DriverError(
                f"cannot reach the Docker daemon at {base}: {exc.strerror or exc}",
                driver=NAME,
                not_applied=True,
            ) from exc


@contextlib.contextmanager
def _api(action: str, target: str = "", daemon: str = "") -> Iterator[Any]:
    """A client for one call, to ``daemon`` (a record's) or the environment's; every SDK
    error leaving the block is translated."""
    docker = _sdk()
    errors = _transport_errors(docker)
    settings = _client_settings(docker, daemon)
    _preflight(str(settings["base_url"]))
    try:
        client = docker.DockerClient(timeout=API_TIMEOUT_S, **settings)
    except errors as exc:
        raise DriverError(f"cannot reach the Docker daemon: {exc}", driver=NAME, not_applied=True) from exc
    try:
        yield client
    except docker.errors.NotFound as exc:
        raise TargetNotFound(f"{action}: {_explain(exc)}", driver=NAME, target=target) from exc
    except errors as exc:
        raise DriverError(f"{action}: {_explain(exc)}", driver=NAME, target=target) from exc
    finally:
        client.close()


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _container(client: Any, cid: str) -> Any | None:
    """The container with id ``cid``, or None if it no longer exists."""
    docker = _sdk()
    try:
        return client.containers.get(cid)
    except docker.errors.NotFound:
        return None


def _update(client: Any, cid: str, body: Mapping[str, int]) -> None:
    """POST /containers/{id}/update. The SDK's update_container drops 0 and lacks NanoCpus."""
    api = client.api
    api._result(api._post_json(api._url("/containers/{0}/update", cid), data=dict(body)), True)


# --- container state helpers (pure functions of ``attrs``) -------------------------------


def _state(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    state: Mapping[str, Any] = attrs.get("State") or {}
    return state


def _health(attrs: Mapping[str, Any]) -> str:
    health = _state(attrs).get("Health")
    return str(health.get("Status")) if health else "none"


def _has_healthcheck(attrs: Mapping[str, Any]) -> bool:
    test = (attrs.get("Config") or {}).get("Healthcheck", {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def _live(attrs: Mapping[str, Any]) -> bool:
    s = _state(attrs)
    return bool(s.get("Running")) and not s.get("Paused") and not s.get("Restarting")


def _cpu_limits(attrs: Mapping[str, Any]) -> dict[str, int]:
    hc = attrs.get("HostConfig") or {}
    return {k: int(hc.get(k) or 0) for k in ("CpuQuota", "CpuPeriod", "NanoCpus")}


def _effective(limits: Mapping[str, int]) -> tuple[int, int, int]:
    """Limits as the kernel sees them: any quota <= 0 is "unlimited" (-1)."""
    quota = limits.get("CpuQuota", 0)
    return (quota if quota > 0 else -1, limits.get("CpuPeriod", 0), limits.get("NanoCpus", 0))


def _describe(c: Any) -> dict[str, Any]:
    a = c.attrs
    return {"id": a["Id"], "name": str(a.get("Name", "")).lstrip("/")}


def _heal(attrs: Mapping[str, Any] | None, entry: Watched, since: float) -> Heal:
    """Is the container back since ``since`` (Unix time of the fault)? Read-only."""
    name = entry.name
    if attrs is None:
        return Heal(healed=False, possible=False, detail=f"{name} no longer exists")
    state = _state(attrs)
    started = parse_timestamp(str(state.get("StartedAt", "")))
    restarted = started is not None and str(state.get("StartedAt")) != entry.started_at
    if not state.get("Running") or state.get("Restarting"):
        policy = entry.restart_policy or "no"
        if policy == "no" and not state.get("Restarting"):
            return Heal(
                healed=False,
                possible=False,
                detail=f"{name} is {state.get('Status')} and has no restart policy: "
                "chaoslab cannot heal it (start it, or give it a restart policy)",
            )
        return Heal(healed=False, detail=f"{name} is {state.get('Status')}")
    if entry.healthcheck and _health(attrs) != "healthy":
        return Heal(healed=False, detail=f"{name} is running, health {_health(attrs)}")
    if not restarted:
        return Heal(healed=True, recovered_at=since, detail=f"{name} kept running")
    at = started or since
    if entry.healthcheck:
        # The first passing check after the start; the log keeps the last few checks.
        for check in (_state(attrs).get("Health") or {}).get("Log") or []:
            end = parse_timestamp(str(check.get("End", "")))
            if check.get("ExitCode") == 0 and end is not None and end >= at:
                at = end
                break
        else:
            at = time.time()
    return Heal(healed=True, recovered_at=max(at, since), detail=f"{name} is back")


def _main_pid_is_container(pid: int, cid: str) -> bool:
    """True when host pid ``pid`` lives in the cgroup of container ``cid`` (local daemon)."""
    try:
        return cid in Path(f"/proc/{pid}/cgroup").read_text("utf-8")
    except OSError:
        return False


# --- stress scripts ----------------------------------------------------------------------

_CPU_LOOP = "while :; do :; done"
# Holds the bytes in a shell variable (NULs cannot live in one, hence tr); the loop keeps
# the shell, and so the memory, alive until timeout kills it.
_MEM_HOG = "x=$(dd if=/dev/zero bs=1048576 count={mib} 2>/dev/null | tr '\\000' x); while :; do sleep 1; done"
# Kills every process whose argv holds the tag ($1). The tag is assembled at run time so
# this script's own argv never contains it; $$ is skipped all the same.
_KILL_TAGGED = (
    f'me=$$; t="{STRESS_TAG}""-$1"; n=0; '
    'for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$me" ] && continue; '
    "c=$(tr '\\000' ' ' < \"$d/cmdline\" 2>/dev/null) || continue; "
    'case "$c" in *"$t"*) kill -9 "$p" 2>/dev/null && n=$((n+1));; esac; done; echo "$n"'
)


def _stress_tag(fault_id: str) -> str:
    return f"{STRESS_TAG}-{fault_id}"


def _tagged(client: Any, cid: str, tag: str) -> list[str]:
    """Processes of container ``cid`` whose command line holds ``tag`` (``docker top``)."""
    c = _container(client, cid)
    if c is None or not _state(c.attrs).get("Running"):
        return []
    # -ww: the daemon's ps would otherwise cut lines at its $COLUMNS, and the tag with them.
    top = c.top(ps_args="-ww -eo pid,args")
    found = []
    for row in top.get("Processes") or []:
        line = " ".join(str(x) for x in row)
        if tag in line:
            found.append(line[:100])
    return found


# --- typed records ----------------------------------------------------------------------


class Container(msgspec.Struct, frozen=True, kw_only=True):
    """A picked container, by its full id (the identity) and its name (for people)."""

    id: str
    name: str


class Watched(Container, frozen=True, kw_only=True):
    """A container a kill or restart hits, as it was before: what healing means."""

    started_at: str | None = None
    pid: int = 0
    restart_policy: str = "no"
    healthcheck: bool = False
    restart_count: int = 0


class Limited(Container, frozen=True, kw_only=True):
    previous: dict[str, int]  # CpuQuota, CpuPeriod, NanoCpus before the fault


class Attached(Container, frozen=True, kw_only=True):
    endpoint: dict[str, Any]  # the network endpoint's settings before the fault


class Network(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str


class KillData(HealingData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Watched, ...]
    signal: str
    via: str
    killed_at: float | None = None
    signalled: tuple[str, ...] = ()
    survived: tuple[str, ...] = ()


class RestartData(HealingData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Watched, ...]
    grace_s: float
    killed_at: float | None = None


class StopData(LeasedData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Container, ...]
    grace_s: float


class PauseData(LeasedData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Container, ...]


class ThrottleData(LeasedData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Limited, ...]
    cpus: float
    applied: tuple[dict[str, int], ...] = ()


class StressData(LeasedData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Container, ...]
    kind: str
    workers: int
    memory_bytes: int
    tag: str
    stress_seconds: int | None = None


class DisconnectData(LeasedData, frozen=True, kw_only=True):
    pick: dict[str, Any]
    unfit: str = ""  # why no fault can act on the containers (refused at inject)
    daemon: str = ""  # the daemon, absolute ("": the environment's; older records)
    containers: tuple[Attached, ...]
    network: Network


# --- planning: pick running containers, snapshot what revert and check need ------------------


def _picked(ctx: DriverContext, ask: Ask, client: Any, found: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    picked = pick(found, Selection.from_args(ask.args), resolve_seed(ask.args, ctx), key=lambda c: c.name)
    return list(picked.items), picked.to_dict()


@dataclass(frozen=True, kw_only=True)
class _Found:
    """What a fault's plan resolved its target to. ``unfit``: why no fault can act on
    the chosen containers (none of the matches runs unpaused, none is on the network,
    the daemon cannot be reached); they are still recorded, so the run's locks and
    open-ledger check see them (a container another run holds paused is refused as
    "locked by" that run), and ``refuse`` closes the fault as not applied."""

    chosen: list[Any]
    picked: dict[str, Any]
    unfit: str = ""
    daemon: str = ""


def _find(
    ctx: DriverContext,
    ask: Ask,
    action: str,
    client: Any,
    daemon: str,
    fit: Callable[[Any], bool] = lambda _c: True,
    unfit: str = "",
) -> _Found:
    """Pick among the live matches that ``fit``; when there are none, among every match
    (``unfit`` says why, or "matches no running, unpaused container" with their states).
    TargetNotFound when nothing matches at all."""
    sel = parse_target(ask.target)
    found = _match(client, sel, live_only=False)
    fit_ones = [c for c in found if _live(c.attrs) and fit(c)]
    if fit_ones:
        chosen, picked = _picked(ctx, ask, client, fit_ones)
        return _Found(chosen=chosen, picked=picked, daemon=daemon)
    if not unfit:
        states = ", ".join(f"{_describe(c)['name']} {_state(c.attrs).get('Status')}" for c in found)
        unfit = f"{sel} matches no running, unpaused container ({states})"
    if ctx.dry:  # a dry plan injects nothing, so nothing else would say it
        raise TargetNotFound(unfit, driver=NAME, target=str(sel))
    chosen, picked = _picked(ctx, ask, client, found)
    return _Found(chosen=chosen, picked=picked, unfit=unfit, daemon=daemon)


def _found(ctx: DriverContext, ask: Ask, action: str) -> _Found:
    try:
        daemon = _env_daemon()
        with _api(f"prepare {action}", str(parse_target(ask.target)), daemon) as client:
            return _find(ctx, ask, action, client, daemon)
    except DriverError as exc:
        if not exc.not_applied or ctx.dry:
            raise
        return _Found(chosen=[], picked={}, unfit=str(exc))


def _plain(ctx: DriverContext, ask: Ask, action: str) -> tuple[tuple[Container, ...], _Found]:
    found = _found(ctx, ask, action)
    return tuple(Container(id=c.attrs["Id"], name=_describe(c)["name"]) for c in found.chosen), found


def _watched(ctx: DriverContext, ask: Ask, action: str) -> tuple[tuple[Watched, ...], _Found]:
    found = _found(ctx, ask, action)
    out = []
    for c in found.chosen:
        a = c.attrs
        out.append(
            Watched(
                id=a["Id"],
                name=_describe(c)["name"],
                started_at=_state(a).get("StartedAt"),
                pid=int(_state(a).get("Pid") or 0),
                restart_policy=((a.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no",
                healthcheck=_has_healthcheck(a),
                restart_count=int(a.get("RestartCount") or 0),
            )
        )
    return tuple(out), found


def _endpoint(attrs: Mapping[str, Any], net_id: str) -> tuple[str, Mapping[str, Any]] | None:
    for name, ep in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if ep and ep.get("NetworkID") == net_id:
            return name, ep
    return None


def _check_local(entries: Sequence[Watched], target: str) -> None:
    protected = _proc.protected_pids()
    for e in entries:
        if not _main_pid_is_container(e.pid, e.id):
            raise Unsupported(
                f"the main process of {e.name} is not visible on this host (remote daemon?)",
                driver=NAME,
                target=target,
            )
        if e.pid in protected:
            raise Unsupported(f"pid {e.pid} of {e.name} is protected", driver=NAME, target=target)


def _refuse_unfit(record: RevertRecord, unfit: str) -> None:
    """A plan that found nothing a fault can act on: not applied, nothing touched (after
    the run's locks had their say on what it found)."""
    if unfit:
        raise not_applied(unfit, driver=NAME, target=record.target, error=TargetNotFound)


# --- healing faults: kill, restart ---------------------------------------------------------------


class _Healing[HD: KillData | RestartData](HealingFault[HD]):
    poll_s = 0.1  # each look asks the daemon; time to recover comes from its own timestamps

    def identities(self, record: RevertRecord, data: HD) -> tuple[str, ...]:
        return tuple(f"docker:{e.id}" for e in data.containers)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: HD) -> None:
        _refuse_unfit(record, data.unfit)

    def since(self, record: RevertRecord, data: HD) -> float:
        return data.killed_at or record.created_at

    def heal(self, ctx: DriverContext, record: RevertRecord, data: HD) -> Heal:
        since = self.since(record, data)
        with _api(f"heal {record.operation}", record.target, data.daemon) as client:
            heals = []
            for e in data.containers:
                c = _container(client, e.id)
                heals.append(_heal(None if c is None else c.attrs, e, since))
        return Heal.all(heals, since)


class Kill(_Healing[KillData]):
    operation = "kill"
    data_type = KillData

    def plan(self, ctx: DriverContext, ask: Ask) -> KillData:
        entries, found = _watched(ctx, ask, "kill")
        if ask.full["via"] == "process" and not found.unfit:
            _check_local(entries, str(parse_target(ask.target)))
        return KillData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=entries,
            signal=parse_signal(ask.full["signal"]).name,
            via=str(ask.full["via"]),
            timeout_s=parse_duration(ask.full["timeout"]),
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: KillData) -> KillData:
        sig = signal.Signals[data.signal]
        killed_at = time.time()
        done = []
        with _api("inject kill", record.target, data.daemon) as client:
            for e in data.containers:
                if data.via == "api":
                    client.containers.get(e.id).kill(signal=sig.name)
                else:
                    # Re-checked here: the pid must still be this container's main process.
                    if not _main_pid_is_container(e.pid, e.id):
                        continue
                    try:
                        os.kill(e.pid, sig)
                    except ProcessLookupError:
                        continue
                    except PermissionError as exc:
                        raise DriverError(
                            f"no permission to signal pid {e.pid} of {e.name}",
                            driver=NAME,
                            target=record.target,
                        ) from exc
                done.append(e.id)
            if not done:
                raise not_applied(
                    "every selected container exited before the signal",
                    driver=NAME,
                    target=record.target,
                    error=TargetNotFound,
                )
            survived = _await_exit(client, data.containers, done)
        return msgspec.structs.replace(
            data, killed_at=killed_at, signalled=tuple(done), survived=tuple(survived)
        )


class Restart(_Healing[RestartData]):
    operation = "restart"
    data_type = RestartData

    def plan(self, ctx: DriverContext, ask: Ask) -> RestartData:
        entries, found = _watched(ctx, ask, "restart")
        return RestartData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=entries,
            grace_s=parse_duration(ask.full["grace"]),
            timeout_s=parse_duration(ask.full["timeout"]),
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: RestartData) -> RestartData:
        restarted_at = time.time()
        with _api("inject restart", record.target, data.daemon) as client:
            for e in data.containers:
                client.containers.get(e.id).restart(timeout=math.ceil(data.grace_s))
        return msgspec.structs.replace(data, killed_at=restarted_at)


def _await_exit(client: Any, entries: Sequence[Watched], ids: Sequence[str]) -> list[str]:
    """Wait until the daemon has seen each signalled container die; return survivors.

    Signals are asynchronous: without this, a revert or check right after inject
    could read the old "running" state and call the container healed. A container
    still running its original start after ``KILL_SETTLE_S`` survived the signal.
    """
    started = {e.id: e.started_at for e in entries}
    pending = set(ids)
    deadline = time.monotonic() + KILL_SETTLE_S
    while pending and time.monotonic() < deadline:
        for cid in list(pending):
            c = _container(client, cid)
            s = {} if c is None else _state(c.attrs)
            if not s.get("Running") or s.get("StartedAt") != started[cid]:
                pending.discard(cid)
        if pending:
            time.sleep(0.02)
    return sorted(pending)


# --- leased faults: stop, pause, throttle, stress, disconnect ------------------------------------


class _Leased[LD: StopData | PauseData | ThrottleData | StressData | DisconnectData](LeasedFault[LD]):
    """A change on each picked container, held by a watchdog on this host that follows
    the run's heartbeat and talks to the same daemon (it survives the runner, not the
    host)."""

    def identities(self, record: RevertRecord, data: LD) -> tuple[str, ...]:
        return tuple(f"docker:{e.id}" for e in data.containers)

    def refuse(self, ctx: DriverContext, record: RevertRecord, data: LD) -> None:
        _refuse_unfit(record, data.unfit)

    @abstractmethod
    def undo_one(self, client: Any, record: RevertRecord, data: LD, e: Any, c: Any) -> tuple[bool, str]:
        """Undo the fault on one container. Returns (done, what happened)."""

    @abstractmethod
    def residue_one(self, client: Any, record: RevertRecord, data: LD, e: Any, c: Any) -> list[str]:
        """What of the fault remains on one container. Read-only."""

    def gone(self, e: Container) -> list[str]:
        """Residue of a container that no longer exists. Default: none of the fault."""
        return []

    def undo(self, ctx: DriverContext, record: RevertRecord, data: LD) -> str:
        details, failed = [], False
        with _api(f"revert {record.operation}", record.target, data.daemon) as client:
            for e in data.containers:
                c = _container(client, e.id)
                if c is None:
                    details.append(f"{e.name} no longer exists")
                    continue
                done, what = self.undo_one(client, record, data, e, c)
                failed = failed or not done
                details.append(what)
        if failed:
            raise DriverError("; ".join(details), driver=NAME, target=record.target)
        return "; ".join(details)

    def residue(self, ctx: DriverContext, record: RevertRecord, data: LD) -> list[str]:
        residue: list[str] = []
        with _api(f"check {record.operation}", record.target, data.daemon) as client:
            for e in data.containers:
                c = _container(client, e.id)
                residue += self.gone(e) if c is None else self.residue_one(client, record, data, e, c)
        return residue

    def lease_residue(self, record: RevertRecord, data: LD) -> list[str]:
        # An armed watchdog would act on the target later. Past the lease it is the one
        # reverting (and checking) right now, and exits by itself.
        if time.time() >= float(record.lease_expires_at or 0.0):
            return []
        return [f"watchdog pid {p.pid} still armed" for p in _proc.watchdog_processes(record.fault_id)]


class Stop(_Leased[StopData]):
    operation = "stop"
    data_type = StopData

    def plan(self, ctx: DriverContext, ask: Ask) -> StopData:
        entries, found = _plain(ctx, ask, "stop")
        return StopData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=entries,
            grace_s=parse_duration(ask.full["grace"]),
        )

    def lease_for(self, ask: Ask) -> float | None:
        # The stop itself (its grace period included) must fit inside the lease.
        return max(check_lease(ask.lease_s), parse_duration(ask.full["grace"]) + STOP_SETTLE_S + 5.0)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: StopData) -> StopData:
        with _api("inject stop", record.target, data.daemon) as client:
            for e in data.containers:
                client.containers.get(e.id).stop(timeout=math.ceil(data.grace_s))
        return data

    def undo_one(self, client: Any, record: RevertRecord, data: StopData, e: Any, c: Any) -> tuple[bool, str]:
        state = _state(c.attrs)
        if state.get("Running"):
            # The stop may still be in its grace period (a lease that ended while the
            # runner's stop was under way): wait it out, bounded, then start it.
            began = float(record.lease_expires_at or 0.0) - float(record.lease_s or 0.0)
            settle = began + data.grace_s + STOP_SETTLE_S
            while state.get("Running") and time.time() < settle:
                time.sleep(0.1)
                c.reload()
                state = _state(c.attrs)
            if state.get("Running"):
                return True, f"{e.name} already running"
        c.start()
        return True, f"{e.name} started"

    def residue_one(self, client: Any, record: RevertRecord, data: StopData, e: Any, c: Any) -> list[str]:
        state = _state(c.attrs)
        return [] if state.get("Running") else [f"{e.name} is {state.get('Status')}"]

    def gone(self, e: Container) -> list[str]:
        return [f"{e.name} no longer exists"]


class Pause(_Leased[PauseData]):
    operation = "pause"
    data_type = PauseData

    def plan(self, ctx: DriverContext, ask: Ask) -> PauseData:
        entries, found = _plain(ctx, ask, "pause")
        return PauseData(pick=found.picked, unfit=found.unfit, daemon=found.daemon, containers=entries)

    def apply(self, ctx: DriverContext, record: RevertRecord, data: PauseData) -> PauseData:
        with _api("inject pause", record.target, data.daemon) as client:
            for e in data.containers:
                client.containers.get(e.id).pause()
        return data

    def undo_one(
        self, client: Any, record: RevertRecord, data: PauseData, e: Any, c: Any
    ) -> tuple[bool, str]:
        if not _state(c.attrs).get("Paused"):
            return True, f"{e.name} not paused"
        c.unpause()
        return True, f"{e.name} unpaused"

    def residue_one(self, client: Any, record: RevertRecord, data: PauseData, e: Any, c: Any) -> list[str]:
        return [f"{e.name} is paused"] if _state(c.attrs).get("Paused") else []


class Throttle(_Leased[ThrottleData]):
    operation = "throttle"
    data_type = ThrottleData

    def plan(self, ctx: DriverContext, ask: Ask) -> ThrottleData:
        found = _found(ctx, ask, "throttle")
        entries = tuple(
            Limited(id=c.attrs["Id"], name=_describe(c)["name"], previous=_cpu_limits(c.attrs))
            for c in found.chosen
        )
        return ThrottleData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=entries,
            cpus=float(ask.full["cpus"]),
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: ThrottleData) -> ThrottleData:
        applied = []
        with _api("inject throttle", record.target, data.daemon) as client:
            for e in data.containers:
                prev = e.previous
                if prev["NanoCpus"] > 0:
                    # NanoCpus and CpuQuota exclude each other: keep to the field in use.
                    body = {"NanoCpus": max(1, round(data.cpus * 1e9))}
                else:
                    period = prev["CpuPeriod"] or DEFAULT_CFS_PERIOD_US
                    body = {"CpuQuota": max(MIN_CPU_QUOTA_US, round(data.cpus * period))}
                _update(client, e.id, body)
                applied.append({**body})
        return msgspec.structs.replace(data, applied=tuple(applied))

    def undo_one(
        self, client: Any, record: RevertRecord, data: ThrottleData, e: Any, c: Any
    ) -> tuple[bool, str]:
        prev = e.previous
        if _effective(_cpu_limits(c.attrs)) == _effective(prev):
            return True, f"{e.name} limits already as before"
        if prev["NanoCpus"] > 0:
            body = {"NanoCpus": prev["NanoCpus"]}
        else:
            body = {"CpuQuota": prev["CpuQuota"] if prev["CpuQuota"] != 0 else -1}
        _update(client, e.id, body)
        return True, f"{e.name} CPU limits restored"

    def residue_one(self, client: Any, record: RevertRecord, data: ThrottleData, e: Any, c: Any) -> list[str]:
        now = _cpu_limits(c.attrs)
        return (
            [f"{e.name} CPU limits {now} != before {e.previous}"]
            if _effective(now) != _effective(e.previous)
            else []
        )


class Stress(_Leased[StressData]):
    operation = "stress"
    data_type = StressData

    def plan(self, ctx: DriverContext, ask: Ask) -> StressData:
        entries, found = _plain(ctx, ask, "stress")
        kind = str(ask.full["kind"])
        return StressData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=entries,
            kind=kind,
            workers=int(ask.full["workers"]) if kind == "cpu" else 1,
            memory_bytes=parse_size(ask.full["memory"]),
            tag=_stress_tag(ask.fault_id),
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: StressData) -> StressData:
        expires = float(record.lease_expires_at or time.time())
        # The ceiling in the container (the watchdog ends it sooner when the run stops
        # beating); busybox timeout counts whole seconds, rounded down to stay inside.
        secs = max(1, math.floor(expires - time.time()))
        if data.kind == "cpu":
            script, count = _CPU_LOOP, data.workers
        else:
            script, count = _MEM_HOG.format(mib=max(1, math.ceil(data.memory_bytes / (1 << 20)))), 1
        cmd = ["timeout", "-s", "KILL", str(secs), "sh", "-c", script, data.tag]
        started = []
        with _api("inject stress", record.target, data.daemon) as client:
            for e in data.containers:
                for _ in range(count):
                    exec_id = client.api.exec_create(e.id, cmd)["Id"]
                    client.api.exec_start(exec_id, detach=True)
                    started.append((e, exec_id))
            # A detached exec that cannot start (no sh/timeout in the image) fails silently.
            deadline = time.monotonic() + 5.0
            for e, exec_id in started:
                while True:
                    info = client.api.exec_inspect(exec_id)
                    if info.get("Running"):
                        break
                    if info.get("ExitCode") is not None and info.get("Pid"):
                        raise DriverError(
                            f"the stressor in {e.name} exited with code {info['ExitCode']} "
                            "(the image needs sh and timeout)",
                            driver=NAME,
                            target=record.target,
                        )
                    if time.monotonic() > deadline:
                        raise DriverError(f"the stressor in {e.name} did not start", driver=NAME)
                    time.sleep(0.02)
        return msgspec.structs.replace(data, stress_seconds=secs)

    def undo_one(
        self, client: Any, record: RevertRecord, data: StressData, e: Any, c: Any
    ) -> tuple[bool, str]:
        state = _state(c.attrs)
        if not state.get("Running"):
            return True, f"{e.name} not running: no stressor can remain"
        if state.get("Paused"):
            # No exec reaches a paused container, and its stressors are frozen, not gone.
            return False, f"{e.name} is paused: its stressors are frozen in it (unpause it, then revert)"
        out = c.exec_run(["sh", "-c", _KILL_TAGGED, "sh", record.fault_id])
        if out.exit_code != 0:
            return False, f"{e.name}: killing stressors failed: {out.output[-200:]!r}"
        killed = out.output.decode(errors="replace").strip()
        # SIGKILL is asynchronous; the memory is free only once the process is gone.
        deadline = time.monotonic() + 3.0
        while (left := _tagged(client, e.id, data.tag)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if left:
            return False, f"{e.name}: stressors survived SIGKILL: {left}"
        return True, f"{e.name}: {killed} stressor(s) killed"

    def residue_one(self, client: Any, record: RevertRecord, data: StressData, e: Any, c: Any) -> list[str]:
        return [f"{e.name}: stressor {p}" for p in _tagged(client, e.id, data.tag)]


_ENDPOINT = ("IPAMConfig", "Aliases", "Links", "DriverOpts", "IPAddress", "GlobalIPv6Address", "MacAddress")


class Disconnect(_Leased[DisconnectData]):
    operation = "disconnect"
    data_type = DisconnectData

    def plan(self, ctx: DriverContext, ask: Ask) -> DisconnectData:
        sel = parse_target(ask.target)
        try:
            daemon = _env_daemon()
            with _api("prepare disconnect", str(sel), daemon) as client:
                net = client.networks.get(ask.full["network"])
                found = _find(
                    ctx,
                    ask,
                    "disconnect",
                    client,
                    daemon,
                    fit=lambda c: _endpoint(c.attrs, net.id) is not None,
                    unfit=f"no running container of {sel} is connected to network {net.name}",
                )
                network = Network(id=net.id, name=net.name)
        except DriverError as exc:
            if not exc.not_applied or ctx.dry:
                raise
            found = _Found(chosen=[], picked={}, unfit=str(exc))
            network = Network(id="", name=str(ask.full["network"]))
        entries = []
        for c in found.chosen:
            ep = (_endpoint(c.attrs, network.id) or ("", {}))[1]
            entries.append(
                Attached(
                    id=c.attrs["Id"], name=_describe(c)["name"], endpoint={k: ep.get(k) for k in _ENDPOINT}
                )
            )
        return DisconnectData(
            pick=found.picked,
            unfit=found.unfit,
            daemon=found.daemon,
            containers=tuple(entries),
            network=network,
        )

    def apply(self, ctx: DriverContext, record: RevertRecord, data: DisconnectData) -> DisconnectData:
        with _api("inject disconnect", record.target, data.daemon) as client:
            for e in data.containers:
                client.networks.get(data.network.id).disconnect(e.id)
        return data

    def undo_one(
        self, client: Any, record: RevertRecord, data: DisconnectData, e: Any, c: Any
    ) -> tuple[bool, str]:
        net = data.network
        if _endpoint(c.attrs, net.id) is not None:
            return True, f"{e.name} already on {net.name}"
        ep = e.endpoint
        ipam = ep.get("IPAMConfig") or {}
        client.networks.get(net.id).connect(
            e.id,
            aliases=ep.get("Aliases") or None,
            links=ep.get("Links") or None,
            ipv4_address=ipam.get("IPv4Address") or None,
            ipv6_address=ipam.get("IPv6Address") or None,
            link_local_ips=ipam.get("LinkLocalIPs") or None,
            driver_opt=ep.get("DriverOpts") or None,
        )
        return True, f"{e.name} reconnected to {net.name}"

    def residue_one(
        self, client: Any, record: RevertRecord, data: DisconnectData, e: Any, c: Any
    ) -> list[str]:
        if _endpoint(c.attrs, data.network.id) is None:
            return [f"{e.name} is not connected to {data.network.name}"]
        return []

    def notes(self, ctx: DriverContext, record: RevertRecord, data: DisconnectData) -> list[str]:
        """An address IPAM chose anew on reconnect is reported, not residue."""
        out = []
        with _api("check disconnect", record.target, data.daemon) as client:
            for e in data.containers:
                c = _container(client, e.id)
                found = None if c is None else _endpoint(c.attrs, data.network.id)
                ip = e.endpoint.get("IPAddress")
                if found is not None and ip and found[1].get("IPAddress") != ip:
                    out.append(f"{e.name} got {found[1].get('IPAddress')} (was {ip})")
        return out


# --- the driver ------------------------------------------------------------------------------


class DockerDriver(FaultDriver):
    """Faults and probes on Docker containers. Stateless: everything lives in the record."""

    name = NAME
    faults = (Kill, Restart, Stop, Pause, Throttle, Stress, Disconnect)
    summary = "Kill, stop, pause, restart, throttle, stress or disconnect Docker containers"
    install_hint = INSTALL_HINT

    def operations(self) -> Sequence[Operation]:
        return OPERATIONS

    def validate(self, op: Operation, args: Mapping[str, Any], target: str | None) -> list[Problem]:
        problems = Selection.problems(args) if op.kind is Kind.FAULT else []
        try:
            parse_target(target)
        except InvalidInput as exc:
            problems.extend(exc.problems)
        if "signal" in args:
            try:
                parse_signal(args["signal"])
            except ValueError as exc:
                problems.append(Problem(path="signal", message=str(exc)))
        if op.name == "stress" and "memory" in args:
            try:
                parse_size(args["memory"])
            except ValueError as exc:
                problems.append(Problem(path="memory", message=str(exc)))
        if op.name == "disconnect" and args.get("network") in ("host", "none"):
            problems.append(
                Problem(
                    path="network",
                    message=f"a container cannot be disconnected from the {args['network']!r} network",
                )
            )
        return problems

    # --- probes ------------------------------------------------------------------------------

    def probe(self, ctx: DriverContext, op: Operation, args: Mapping[str, Any], target: str | None) -> Any:
        validated(self, op, args, target, Kind.PROBE)
        sel = parse_target(target)
        read: Callable[[Mapping[str, Any]], Any]
        if op.name == "running":
            read = lambda a: bool(_state(a).get("Running"))  # noqa: E731  (a table of readers)
        elif op.name == "health":
            read = _health
        else:
            read = lambda a: int(a.get("RestartCount") or 0)  # noqa: E731
        with _api(f"probe {op.name}", str(sel)) as client:
            found = self._match(client, sel, live_only=False)
            values = {_describe(c)["name"]: read(c.attrs) for c in found}
        if len(values) == 1:
            return next(iter(values.values()))
        return values

    def _match(self, client: Any, sel: Target, *, live_only: bool) -> list[Any]:
        return _match(client, sel, live_only=live_only)


def _match(client: Any, sel: Target, *, live_only: bool) -> list[Any]:
    """Containers the target names; with ``live_only``, running and unpaused ones.

    Raises TargetNotFound when nothing (live) matches.
    """
    listed = client.containers.list(all=True, filters=sel.server_filters())
    found = []
    for c in listed:
        tags: Sequence[str] = ()
        if sel.kind == "image":
            with contextlib.suppress(_sdk().errors.NotFound):  # image removed under it
                tags = c.image.tags
        if sel.matches(c.attrs, tags):
            found.append(c)
    if not found:
        raise TargetNotFound(f"no container matches {sel}", driver=NAME, target=str(sel))
    if live_only:
        live = [c for c in found if _live(c.attrs)]
        if not live:
            states = ", ".join(f"{_describe(c)['name']} {_state(c.attrs).get('Status')}" for c in found)
            raise TargetNotFound(
                f"{sel} matches no running, unpaused container ({states})",
                driver=NAME,
                target=str(sel),
            )
        found = live
    return found
