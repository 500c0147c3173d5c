"""SSH connections: verified, reused within a run, fanned out with a concurrency limit.

paramiko does the protocol; tenacity retries *connecting* with exponential backoff.
Running a command is never retried: a fault that half-ran must not run twice, so once a
command has been sent its failure is reported, not repeated.

Host keys are verified before authentication:

- pins (``host_key_fingerprints`` in the inventory) replace known_hosts for that host;
- otherwise known_hosts (read-only; paramiko's own lookup handles hashed names and
  ``[addr]:port`` entries) must hold the server's key; a *changed* key is always refused;
- an *unknown* key is refused unless ``trust_new`` is set (OpenSSH's ``accept-new``),
  in which case it is accepted for this run, logged, and pinned in the revert record so
  later reverts talk to the same host. Nothing is written to known_hosts.

Connections are keyed by *route* (address, port, user, credentials), not by the whole
``HostSpec``: revert and check_clean see each host pinned to the key accepted at inject
(see the driver), and must reuse inject's connection rather than open a second one. A
live connection serves a spec only if a fresh connect would have accepted the same key:
the spec it was opened for, or a spec whose pins include the key that connection
verified. Anything else reconnects (and is verified) as before.

What is hand-written here and why: paramiko's ``exec_command`` + ``recv_exit_status`` has
no deadline, so ``run`` drives the channel itself with one; its thread pool helpers
exist only to pair each result with its host and to keep exceptions per host.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaoslab.drivers.ssh.inventory import HostSpec
from chaoslab.errors import DriverError

if TYPE_CHECKING:
    import paramiko

INSTALL_HINT = "pip install 'chaoslab[ssh]'"
_READ_CHUNK = 65536
_POLL_S = 0.02  # how often a waiting command drains its output (keeps the window open)
_EOF_GRACE_S = 2.0  # how long output may trail the exit status


class HostKeyRefused(DriverError):
    """The host's key is unknown or changed; nothing was sent to it. Never retried."""


class CommandTimeout(DriverError):
    """A remote command outlived its timeout; the channel was closed."""


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    host: str
    exit_status: int
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def import_paramiko() -> Any:
    """paramiko, imported only when an ssh operation actually runs."""
    try:
        import paramiko
    except ImportError as exc:
        raise DriverError(
            f"the ssh driver needs paramiko and tenacity ({INSTALL_HINT})", driver="ssh"
        ) from exc
    try:
        import tenacity  # noqa: F401  (checked here so the hint covers both)
    except ImportError as exc:
        raise DriverError(f"the ssh driver needs tenacity ({INSTALL_HINT})", driver="ssh") from exc
    return paramiko


def _describe(key: Any) -> str:
    return f"{key.fingerprint} ({key.get_name()})"


def _known_hosts_name(host: HostSpec) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


_Route = tuple[str, int, str, str | None, bool]


def _route(host: HostSpec) -> _Route:
    """What makes two specs the same SSH session: where, as whom, with which credential."""
    return (host.address, host.port, host.user, host.key_file, host.agent)


@dataclass(frozen=True, kw_only=True)
class _Connection:
    """A live client, the spec it was verified for, and the server key it verified."""

    client: paramiko.SSHClient
    spec: HostSpec
    fingerprint: str

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def serves(self, host: HostSpec) -> bool:
        """True when a fresh connect for ``host`` would accept this connection's key."""
        if host == self.spec:
            return True
        # Pins replace known_hosts for a spec, so the pinned key is all a connect checks.
        return bool(host.fingerprints) and self.fingerprint in host.fingerprints


