"""Secret masking: one ``Masker`` per run, applied once where events and records are made.

Every secret value a run knows is added to its masker (see ``chaoslab.engine.secrets``
for where they come from). The event bus passes every event through ``Masker.event``
before any consumer sees it, the ledger passes every record through ``Masker.seal``,
and the CLI's output streams through ``MaskingStream``: writers (journal, console,
reports, metrics, scheduler history, webhooks) never need to mask anything themselves.

What is masked, as ``***``:

- each secret value of 4 characters or more wherever it appears inside a string, and its
  common encodings: URL-encoded (``quote``, ``quote_plus``, either hex case),
  JSON/``repr`` escaped, HTML escaped, and base64 (standard or URL-safe, padded or not)
  when that base64 text is a whole token;
- the password of every URL with credentials (``scheme://user:password@host``), known
  or not, and base64 of ``user:password`` (HTTP Basic) as a whole token;
- a value shorter than 4 characters only where a whole string *is* that value (masking
  every ``"abc"`` inside all text would destroy the output and still not hide it).

Written by hand because no maintained library masks a changing set of values with their
encodings; the matching is one compiled alternation, rebuilt only when a secret is added.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import IO, Any

import msgspec

MASK = "***"
MIN_LENGTH = 4
"""Secrets shorter than this are masked only where a whole string equals them."""

# scheme://user:password@ — the password is masked in any text, known or not.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*:)(?P<pw>[^\s@/?#]+)(?=@)")
_B64 = "A-Za-z0-9+/_\\-"
_NUMBERISH = re.compile(r"^[0-9.eE+\-]+$|^(inf|nan)$")
_PLACEHOLDER = "${chaoslab-secret:%d}"
_PLACEHOLDER_RE = re.compile(r"\$\{chaoslab-secret:(\d+)\}")

SecretRef = Mapping[str, Any]
"""Where a secret can be read again by another process: ``{"env": NAME}`` or
``{"file": PATH, "keys": [...]}`` (a JSON/YAML file and the key path inside it)."""


def url_credentials(text: str) -> list[tuple[str, str]]:
    """The (user, password) pairs of every URL with credentials in ``text``."""
    out = []
    for m in _URL_CREDENTIALS.finditer(text):
        user = m.group("head").split("://", 1)[1][:-1]
        out.append((_unquote(user), _unquote(m.group("pw"))))
    return out


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def _encodings(secret: str) -> tuple[set[str], set[str]]:
    """(plain forms matched anywhere, base64 forms matched as whole tokens)."""
    # Imported here: a run that knows no secret never pays for them at start-up.
    import base64
    import html
    from urllib.parse import quote, quote_plus

    plain = {secret}
    for enc in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        plain.add(enc)
        plain.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), enc))
    plain.add(json.dumps(secret)[1:-1])
    plain.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    plain.add(repr(secret)[1:-1])
    plain.add(html.escape(secret))
    raw = secret.encode("utf-8", "surrogatepass")
    tokens: set[str] = set()
    for b in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        tokens.add(b)
        tokens.add(b.rstrip("="))
    return {p for p in plain if len(p) >= MIN_LENGTH}, {t for t in tokens if len(t) >= MIN_LENGTH}


class Masker:
    """The secrets of one run and how to hide them. Thread-safe; secrets are only added.

    ``track(source)`` registers a callable returning a live mapping (the run's loaded
    secrets, which controls may extend): its values are picked up before each masking.
    """

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self._lock = threading.RLock()
        self._long: set[str] = set()
        self._short: set[str] = set()
        self._refs: dict[str, SecretRef] = {}
        self._sources: list[Callable[[], Any]] = []
        self._regex: re.Pattern[str] | None = None
        self._numeric = False
        self._literals: tuple[str, ...] = ()
        for v in values:
            self.add(v)

    # --- secrets -----------------------------------------------------------------------

    def add(self, value: Any, ref: SecretRef | None = None) -> None:
        """Add every leaf of ``value`` (a string, number, bytes, or nested containers)."""
        for leaf in _leaves(value):
            self._add_one(leaf, ref)

    def _add_one(self, value: str, ref: SecretRef | None) -> None:
        if not value.strip():
            return
        with self._lock:
            if ref is not None and value not in self._refs:
                self._refs[value] = dict(ref)
            target = self._long if len(value) >= MIN_LENGTH else self._short
            if value in target:
                return
            target.add(value)
            self._regex = None
            for user, pw in url_credentials(value):
                self._add_one(pw, None)
                self._add_basic(user, pw)

    def _add_basic(self, user: str, pw: str) -> None:
        import base64

        basic = base64.b64encode(f"{user}:{pw}".encode("utf-8", "surrogatepass")).decode()
        with self._lock:
            if basic not in self._long:
                self._long.add(basic)  # its whole-token form is what matters; plain is harmless
                self._regex = None

    def add_url_credentials(self, text: str) -> None:
        """Add the passwords (and Basic forms) of every URL with credentials in ``text``."""
        for user, pw in url_credentials(text):
            self._add_one(pw, None)
            self._add_basic(user, pw)

    def track(self, source: Callable[[], Any]) -> None:
        with self._lock:
            self._sources.append(source)

    def _refresh(self) -> None:
        for source in list(self._sources):
            try:
                live = source()
            except Exception:  # a source that cannot be read adds nothing
                continue
            self.add(live)

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._regex is None and self._long:
                plain: set[str] = set()
                tokens: set[str] = set()
                for s in self._long:
                    p, t = _encodings(s)
                    plain |= p
                    tokens |= t
                alts = [(len(p), re.escape(p)) for p in plain]
                alts += [(len(t), f"(?<![{_B64}]){re.escape(t)}(?![{_B64}=])") for t in tokens]
                alts += [(len(t) + 2, f"(?<![{_B64}]){re.escape(t)}==?(?![{_B64}=])") for t in tokens]
                alts.sort(key=lambda a: -a[0])
                self._regex = re.compile("|".join(a for _, a in alts))
                # Substring tests first: str.__contains__ is far faster than the alternation.
                self._literals = tuple(sorted(plain | tokens, key=len))
                # Numbers are masked only when a secret could be spelt by one (a PIN...).
                self._numeric = any(_NUMBERISH.search(s) for s in self._long | self._short)
            elif self._regex is None:
                self._numeric = any(_NUMBERISH.search(s) for s in self._short)
            return self._regex

    # --- masking -----------------------------------------------------------------------
    # The public methods read the tracked sources once, then mask without re-reading.

    def text(self, text: str) -> str:
        """``text`` with every secret (and encoding) replaced by ``***``."""
        self._refresh()
        return self._text(text, self._compiled())

    def _text(self, text: str, rx: re.Pattern[str] | None) -> str:
        if not text:
            return text
        out = _URL_CREDENTIALS.sub(lambda m: m.group("head") + MASK, text) if "://" in text else text
        if rx is None or not any(lit in out for lit in self._literals):
            return out
        # Every pattern is longer than the mask, so each pass shortens the text: replacing
        # until nothing matches ends, and also catches a secret the replacement itself
        # formed from its neighbours (e.g. a secret of asterisks).
        for _ in range(len(out) + 1):
            new = rx.sub(MASK, out)
            if new == out:
                break
            out = new
        return out

    def is_short_secret(self, value: str) -> bool:
        with self._lock:
            return value in self._short

    def deep(self, value: Any) -> Any:
        """``value`` with every string inside it masked (keys too); same shape.

        Enums are kept (their values are chaoslab's own words); an object of another
        type is kept when its ``repr`` holds no secret, else replaced by the masked repr.
        """
        self._refresh()
        return self._deep(value, self._compiled())

    def _deep(self, value: Any, rx: re.Pattern[str] | None) -> Any:
        if isinstance(value, Enum) or value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            if self._short and self.is_short_secret(value):
                return MASK
            return self._text(value, rx)
        if isinstance(value, int | float):
            if not self._numeric:
                return value
            s = str(value)
            return MASK if self._text(s, rx) != s or self.is_short_secret(s) else value
        if isinstance(value, bytes):
            s = value.decode("utf-8", "replace")
            masked = self._deep(s, rx)
            return value if masked == s else masked
        if isinstance(value, Mapping):
            return {self._deep(k, rx): self._deep(v, rx) for k, v in value.items()}
        if isinstance(value, list):
            return [self._deep(v, rx) for v in value]
        if isinstance(value, tuple):
            return tuple(self._deep(v, rx) for v in value)
        if isinstance(value, set | frozenset):
            return [self._deep(v, rx) for v in value]
        r = repr(value)
        masked_r = self._text(r, rx)
        return value if masked_r == r else masked_r

    def event(self, event: Any) -> Any:
        """A frozen msgspec event with every field masked (the same event when clean)."""
        self._refresh()
        rx = self._compiled()
        changed = {}
        for name in event.__struct_fields__:
            old = getattr(event, name)
            new = self._deep(old, rx)
            if new is not old and new != old:
                changed[name] = new
        return msgspec.structs.replace(event, **changed) if changed else event

    # --- records that must be revertible from another process --------------------------

    def seal(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``record`` for the ledger: each secret replaced by a numbered placeholder, and
        the references that let another process put the values back (``unseal``).

        Raises ``Unsealable`` naming the fields whose secret has no reference (it came
        from a control, Vault or a dynamic value): it could not be re-read after a crash.
        """
        self._refresh()
        with self._lock:
            secrets = sorted(self._long | self._short, key=len, reverse=True)
            refs = dict(self._refs)
        numbers: dict[str, int] = {}
        missing: list[str] = []
        long = [x for x in secrets if len(x) >= MIN_LENGTH]
        rx = re.compile("|".join(re.escape(x) for x in long)) if long else None

        def replace(found: str, path: str) -> str:
            if found not in refs:
                missing.append(path)
                return found
            return _PLACEHOLDER % numbers.setdefault(found, len(numbers) + 1)

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, Mapping):
                return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return walk(str(value), path) if str(value) in secrets else value
            if not isinstance(value, str):
                return value
            if value in secrets:
                return replace(value, path)
            # One pass, longest secret first: a placeholder is never searched again.
            return rx.sub(lambda m: replace(m.group(0), path), value) if rx is not None else value

        sealed = walk(record, "")
        if missing:
            raise Unsealable(sorted(set(missing)))
        table: dict[str, Any] = {}
        for s, n in numbers.items():
            salt = os.urandom(16).hex()
            table[str(n)] = {
                "ref": dict(refs[s]),
                "salt": salt,
                "sha256": _digest(salt, s),
            }
        # Whatever else matches (an encoding, a URL password) is masked outright; the
        # placeholders themselves are left alone (a secret could be part of their text).
        rx_all = self._compiled()

        def outside(value: Any) -> Any:
            if isinstance(value, dict):
                return {outside(k): outside(v) for k, v in value.items()}
            if isinstance(value, list):
                return [outside(v) for v in value]
            if not isinstance(value, str):
                return self._deep(value, rx_all)
            if _PLACEHOLDER_RE.fullmatch(value):
                return value
            pieces, last = [], 0
            for m in _PLACEHOLDER_RE.finditer(value):
                pieces += [self._deep(value[last : m.start()], rx_all), m.group(0)]
                last = m.end()
            return "".join([*pieces, self._deep(value[last:], rx_all)])

        return outside(sealed), table


