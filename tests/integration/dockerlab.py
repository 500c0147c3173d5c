"""A real Docker Engine for the docker driver's tests, and a busybox image built offline.

No registry is reachable here, so the test image is ``docker import``-ed from a rootfs
tar holding Debian's static busybox (package ``busybox-static``) and one symlink per
applet. Containers run with ``--network host`` (busybox httpd bound to 127.0.0.1 on a
free port) or on an ``--internal`` network that carries no traffic.

If no daemon answers on the default socket, ``DockerLab.start`` launches ``dockerd``
with the flags of ``.ci/docker-up.sh`` (``DOCKERD_FLAGS``) and ``stop`` ends that
daemon by its pid; a daemon someone else started is never stopped. Under pytest-xdist it
starts none (the workers would share it, and the first to finish would stop it).

Every container and network this module creates carries the label ``LABEL`` with the
session's id, so ``cleanup`` removes exactly them, even after a failed test.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import poll

DOCKER_SOCK = "/var/run/docker.sock"
# Same as .ci/docker-up.sh: keep dockerd away from iptables, ip_forward and docker0 so
# the other integration tests on this machine see the network stack they expect.
DOCKERD_FLAGS = (
    f"--host=unix://{DOCKER_SOCK}",
    "--pidfile=/var/run/docker.pid",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--bridge=none",
)
LABEL = "chaoslab.test"
BUSYBOX = "/bin/busybox"
IMAGE_REPO = "chaoslab-test/busybox"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers() -> bool:
    """GET /_ping on the default socket, with a plain socket that is always closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(DOCKER_SOCK)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
        except OSError:
            return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def busybox_rootfs_tar() -> bytes:
    """A rootfs with /bin/busybox, a symlink per applet, /tmp and a web root."""
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True, timeout=10
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "proc", "sys", "dev", "www"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        add_file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\n")
        add_file("www/index.html", b"ok\n")
    return buf.getvalue()


