"""The SSH inventory: which hosts exist, how to reach them, how to trust them.

An inventory is a YAML file (read by ``chaoslab.model.reader``, safe YAML only)::

    known_hosts: ~/.ssh/known_hosts   # default; host keys are verified against it
    trust_new_host_keys: false        # true = accept an UNKNOWN key (never a changed one)
    concurrency: 10                   # hosts worked on in parallel
    connect_timeout: 10s
    connect_attempts: 3               # connecting is retried with backoff; commands never
    command_timeout: 30s              # every remote command is bounded by this
    remote_state_dir: /tmp/chaoslab   # where faults keep their state on the host
    defaults:                         # merged into every host
      user: root
      key_file: ~/.ssh/id_ed25519
    hosts:
      web-1:
        address: 10.0.0.11
        port: 22
        user: deploy
        key_file: ~/.ssh/chaos        # or agent: true
        tags: [web, eu]
        host_key_fingerprints: ["SHA256:..."]   # pins: replace known_hosts for this host

Target syntax (after the ``ssh:`` prefix), terms separated by commas are a union:

- ``ssh:web-1``            the host named ``web-1``
- ``ssh:web-1,db-1``       both hosts
- ``ssh:tag=web``          every host tagged ``web``
- ``ssh:tag=web+eu``       every host tagged both ``web`` and ``eu``
- ``ssh:*``                every host in the inventory
- ``ssh:web-*``            every host whose name matches the glob

Then ``pick`` chooses among the matched hosts: ``one`` (the default of faults, as on
every platform), ``all`` (the default of probes), a count ``N`` or a percentage ``"N%"``
(rounded up, at least one), randomly with the step's ``seed`` or the run's; ``max``
refuses more matches, and a count above the matches is an error unless ``allow_fewer``.

Selection is a small private helper here because ``chaoslab.drivers.selection`` did not
exist when this driver was written; it should move there.
"""

from __future__ import annotations

import fnmatch
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab.drivers.base import parse_duration
from chaoslab.errors import InvalidInput, Problem, TargetNotFound, UnsafeTarget

ENV_INVENTORY = "CHAOSLAB_SSH_INVENTORY"
TARGET_PREFIX = "ssh:"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_STATE_DIR = "/tmp/chaoslab"

_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_HOST_KEYS = frozenset({"address", "port", "user", "key_file", "agent", "tags", "host_key_fingerprints"})
_TOP_KEYS = frozenset(
    {
        "known_hosts",
        "trust_new_host_keys",
        "concurrency",
        "connect_timeout",
        "connect_attempts",
        "command_timeout",
        "remote_state_dir",
        "defaults",
        "hosts",
    }
)


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """Everything needed to reach and trust one host. Hashable: it keys the pool.

    ``fingerprints`` are pins: when not empty they replace known_hosts for this host.
    """

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    agent: bool = False
    tags: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    trust_new: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "agent": self.agent,
            "tags": list(self.tags),
            "fingerprints": list(self.fingerprints),
            "known_hosts": self.known_hosts,
            "trust_new": self.trust_new,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HostSpec:
        return cls(
            name=str(raw["name"]),
            address=str(raw["address"]),
            port=int(raw.get("port", 22)),
            user=str(raw.get("user", "root")),
            key_file=raw.get("key_file"),
            agent=bool(raw.get("agent", False)),
            tags=tuple(raw.get("tags") or ()),
            fingerprints=tuple(raw.get("fingerprints") or ()),
            known_hosts=str(raw.get("known_hosts", DEFAULT_KNOWN_HOSTS)),
            trust_new=bool(raw.get("trust_new", False)),
        )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Fleet-wide knobs; every one has a safe default."""

    concurrency: int = 10
    connect_timeout_s: float = 10.0
    connect_attempts: int = 3
    command_timeout_s: float = 30.0
    remote_state_dir: str = DEFAULT_STATE_DIR


@dataclass(frozen=True, kw_only=True)
class Inventory:
    path: Path
    hosts: Mapping[str, HostSpec]
    settings: Settings = field(default_factory=Settings)

    def match(self, target: str) -> list[HostSpec]:
        """Hosts named by ``target`` (see the module docstring), in inventory order."""
        selector = target.removeprefix(TARGET_PREFIX).strip()
        if not selector:
            raise TargetNotFound(f"empty ssh target {target!r}", driver="ssh", target=target)
        wanted: set[str] = set()
        for term in (t.strip() for t in selector.split(",")):
            if term == "*":
                wanted.update(self.hosts)
            elif term.startswith("tag="):
                need = {t for t in term.removeprefix("tag=").split("+") if t}
                hits = {n for n, h in self.hosts.items() if need and need <= set(h.tags)}
                if not hits:
                    raise TargetNotFound(
                        f"no host in {self.path} has tag(s) {'+'.join(sorted(need))!r}",
                        driver="ssh",
                        target=target,
                    )
                wanted |= hits
            elif term in self.hosts:
                wanted.add(term)
            elif any(c in term for c in "*?["):  # a name pattern: web-*, db-[12]
                hits = {n for n in self.hosts if fnmatch.fnmatchcase(n, term)}
                if not hits:
                    raise TargetNotFound(
                        f"no host in {self.path} matches {term!r}", driver="ssh", target=target
                    )
                wanted |= hits
            else:
                raise TargetNotFound(
                    f"no host {term!r} in {self.path} (have: {', '.join(sorted(self.hosts)) or 'none'})",
                    driver="ssh",
                    target=target,
                )
        return [h for n, h in self.hosts.items() if n in wanted]


def inventory_path(arg: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The op argument wins over ``$CHAOSLAB_SSH_INVENTORY``; one of them is required."""
    env = os.environ if env is None else env
    raw = arg or env.get(ENV_INVENTORY)
    if not raw:
        raise InvalidInput(
            [
                Problem(
                    path="inventory",
                    message="no ssh inventory given",
                    hint=f"pass the `inventory` argument or set {ENV_INVENTORY}",
                )
            ]
        )
    return Path(raw).expanduser().resolve()