class Unsealable(Exception):
    """A record holds a secret that another process could not read again."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(", ".join(fields))


def unseal(
    record: Any, table: Mapping[str, Any], resolve: Callable[[SecretRef], str | None]
) -> tuple[Any, list[str], list[str]]:
    """Put sealed secrets back into ``record``: (record, values, problems).

    ``resolve`` reads a reference (environment variable, file key) and returns None when
    it cannot; a value whose digest differs from the sealed one is a problem too.
    """
    values: dict[str, str] = {}
    problems: list[str] = []
    for n, spec in table.items():
        ref = spec.get("ref") if isinstance(spec, Mapping) else None
        if not isinstance(ref, Mapping):
            problems.append(f"secret {n} has no reference")
            continue
        where = describe_ref(ref)
        value = resolve(ref)
        if value is None:
            problems.append(f"secret {n} ({where}) cannot be read")
            continue
        try:
            digest = _digest(str(spec.get("salt", "")), value)
        except ValueError:
            digest = ""
        if digest != spec.get("sha256"):
            problems.append(f"secret {n} ({where}) has changed since the fault was injected")
            continue
        values[n] = value

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        return value

    return walk(record), list(values.values()), problems


def _digest(salt_hex: str, value: str) -> str:
    import hashlib

    return hashlib.sha256(bytes.fromhex(salt_hex) + value.encode("utf-8", "surrogatepass")).hexdigest()


def describe_ref(ref: SecretRef) -> str:
    if "env" in ref:
        return f"environment variable {ref['env']}"
    if "file" in ref:
        return f"{ref['file']} at {'.'.join(str(k) for k in ref.get('keys', ()))}"
    return "unknown source"


def _leaves(value: Any) -> Iterable[str]:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _leaves(v)


class MaskingStream:
    """A text stream that masks what is written through it (the CLI's stdout/stderr).

    Everything else (``isatty``, ``fileno``, ``encoding``...) is the wrapped stream's.
    """

    def __init__(self, stream: IO[str], masker: Masker) -> None:
        self._stream = stream
        self.masker = masker

    def write(self, text: str) -> int:
        self._stream.write(self.masker.text(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def output_masker() -> Masker | None:
    """The masker this process's output goes through, if ``masked_output`` installed one."""
    out = sys.stdout
    return out.masker if isinstance(out, MaskingStream) else None


def masked_output() -> Masker:
    """The masker of what this process prints: ``sys.stdout`` and ``sys.stderr`` write
    through it from the first call on (the CLI calls it before anything is printed, so
    error messages and even a traceback are masked)."""
    out = sys.stdout
    if isinstance(out, MaskingStream):
        return out.masker
    masker = Masker()
    sys.stdout = MaskingStream(sys.stdout, masker)
    sys.stderr = MaskingStream(sys.stderr, masker)
    return masker
