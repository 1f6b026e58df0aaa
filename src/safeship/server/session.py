"""Dashboard sessions: a signed cookie naming a session that the database keeps.

The cookie (HttpOnly, SameSite=Strict, Secure over TLS) carries a random session token,
the CSRF token and the expiry, signed with the session secret. It proves nothing alone:
each request looks the session up (`SessionStore.resolve`), so signing out deletes it for
good, and takes the scope from the key as it is now. A session is bound to the key it
signed in with (a fingerprint of the key's digest): revoking the key, or rotating its
value in ``SAFESHIP_ADMIN_KEYS``, ends its sessions at once. Unsafe dashboard requests must
echo the session's CSRF token (form field or ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from safeship.db._schema import sessions
from safeship.server.keys import KeyRing, Principal, Scope

COOKIE_NAME = "safeship_session"
MAX_COOKIE_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: its key's name and current scope, CSRF token and expiry."""

    name: str
    scope: Scope
    csrf: str
    expires: int

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.scope)

    @property
    def actor(self) -> str:
        """The audit actor of a change made in this session: its key's, ``key:<name>``."""
        return self.principal.actor


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """What a verified cookie says: the session token, CSRF token and expiry."""

    token: str
    csrf: str
    expires: int


class SessionSigner:
    """Signs and verifies session cookies with the process's session secret."""

    def __init__(self, secret: str, *, max_age: int) -> None:
        if len(secret) < 16:
            raise ValueError("session secret must be at least 16 characters")
        self._key = hashlib.sha256(b"safeship-session\0" + secret.encode()).digest()
        self.max_age = max_age

    def sign(self, cookie: SessionCookie) -> str:
        body = json.dumps([cookie.token, cookie.csrf, cookie.expires], separators=(",", ":"))
        payload = base64.urlsafe_b64encode(body.encode()).rstrip(b"=")
        return f"{payload.decode()}.{self._sign(payload)}"

    def verify(self, cookie: str | None, *, now: float | None = None) -> SessionCookie | None:
        if not cookie or len(cookie) > MAX_COOKIE_LENGTH or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            padded = payload + "=" * (-len(payload) % 4)
            token, csrf, expires = json.loads(base64.urlsafe_b64decode(padded))
            verified = SessionCookie(str(token), str(csrf), int(expires))
        except (ValueError, TypeError):
            return None
        if verified.expires < (time.time() if now is None else now):
            return None
        return verified

    def fingerprint(self, key_digest: str) -> str:
        """Which key a session signed in with, without storing the key's digest."""
        return hmac.new(self._key, b"key\0" + key_digest.encode(), hashlib.sha256).hexdigest()

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()


def _token_id(token: str) -> str:
    """The stored id of a session token (a database leak gives no usable cookie)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """Dashboard sessions in ``safeship_sessions``: issued at sign-in, deleted at sign-out."""

    def __init__(self, engine: sa.Engine, signer: SessionSigner, keys: KeyRing) -> None:
        self._engine = engine
        self._signer = signer
        self._keys = keys

    @property
    def max_age(self) -> int:
        return self._signer.max_age

    def issue(self, principal: Principal, *, now: float | None = None) -> tuple[str, Session]:
        """Store a new session for ``principal``'s key; return its cookie and the session."""
        now = time.time() if now is None else now
        key = self._keys.current_key(principal.name)
        if key is None:
            raise LookupError(f"no active key named {principal.name!r}")
        cookie = SessionCookie(
            secrets.token_urlsafe(32), secrets.token_urlsafe(24), int(now) + self.max_age
        )
        with self._engine.begin() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.expires_at < int(now)))
            conn.execute(
                sa.insert(sessions).values(
                    id=_token_id(cookie.token),
                    key_name=key.name,
                    key_fingerprint=self._signer.fingerprint(key.digest),
                    created_at=datetime.fromtimestamp(now, UTC),
                    expires_at=cookie.expires,
                )
            )
        return self._signer.sign(cookie), Session(key.name, key.scope, cookie.csrf, cookie.expires)

    def resolve(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The live session ``cookie`` names, with its key's current scope, or None.

        None when the cookie is forged or expired, the session was signed out, or its key
        was revoked, deleted or given another value since. Database errors propagate:
        a session that cannot be checked is not accepted.
        """
        verified = self._signer.verify(cookie, now=now)
        if verified is None:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions.c.key_name, sessions.c.key_fingerprint).where(
                    sessions.c.id == _token_id(verified.token),
                    sessions.c.expires_at >= int(time.time() if now is None else now),
                )
            ).first()
            if row is None:
                return None
            key = self._keys.current_key(row.key_name, conn=conn)
        if key is None or not hmac.compare_digest(
            self._signer.fingerprint(key.digest), row.key_fingerprint
        ):
            return None
        return Session(key.name, key.scope, verified.csrf, verified.expires)

    def revoke(self, cookie: str | None) -> bool:
        """End the session ``cookie`` names (sign-out); False when there was none."""
        verified = self._signer.verify(cookie)
        if verified is None:
            return False
        with self._engine.begin() as conn:
            deleted = conn.execute(
                sa.delete(sessions).where(sessions.c.id == _token_id(verified.token))
            )
        return bool(deleted.rowcount)


def csrf_matches(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(
        session.csrf.encode(), presented.encode("utf-8", "replace")
    )
