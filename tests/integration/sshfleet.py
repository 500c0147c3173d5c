"""A fleet of real OpenSSH servers on 127.0.0.1 for the ssh driver's tests and benchmark.

Each "host" is ``/usr/sbin/sshd -D -f <tmp config>`` (Debian ``openssh-server``) on its
own free port, with its own throwaway ed25519 host key; one throwaway user key is
authorised for root (tests run as root) through an ``AuthorizedKeysFile`` in the temp
dir, so nothing under ``/etc/ssh`` or ``~/.ssh`` is read or written. Config per server::

    ListenAddress 127.0.0.1 / Port <free>   HostKey <tmp>   PidFile <tmp>
    PermitRootLogin prohibit-password       PasswordAuthentication no
    StrictModes no   UsePAM no   MaxStartups 200   MaxSessions 64

``stop`` ends each sshd (and any per-connection child it still has) by pid. sshd
needs its privilege-separation directory ``/run/sshd``; it is created if missing (it
is the directory the Debian package expects and is left in place).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import poll

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_available() -> bool:
    return os.path.exists(SSHD) and os.path.exists(SSH_KEYGEN) and os.geteuid() == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair at ``path``; returns its SHA256 fingerprint."""
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "chaoslab-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return fingerprint(path.with_name(path.name + ".pub"))


def fingerprint(pub: Path) -> str:
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


@dataclass(kw_only=True)
class SSHHost:
    name: str
    port: int
    host_key: Path
    config: Path
    pid_file: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    fingerprint: str = ""

    @property
    def pub(self) -> Path:
        return self.host_key.with_name(self.host_key.name + ".pub")

    def known_hosts_line(self) -> str:
        kind, blob = self.pub.read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"


@dataclass(kw_only=True)
class SSHFleet:
    """``size`` sshd servers; ``start()``/``stop()`` or use as a context manager."""

    root: Path
    size: int = 3
    hosts: list[SSHHost] = field(default_factory=list)
    user_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.user_key = self.root / "id_user"

    def __enter__(self) -> SSHFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        keygen(self.user_key)
        auth = self.root / "authorized_keys"
        auth.write_text(self.user_key.with_name("id_user.pub").read_text())
        auth.chmod(0o600)
        try:
            for i in range(self.size):
                host = self._make(f"h{i}")
                self.hosts.append(host)
                self._launch(host)
            for host in self.hosts:
                self._wait_ready(host)
        except BaseException:
            self.stop()
            raise

    def _make(self, name: str) -> SSHHost:
        d = self.root / name
        d.mkdir(exist_ok=True)
        host = SSHHost(
            name=name,
            port=free_port(),
            host_key=d / "host_key",
            config=d / "sshd_config",
            pid_file=d / "sshd.pid",
            log=d / "sshd.log",
        )
        host.fingerprint = keygen(host.host_key)
        self._write_config(host)
        return host

    def _write_config(self, host: SSHHost) -> None:
        host.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {host.port}",
                    f"HostKey {host.host_key}",
                    f"PidFile {host.pid_file}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "PrintMotd no",
                    "MaxStartups 200",
                    "MaxSessions 64",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )

    def _launch(self, host: SSHHost) -> None:
        host.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(host.config), "-E", str(host.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_ready(self, host: SSHHost, timeout_s: float = 10.0) -> None:
        """Readiness handshake: the server's ``SSH-`` banner on its port."""

        def banner() -> bool:
            assert host.proc is not None
            if host.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd {host.name} exited: {host.log.read_text() if host.log.exists() else ''}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", host.port), 0.2) as s:
                s.settimeout(1.0)
                return s.recv(8).startswith(b"SSH-")
            return False

        if poll(banner, timeout_s=timeout_s, interval_s=0.05) is None:
            raise RuntimeError(f"sshd {host.name} did not answer on port {host.port}")

    def rekey(self, host: SSHHost) -> str:
        """Give ``host`` a new host key (as a reinstalled machine would); restarts its sshd."""
        self._stop_one(host)
        host.fingerprint = keygen(host.host_key)
        self._launch(host)
        self._wait_ready(host)
        return host.fingerprint

    def stop(self) -> None:
        for host in self.hosts:
            self._stop_one(host)

    def _stop_one(self, host: SSHHost) -> None:
        proc = host.proc
        if proc is None:
            return
        host.proc = None
        children = _children(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        # Per-connection sshd processes outlive the listener while a client is connected.
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- inventories -----------------------------------------------------------------

    def write_known_hosts(self, path: Path, hosts: Sequence[SSHHost] | None = None) -> Path:
        path.write_text("".join(h.known_hosts_line() for h in (self.hosts if hosts is None else hosts)))
        return path

    def inventory(
        self,
        path: Path,
        *,
        known_hosts: Path | None = None,
        hosts: Sequence[SSHHost] | None = None,
        tags: dict[str, list[str]] | None = None,
        **top: Any,
    ) -> Path:
        """Write an inventory for the fleet (known_hosts covering every host by default)."""
        chosen = self.hosts if hosts is None else list(hosts)
        if known_hosts is None:
            known_hosts = self.write_known_hosts(path.with_name(path.stem + ".known_hosts"), chosen)
        doc: dict[str, Any] = {
            "known_hosts": str(known_hosts),
            "remote_state_dir": str(self.root / "remote-state"),
            **top,
            "hosts": {
                h.name: {
                    "address": "127.0.0.1",
                    "port": h.port,
                    "user": "root",
                    "key_file": str(self.user_key),
                    "tags": (tags or {}).get(h.name, ["fleet"]),
                }
                for h in chosen
            },
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


def _children(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return []


@contextlib.contextmanager
def fleet(root: Path, size: int) -> Iterator[SSHFleet]:
    f = SSHFleet(root=root, size=size)
    with f:
        yield f