def load_inventory(path: Path, *, trust_new: bool | None = None) -> Inventory:
    """Load and validate an inventory; every problem is reported in one InvalidInput.

    ``trust_new`` (an op argument) overrides the file's ``trust_new_host_keys``.
    """
    from chaoslab.model.reader import load_document

    raw = load_document(path, what="inventory", mapping=False).data
    problems: list[Problem] = []

    def bad(where: str, message: str, hint: str | None = None) -> None:
        problems.append(Problem(file=str(path), path=where, message=message, hint=hint))

    if not isinstance(raw, dict):
        raise InvalidInput([Problem(file=str(path), message="an inventory must be a mapping")])
    for key in raw:
        if key not in _TOP_KEYS:
            bad(str(key), f"unknown key {key!r}", f"known: {', '.join(sorted(_TOP_KEYS))}")
    settings = _settings(raw, bad)
    known_hosts = raw.get("known_hosts", DEFAULT_KNOWN_HOSTS)
    if not isinstance(known_hosts, str):
        bad("known_hosts", "must be a path")
        known_hosts = DEFAULT_KNOWN_HOSTS
    elif not os.path.isabs(os.path.expanduser(known_hosts)):
        # Relative to the inventory, so an inventory and its known_hosts travel together.
        known_hosts = str(path.parent / known_hosts)
    file_trust = raw.get("trust_new_host_keys", False)
    if not isinstance(file_trust, bool):
        bad("trust_new_host_keys", "must be true or false")
        file_trust = False
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        bad("defaults", "must be a mapping")
        defaults = {}
    hosts_raw = raw.get("hosts")
    hosts: dict[str, HostSpec] = {}
    if not isinstance(hosts_raw, dict) or not hosts_raw:
        bad("hosts", "must be a non-empty mapping of host name to host")
        hosts_raw = {}
    for name, spec in hosts_raw.items():
        where = f"hosts.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            bad(where, f"bad host name {name!r}", "use letters, digits, '.', '_', '-', '@'")
            continue
        if not isinstance(spec, dict):
            bad(where, "must be a mapping")
            continue
        host = _host(
            name,
            {**defaults, **spec},
            where,
            bad,
            known_hosts=known_hosts,
            trust_new=file_trust if trust_new is None else trust_new,
            base=path.parent,
        )
        if host is not None:
            hosts[name] = host
    if problems:
        raise InvalidInput(problems)
    return Inventory(path=path, hosts=hosts, settings=settings)


