"""Admin API keys of the control plane: named, scoped, stored only as SHA-256 digests.

Keys come from ``SAFESHIP_ADMIN_KEYS`` (hashed in memory at start-up) and from the
``safeship_api_keys`` table (``safeship keys create``).  A presented key is hashed once and
compared with every stored digest in constant time, so neither a key nor its length leaks.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa

from safeship.db.audit import record_audit
from safeship.db.schema import api_keys
from safeship.settings import Settings
from safeship.web.keys import hash_key

Scope = Literal["read", "admin"]
KEY_PREFIX = "ss_"
MAX_KEY_LENGTH = 512
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the API key's name and scope."""

    name: str
    scope: Scope

    def can(self, scope: Scope) -> bool:
        return scope == "read" or self.scope == "admin"


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    scope: Scope
    digest: str
    source: Literal["settings", "database"]


def new_key() -> str:
    """A fresh random key (256 bits), prefixed so it is recognisable in secret scanners."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_key_name(name: str) -> str:
    if not 1 <= len(name) <= 100 or not set(name) <= _NAME_CHARS:
        raise ValueError("key name must be 1-100 characters of letters, digits, '-', '_', '.'")
    return name


class KeyRing:
    """The keys that may call the control plane; refreshed from the database periodically."""

    def __init__(self, settings: Settings, engine: sa.Engine | None, *, ttl: float = 5.0) -> None:
        self._static = [
            StoredKey(s.name, s.scope, hash_key(s.secret.get_secret_value()), "settings")
            for s in settings.api_keys()
        ]
        self._engine = engine
        self._ttl = ttl
        self._keys: tuple[StoredKey, ...] = tuple(self._static)
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def keys(self) -> tuple[StoredKey, ...]:
        if time.monotonic() - self._loaded_at > self._ttl:
            self.refresh()
        return self._keys

    def refresh(self) -> None:
        """Reload database keys; on a database error keep the last good set."""
        if self._engine is None:
            self._loaded_at = time.monotonic()
            return
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    rows = (
                        conn.execute(sa.select(api_keys).where(api_keys.c.revoked_at.is_(None)))
                        .mappings()
                        .all()
                    )
            except sa.exc.SQLAlchemyError:
                self._loaded_at = time.monotonic()
                return
            stored = [StoredKey(r["name"], r["scope"], r["digest"], "database") for r in rows]
            static_names = {k.name for k in self._static}
            self._keys = tuple(self._static + [k for k in stored if k.name not in static_names])
            self._loaded_at = time.monotonic()

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal for ``presented``, or None; timing does not depend on which key."""
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hash_key(presented).encode()
        found: StoredKey | None = None
        for key in self.keys():  # no early exit: every digest is compared
            if hmac.compare_digest(digest, key.digest.encode()):
                found = key
        return None if found is None else Principal(found.name, found.scope)

    def principal(self, name: str) -> Principal | None:
        """The principal still holding ``name`` (sessions end when their key is revoked)."""
        for key in self.keys():
            if key.name == name:
                return Principal(key.name, key.scope)
        return None


def create_key(
    conn: sa.Connection, *, name: str, scope: Scope, actor: str, reason: str | None = None
) -> str:
    """Store a new key's digest (audited, in the caller's transaction); return the key once."""
    check_key_name(name)
    if scope not in ("read", "admin"):
        raise ValueError(f"scope must be read or admin, got {scope!r}")
    existing = conn.execute(sa.select(api_keys.c.name).where(api_keys.c.name == name)).first()
    if existing is not None:
        raise KeyError(f"a key named {name!r} exists; revoke it or choose another name")
    key = new_key()
    now = datetime.now(UTC)
    conn.execute(
        sa.insert(api_keys).values(name=name, scope=scope, digest=hash_key(key), created_at=now)
    )
    record_audit(
        conn,
        actor=actor,
        action="key.create",
        target=f"key:{name}",
        after={"name": name, "scope": scope},
        reason=reason,
        at=now,
    )
    return key


def revoke_key(conn: sa.Connection, *, name: str, actor: str, reason: str | None = None) -> bool:
    """Revoke a stored key (audited); False when no active key has that name."""
    now = datetime.now(UTC)
    result = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(api_keys.c.scope)
    ).first()
    if result is None:
        return False
    record_audit(
        conn,
        actor=actor,
        action="key.revoke",
        target=f"key:{name}",
        before={"name": name, "scope": result.scope},
        reason=reason,
        at=now,
    )
    return True


def list_keys(conn: sa.Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        sa.select(
            api_keys.c.name, api_keys.c.scope, api_keys.c.created_at, api_keys.c.revoked_at
        ).order_by(api_keys.c.name)
    ).mappings()
    return [
        {
            "name": r["name"],
            "scope": r["scope"],
            "created_at": r["created_at"].isoformat(),
            "revoked": r["revoked_at"] is not None,
        }
        for r in rows
    ]
