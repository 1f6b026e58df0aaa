"""Dashboard sessions: an HMAC-signed cookie carrying the key name, scope, expiry and CSRF token.

The cookie is HttpOnly, SameSite=Strict, and Secure when served over TLS.  Unsafe dashboard
requests must echo the session's CSRF token (form field or ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "safeship_session"
MAX_COOKIE_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    scope: str
    csrf: str
    expires: int


class SessionSigner:
    """Signs and verifies session cookies with the process's session secret."""

    def __init__(self, secret: str, *, max_age: int) -> None:
        if len(secret) < 16:
            raise ValueError("session secret must be at least 16 characters")
        self._key = hashlib.sha256(b"safeship-session\0" + secret.encode()).digest()
        self.max_age = max_age

    def issue(self, name: str, scope: str, *, now: float | None = None) -> tuple[str, Session]:
        now = time.time() if now is None else now
        session = Session(name, scope, secrets.token_urlsafe(24), int(now) + self.max_age)
        body = json.dumps(
            [session.name, session.scope, session.csrf, session.expires], separators=(",", ":")
        ).encode()
        payload = base64.urlsafe_b64encode(body).rstrip(b"=")
        return f"{payload.decode()}.{self._sign(payload)}", session

    def verify(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        if not cookie or len(cookie) > MAX_COOKIE_LENGTH or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            padded = payload + "=" * (-len(payload) % 4)
            name, scope, csrf, expires = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, TypeError):
            return None
        session = Session(str(name), str(scope), str(csrf), int(expires))
        if session.expires < (time.time() if now is None else now):
            return None
        return session

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()


def csrf_matches(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(
        session.csrf.encode(), presented.encode("utf-8", "replace")
    )