def _settings(raw: Mapping[str, Any], bad: Any) -> Settings:
    out: dict[str, Any] = {}
    for key, attr in (("connect_timeout", "connect_timeout_s"), ("command_timeout", "command_timeout_s")):
        if key in raw:
            try:
                seconds = parse_duration(raw[key])
            except ValueError as exc:
                bad(key, str(exc))
                continue
            if seconds <= 0:
                bad(key, "must be positive")
                continue
            out[attr] = seconds
    for key in ("concurrency", "connect_attempts"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(key, "must be an integer >= 1")
            else:
                out[key] = value
    if "remote_state_dir" in raw:
        value = raw["remote_state_dir"]
        if not isinstance(value, str) or not value.startswith("/") or value.rstrip("/") == "":
            bad("remote_state_dir", "must be an absolute path other than /")
        else:
            out["remote_state_dir"] = value.rstrip("/")
    return Settings(**out)


def _host(
    name: str,
    spec: Mapping[str, Any],
    where: str,
    bad: Any,
    *,
    known_hosts: str,
    trust_new: bool,
    base: Path,
) -> HostSpec | None:
    ok = True
    for key in spec:
        if key not in _HOST_KEYS:
            bad(f"{where}.{key}", f"unknown key {key!r}", f"known: {', '.join(sorted(_HOST_KEYS))}")
            ok = False
    address = spec.get("address")
    if not isinstance(address, str) or not address:
        bad(f"{where}.address", "required: a host name or IP address")
        ok = False
    port = spec.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        bad(f"{where}.port", f"bad port {port!r}")
        ok = False
    user = spec.get("user", "root")
    if not isinstance(user, str) or not user:
        bad(f"{where}.user", "must be a user name")
        ok = False
    key_file = spec.get("key_file")
    agent = spec.get("agent", False)
    if not isinstance(agent, bool):
        bad(f"{where}.agent", "must be true or false")
        ok = False
    if key_file is not None:
        if not isinstance(key_file, str):
            bad(f"{where}.key_file", "must be a path")
            ok = False
        else:
            key_path = Path(key_file).expanduser()
            key_file = str(key_path if key_path.is_absolute() else base / key_path)
    elif agent is False:
        bad(where, "no way to authenticate", "set key_file, or agent: true")
        ok = False
    tags = spec.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and _NAME.match(t) for t in tags):
        bad(f"{where}.tags", "must be a list of simple words")
        ok = False
    pins = spec.get("host_key_fingerprints") or []
    if not isinstance(pins, list) or not all(isinstance(p, str) and _FINGERPRINT.match(p) for p in pins):
        bad(
            f"{where}.host_key_fingerprints",
            "must be a list of SHA256:... fingerprints",
            "as printed by `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`",
        )
        ok = False
    if not ok:
        return None
    return HostSpec(
        name=name,
        address=str(address),
        port=int(port),
        user=str(user),
        key_file=key_file,
        agent=bool(agent),
        tags=tuple(tags),
        fingerprints=tuple(pins),
        known_hosts=known_hosts,
        trust_new=trust_new,
    )


# --- selection ---------------------------------------------------------------------------


def check_pick(pick: Any) -> str | None:
    """None when ``pick`` is valid, else what is wrong with it. Pure."""
    if isinstance(pick, bool):
        return f"bad pick {pick!r}"
    if isinstance(pick, int):
        return None if pick >= 1 else "pick must be at least 1"
    if isinstance(pick, str):
        if pick in ("all", "one"):
            return None
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", pick.strip())
        if m and 0 < float(m.group(1)) <= 100:
            return None
    return f"bad pick {pick!r} (use all, one, a count like 3, or a percentage like '25%')"


def pick_hosts(
    hosts: Sequence[HostSpec], pick: Any, seed: str, *, cap: int | None = None, allow_fewer: bool = False
) -> list[HostSpec]:
    """Choose among ``hosts`` as ``pick`` says; random but reproducible from ``seed``.

    Invariant: the result is never empty when ``hosts`` is not, and keeps inventory order.
    ``cap`` (the step's ``max``): more matching hosts than this refuses the fault
    (``UnsafeTarget``); a count ``N`` above the matches is ``TargetNotFound`` unless
    ``allow_fewer`` (the rules of ``chaoslab.drivers.selection``).
    """
    if (problem := check_pick(pick)) is not None:
        raise InvalidInput([Problem(path="pick", message=problem)])
    if cap is not None and len(hosts) > cap:
        raise UnsafeTarget(f"the selector matches {len(hosts)} hosts, more than max {cap}", driver="ssh")
    if (
        isinstance(pick, int)
        and not isinstance(pick, bool)
        and pick > len(hosts)
        and hosts
        and not allow_fewer
    ):
        raise TargetNotFound(
            f"pick {pick} asked, only {len(hosts)} hosts match (allow_fewer: true picks what matches)",
            driver="ssh",
        )
    if pick == "all" or not hosts:
        return list(hosts)
    if pick == "one":
        count = 1
    elif isinstance(pick, int):
        count = min(pick, len(hosts))
    else:
        count = max(1, math.ceil(len(hosts) * float(str(pick).strip().rstrip("%")) / 100))
    chosen = set(random.Random(seed).sample(range(len(hosts)), count))
    return [h for i, h in enumerate(hosts) if i in chosen]