@dataclass(kw_only=True)
class DockerLab:
    """One test session's view of the Docker Engine. Mutable: it tracks what it started."""

    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    dockerd_pid: int | None = None
    image: str = ""
    problem: str = ""
    _client: Any = None
    _log: Any = None
    _proc: subprocess.Popen[bytes] | None = None

    # --- daemon --------------------------------------------------------------------------
    def start(self, log_path: Path) -> bool:
        """Make sure a daemon answers; start one if needed. False (with ``problem``) if not."""
        try:
            import docker
        except ImportError:
            self.problem = "the docker SDK is not installed (pip install 'chaoslab[docker]')"
            return False
        if not Path(BUSYBOX).exists():
            self.problem = f"{BUSYBOX} missing (apt-get install busybox-static)"
            return False
        if not _answers():
            dockerd = shutil.which("dockerd")
            if dockerd is None:
                self.problem = "dockerd not installed (apt-get install docker.io)"
                return False
            if os.geteuid() != 0:
                self.problem = "dockerd needs root"
                return False
            if os.environ.get("PYTEST_XDIST_WORKER"):
                # Every worker would start (and at its end stop) the one daemon they share.
                self.problem = (
                    "no Docker Engine answers; under pytest-xdist start it first (sh .ci/docker-up.sh)"
                )
                return False
            self._log = log_path.open("wb")
            self._proc = subprocess.Popen(
                [dockerd, *DOCKERD_FLAGS],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.dockerd_pid = self._proc.pid
            if poll(_answers, timeout_s=30, interval_s=0.2) is None:
                self.problem = f"dockerd did not answer within 30 s (log: {log_path})"
                return False
        import docker

        self._client = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}", timeout=60)
        return True

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            # Only the daemon this lab started, by its pid; SIGTERM lets it stop its
            # containerd and unmount cleanly.
            proc, self._proc, self.dockerd_pid = self._proc, None, None
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def client(self) -> Any:
        assert self._client is not None, "DockerLab.start() first"
        return self._client

    # --- image ---------------------------------------------------------------------------
    def build_image(self) -> str:
        """``docker import`` the busybox rootfs; the tag is per session, removed by cleanup."""
        tag = f"s{self.session}"
        self.client.api.import_image_from_data(
            busybox_rootfs_tar(),
            repository=IMAGE_REPO,
            tag=tag,
            changes=['CMD ["sleep", "3600"]', f"LABEL {LABEL}={self.session}"],
        )
        self.image = f"{IMAGE_REPO}:{tag}"
        return self.image

    # --- containers ----------------------------------------------------------------------
    def labels(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {LABEL: self.session, **(extra or {})}

    def run(
        self,
        *,
        name: str | None = None,
        command: list[str] | None = None,
        labels: Mapping[str, str] | None = None,
        network_mode: str = "none",
        network: str | None = None,
        restart: str | None = None,
        healthcheck: list[str] | None = None,
        health_interval_s: float = 0.25,
        wait: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Start a labelled container; with ``wait``, return once it is running (and healthy)."""
        opts: dict[str, Any] = {
            "name": name or f"chaoslab-test-{self.session}-{uuid.uuid4().hex[:6]}",
            "labels": self.labels(labels),
            "detach": True,
            # A short grace so a `docker stop` of a shell that ignores SIGTERM is quick.
            "stop_signal": "SIGKILL",
            **kwargs,
        }
        if network is not None:
            opts["network"] = network
        else:
            opts["network_mode"] = network_mode
        if restart:
            opts["restart_policy"] = {"Name": restart}
        if healthcheck:
            nanos = int(health_interval_s * 1e9)
            opts["healthcheck"] = {
                "test": ["CMD", *healthcheck],
                "interval": nanos,
                "timeout": 2_000_000_000,
                "retries": 3,
                "start_period": 0,
            }
        container = self.client.containers.run(self.image, command or None, **opts)
        if wait:
            self.wait_ready(container, healthy=bool(healthcheck))
        return container

    def httpd(self, **kwargs: Any) -> tuple[Any, int]:
        """busybox httpd on 127.0.0.1:PORT (host network) with a wget healthcheck."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/index.html"
        container = self.run(
            command=["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            network_mode="host",
            healthcheck=["wget", "-q", "-O", "/dev/null", url],
            **kwargs,
        )
        return container, port

    def wait_ready(self, container: Any, *, healthy: bool, timeout_s: float = 30) -> None:
        """Return once ``container`` runs (and, with ``healthy``, its healthcheck passes)."""

        def ready() -> bool:
            container.reload()
            state = container.attrs["State"]
            ok = state["Running"] and not state["Paused"]
            if healthy:
                ok = ok and state.get("Health", {}).get("Status") == "healthy"
            return bool(ok)

        if poll(ready, timeout_s=timeout_s, interval_s=0.05) is None:
            raise TimeoutError(f"container {container.name} not ready: {container.attrs['State']}")

    def internal_network(self, *, prefix: int | None = None) -> Any:
        """A user-defined bridge network with ``--internal``: nothing leaves it. With
        ``prefix`` (e.g. 30: one address for a container) its subnet is a random free
        one of that size in 10.128.0.0/9, which no default address pool uses."""
        name = f"chaoslab-test-{self.session}-{uuid.uuid4().hex[:6]}"
        if prefix is None:
            return self.client.networks.create(name, driver="bridge", internal=True, labels=self.labels())
        import docker

        rng = random.Random()
        for _ in range(20):  # another test's network may already hold the subnet
            block = ipaddress.ip_network("10.128.0.0/9")
            offset = rng.randrange(block.num_addresses >> (32 - prefix)) << (32 - prefix)
            subnet = ipaddress.ip_network(f"{block.network_address + offset}/{prefix}")
            pool = docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet.network_address + 1))
            try:
                return self.client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    labels=self.labels(),
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                )
            except docker.errors.APIError as exc:
                if "overlap" not in str(exc):
                    raise
        raise RuntimeError(f"no free /{prefix} subnet in 10.128.0.0/9 after 20 tries")

    def containers(self) -> list[Any]:
        return list(self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.session}"}))

    def cleanup(self, *, image: bool = False) -> list[str]:
        """Remove every container and network of this session (and the image). Returns names."""
        removed: list[str] = []
        for c in self.containers():
            with contextlib.suppress(Exception):
                c.remove(force=True)
                removed.append(c.name)
        for n in self.client.networks.list(filters={"label": f"{LABEL}={self.session}"}):
            with contextlib.suppress(Exception):
                n.remove()
                removed.append(n.name)
        if image and self.image:
            with contextlib.suppress(Exception):
                self.client.images.remove(self.image, force=True)
        return removed


@contextlib.contextmanager
def docker_lab(log_path: Path) -> Iterator[DockerLab]:
    """A started lab with its image; on exit removes everything and stops our dockerd."""
    lab = DockerLab()
    try:
        if lab.start(log_path):
            lab.build_image()
        yield lab
    finally:
        if lab._client is not None:
            lab.cleanup(image=True)
        lab.stop()