class ConnectionPool:
    """One verified connection per host, reused by every command of a run. Thread-safe.

    Invariants: a host is connected at most once at a time (per-host lock); ``close``
    closes every connection and the pool stays usable (it reconnects on demand).
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 10.0,
        connect_attempts: int = 3,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self._paramiko = import_paramiko()
        self._connect_timeout_s = connect_timeout_s
        self._connect_attempts = connect_attempts
        self._log = log
        self._lock = threading.Lock()
        self._route_locks: dict[_Route, threading.Lock] = {}
        self._connections: dict[_Route, _Connection] = {}
        # Alive but verified for another spec: may still be in use by another thread,
        # so they are closed with the pool rather than under a caller's feet.
        self._retired: list[paramiko.SSHClient] = []
        self._accepted: dict[str, str] = {}  # host name -> fingerprint seen on connect

    # -- connecting ---------------------------------------------------------------------

    def accepted_fingerprints(self) -> dict[str, str]:
        """Host name → SHA256 fingerprint of every key this pool verified or trusted."""
        with self._lock:
            return dict(self._accepted)

    def client(self, host: HostSpec) -> paramiko.SSHClient:
        """A live, verified, authenticated client for ``host`` (connecting if needed).

        Reuses the route's connection when it ``serves`` this spec (see the module
        docstring); a reused connection whose key the spec pins is recorded as accepted
        for the spec's host name, exactly as a fresh connect would record it.
        """
        route = _route(host)
        with self._lock:
            route_lock = self._route_locks.setdefault(route, threading.Lock())
        with route_lock:
            existing = self._connections.get(route)
            if existing is not None:
                alive = existing.alive()
                if alive and existing.serves(host):
                    with self._lock:
                        self._accepted[host.name] = existing.fingerprint
                    return existing.client
                with self._lock:
                    del self._connections[route]
                    if alive:
                        self._retired.append(existing.client)
                if not alive:
                    existing.client.close()
            fresh = self._connect_with_retry(host)
            with self._lock:
                self._connections[route] = fresh
            return fresh.client

    def _connect_with_retry(self, host: HostSpec) -> _Connection:
        import tenacity

        pk = self._paramiko
        # Transient: refused, reset, timeouts, a banner that never came. Never retried:
        # a refused host key and failed authentication (retrying cannot fix them and a
        # key problem may be an attack).
        permanent = (HostKeyRefused, pk.AuthenticationException, pk.BadHostKeyException)

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, OSError | pk.SSHException) and not isinstance(exc, permanent)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2.0) + tenacity.wait_random(0, 0.1),
            retry=tenacity.retry_if_exception(transient),
            reraise=True,
        )
        try:
            connection: _Connection = retrying(self._connect_once, host)
            return connection
        except HostKeyRefused:
            raise
        except pk.BadHostKeyException as exc:
            raise HostKeyRefused(
                f"REFUSED: the host key of {host.name} ({host.address}:{host.port}) has CHANGED: "
                f"the server presented {_describe(exc.key)}, {host.known_hosts} expects "
                f"{_describe(exc.expected_key)}. This may be a man-in-the-middle attack; if "
                f"the host was reinstalled, remove the old key with "
                f"`ssh-keygen -R '{_known_hosts_name(host)}' -f {host.known_hosts}`",
                driver="ssh",
                target=host.name,
            ) from exc
        except pk.AuthenticationException as exc:
            ways = [f"key {host.key_file}"] if host.key_file else []
            ways += ["the agent"] if host.agent else []
            how = " and ".join(ways)
            raise DriverError(
                f"authentication failed for {host.endpoint} using {how or 'no credential'}: {exc}",
                driver="ssh",
                target=host.name,
            ) from exc
        except (OSError, pk.SSHException) as exc:
            raise DriverError(
                f"cannot connect to {host.endpoint} after {self._connect_attempts} "
                f"attempt(s): {exc or type(exc).__name__}",
                driver="ssh",
                target=host.name,
            ) from exc

    def _connect_once(self, host: HostSpec) -> _Connection:
        pk = self._paramiko
        client = pk.SSHClient()
        try:
            if not host.fingerprints:
                known = os.path.expanduser(host.known_hosts)
                if os.path.exists(known):
                    # "system" host keys are read-only: paramiko never writes them back.
                    client.load_system_host_keys(known)
            client.set_missing_host_key_policy(_Policy(host, self._log, pk))
            client.connect(
                host.address,
                port=host.port,
                username=host.user,
                key_filename=host.key_file,
                allow_agent=host.agent,
                look_for_keys=False,
                timeout=self._connect_timeout_s,
                banner_timeout=self._connect_timeout_s,
                auth_timeout=self._connect_timeout_s,
                channel_timeout=self._connect_timeout_s,
            )
            transport = client.get_transport()
            if transport is None:
                raise pk.SSHException("no transport after connect")
            fp = str(transport.get_remote_server_key().fingerprint)
            with self._lock:
                self._accepted[host.name] = fp
            # A watchdog-only connection must notice a dead peer, not hang on it.
            transport.set_keepalive(15)
            return _Connection(client=client, spec=host, fingerprint=fp)
        except BaseException:
            client.close()
            raise

    def close(self) -> None:
        with self._lock:
            clients = [c.client for c in self._connections.values()] + self._retired
            self._connections.clear()
            self._retired = []
        for c in clients:
            c.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------

    def run(self, host: HostSpec, command: str, *, timeout_s: float, stdin: str = "") -> CommandResult:
        """Run ``command`` (already quoted) once on ``host``, feeding it ``stdin``.

        Bounded by ``timeout_s``.
        Connecting may be retried; the command itself never is. On timeout the channel is
        closed and ``CommandTimeout`` raised (callers wrap commands in the remote
        ``timeout`` too, so the remote process also dies).
        """
        client = self.client(host)
        started = time.monotonic()
        deadline = started + timeout_s
        pk = self._paramiko
        transport = client.get_transport()
        if transport is None:
            raise DriverError("connection lost before the command", driver="ssh", target=host.name)
        try:
            chan = transport.open_session(timeout=self._connect_timeout_s)
        except (OSError, pk.SSHException) as exc:
            raise DriverError(f"cannot open a session: {exc}", driver="ssh", target=host.name) from exc
        out: list[bytes] = []
        err: list[bytes] = []
        eof_by: float | None = None  # set once the exit status is in
        try:
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin.encode("utf-8"))
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(_READ_CHUNK))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(_READ_CHUNK))
                if chan.status_event.is_set():
                    # sshd may send the exit status before the last of the output: wait
                    # for end-of-output too, briefly (a background process that kept
                    # stdout open would otherwise hold us to the deadline).
                    eof_by = eof_by or time.monotonic() + _EOF_GRACE_S
                    if chan.eof_received or time.monotonic() >= eof_by:
                        break
                    time.sleep(_POLL_S)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(
                        f"command did not finish within {timeout_s:g}s",
                        driver="ssh",
                        target=host.name,
                    )
                chan.status_event.wait(min(remaining, _POLL_S))
            while chan.recv_ready():
                out.append(chan.recv(_READ_CHUNK))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_READ_CHUNK))
            status = chan.recv_exit_status()
        except (OSError, pk.SSHException) as exc:
            raise DriverError(
                f"command failed in transit (not retried): {exc}", driver="ssh", target=host.name
            ) from exc
        finally:
            chan.close()
        return CommandResult(
            host=host.name,
            exit_status=status,
            stdout=b"".join(out).decode("utf-8", "replace"),
            stderr=b"".join(err).decode("utf-8", "replace"),
            elapsed_s=time.monotonic() - started,
        )


class _Policy:
    """Decides about a key that known_hosts does not hold (or any key, when pinned)."""

    def __init__(self, host: HostSpec, log: Callable[[str], None], pk: Any) -> None:
        self._host = host
        self._log = log
        self._pk = pk

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        host = self._host
        where = f"{host.name} ({host.address}:{host.port})"
        if host.fingerprints:
            if key.fingerprint in host.fingerprints:
                return
            raise HostKeyRefused(
                f"REFUSED: the host key of {where} does not match its pinned fingerprint(s): "
                f"the server presented {_describe(key)}, the inventory pins "
                f"{', '.join(host.fingerprints)}. The key has changed or this is not the host "
                f"you meant; update host_key_fingerprints only after verifying the new key",
                driver="ssh",
                target=host.name,
            )
        if host.trust_new:
            self._log(f"ssh: trusting the NEW host key of {where}: {_describe(key)}")
            return
        raise HostKeyRefused(
            f"REFUSED: the host key of {where} is UNKNOWN: the server presented "
            f"{_describe(key)}, which is not in {host.known_hosts}. Verify it out of band, "
            f"then add it (`ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts}`), "
            f"pin it (host_key_fingerprints: ['{key.fingerprint}']), or trust new keys "
            f"explicitly (trust_new_host_keys: true)",
            driver="ssh",
            target=host.name,
        )


@dataclass(frozen=True, kw_only=True)
class HostOutcome[T]:
    """The result of one host's share of a fan-out: a value or the error it raised."""

    host: HostSpec
    value: T | None = None
    error: Exception | None = None


def fan_out[T](
    hosts: Sequence[HostSpec], work: Callable[[HostSpec], T], *, concurrency: int
) -> list[HostOutcome[T]]:
    """Run ``work`` for every host, at most ``concurrency`` at a time; order is kept.

    Never raises for a host's failure: each outcome carries its own error, so a caller
    can revert the hosts that succeeded.
    """

    def one(host: HostSpec) -> HostOutcome[T]:
        try:
            return HostOutcome(host=host, value=work(host))
        except Exception as exc:  # kept per host, reported by the caller
            return HostOutcome(host=host, error=exc)

    if not hosts:
        return []
    if concurrency <= 1 or len(hosts) == 1:
        return [one(h) for h in hosts]
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(hosts)), thread_name_prefix="chaoslab-ssh"
    ) as pool:
        return list(pool.map(one, hosts))
