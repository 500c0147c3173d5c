"""Who may do what in the control room, and the audit record of what they did.

One shared token (``CHAOSLAB_SERVE_TOKEN``, ``--token-file``, or generated at start-up and
printed once). A request is authenticated by any of:

- ``Authorization: Bearer TOKEN`` (scripts);
- HTTP Basic with the token as password; the user name is who the audit log says acted;
- the session cookie set by ``/login`` (name + token), signed with a per-process key,
  ``HttpOnly`` and ``SameSite=Strict``, valid for ``SESSION_S``.

Every action (halt, release) needs an authenticated request and, unless it came with a
Bearer token (never sent by a browser on its own), a CSRF token bound to the identity
(an HMAC of it under the process key) from the page's form, and an ``Origin`` (when the
browser sends one) equal to the server's own. Bound to anything but loopback, every page
needs authentication too.

Written by hand because it is fifty lines of ``hmac`` that Starlette's optional session
and auth middlewares would only wrap (and their sessions need ``itsdangerous``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SESSION_COOKIE = "chaoslab_session"
SESSION_S = 12 * 3600
AUDIT_FILE = "serve-audit.ndjson"
_NAME_MAX = 64


@dataclass(frozen=True, kw_only=True)
class Identity:
    name: str
    method: str  # bearer | basic | session


def clean_name(name: str) -> str:
    """A user name fit for a log line and a cookie: printable, no '|', bounded."""
    kept = "".join(c for c in name if c.isprintable() and c not in "|\\\"'<>").strip()
    return kept[:_NAME_MAX] or "anonymous"


class Auth:
    def __init__(self, token: str, *, key: bytes | None = None) -> None:
        self.token = token
        self.key = key or secrets.token_bytes(32)

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def session_cookie(self, name: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_S)
        body = f"{clean_name(name)}|{expires}"
        return f"{body}|{self._sign(body)}"

    def identify(self, headers: Any, cookies: Any, now: float | None = None) -> Identity | None:
        """The identity a request proves, or None."""
        header = str(headers.get("authorization", ""))
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value and self.token_ok(value.strip()):
            return Identity(name="bearer-token", method="bearer")
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = (
                    base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
                )
            except (ValueError, UnicodeDecodeError):
                return None
            return Identity(name=clean_name(user), method="basic") if self.token_ok(password) else None
        cookie = cookies.get(SESSION_COOKIE)
        if cookie:
            parts = str(cookie).split("|")
            if len(parts) == 3:
                name, expires, sig = parts
                body = f"{name}|{expires}"
                # isascii: str.isdigit accepts '²', which int() refuses
                fresh = expires.isascii() and expires.isdigit() and int(expires) > (now or time.time())
                if fresh and hmac.compare_digest(sig.encode("utf-8"), self._sign(body).encode("utf-8")):
                    return Identity(name=name, method="session")
        return None

    def csrf(self, who: Identity) -> str:
        return self._sign(f"csrf|{who.method}|{who.name}")

    def csrf_ok(self, who: Identity, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.csrf(who).encode("utf-8"))


class AuditLog:
    """Append-only NDJSON of actions and refused attempts, fsynced per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, action: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": time.time(), "action": action, **fields}
        line = json.dumps(entry, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def tail(self, limit: int = 20) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text("utf-8").splitlines()[-limit:]
        except OSError:
            return []
        out = []
        for line in reversed(lines):
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if isinstance(got, dict):
                out.append(got)
        return out
