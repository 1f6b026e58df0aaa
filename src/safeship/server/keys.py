"""Admin API keys of the control plane: named, scoped, stored only as SHA-256 digests.

Keys come from ``SAFESHIP_ADMIN_KEYS`` (hashed in memory at start-up) and from the
``safeship_api_keys`` table (``safeship keys create``); both can be revoked (`revoke_key`).
A presented key is hashed once and compared with every stored digest in constant time, so
neither a key nor its length leaks.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa

from safeship.db._audit import record_audit
from safeship.db._schema import api_keys, sessions
from safeship.settings import Settings
from safeship.web._keys import hash_key

Scope = Literal["read", "admin", "frontend"]
KEY_PREFIX = "ss_"
MAX_KEY_LENGTH = 512
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the API key's name and scope."""

    name: str
    scope: Scope

    @property
    def actor(self) -> str:
        """The audit actor of this key's changes: ``key:<name>`` (the CLI's is ``cli:<user>``)."""
        return f"key:{self.name}"

    def can(self, scope: Scope) -> bool:
        """Admin implies read; read and admin imply frontend; a frontend key holds only
        the browser-facing flag API, so it is refused everywhere else."""
        if self.scope == "frontend":
            return scope == "frontend"
        return scope in ("read", "frontend") or self.scope == "admin"


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
    """The keys that may call the control plane; refreshed from the database periodically.

    A key from settings is in effect unless the database holds it revoked (same name and
    digest): `revoke_key` revokes settings keys too, in every process sharing the database.
    """

    def __init__(self, settings: Settings, engine: sa.Engine | None, *, ttl: float = 5.0) -> None:
        self._static = [
            StoredKey(s.name, s.scope, hash_key(s.secret.get_secret_value()), "settings")
            for s in settings.api_keys()
        ]
        self._static_by_name = {key.name: key for key in self._static}
        self._engine = engine
        self._ttl = ttl
        self._keys: tuple[StoredKey, ...] = tuple(self._static)
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def keys(self) -> tuple[StoredKey, ...]:
        if self.stale:
            self.refresh()
        return self._keys

    @property
    def stale(self) -> bool:
        """Whether the next `authenticate` reloads the database keys first (blocking I/O).

        While not stale, ``authenticate(presented, refresh=False)`` does no I/O (one SHA-256
        and a constant-time compare per key, a few microseconds) and may run on the event
        loop; a key revoked in another process is refused within ``ttl`` seconds (5 s)."""
        return time.monotonic() - self._loaded_at > self._ttl

    def refresh(self) -> None:
        """Reload database keys; on a database error keep the last good set."""
        if self._engine is None:
            self._loaded_at = time.monotonic()
            return
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    rows = conn.execute(sa.select(api_keys)).mappings().all()
            except sa.exc.SQLAlchemyError:
                self._loaded_at = time.monotonic()
                return
            static = [k for k in self._static if not _revoked_in(k, rows)]
            stored = [
                StoredKey(r["name"], r["scope"], r["digest"], "database")
                for r in rows
                if r["revoked_at"] is None and r["name"] not in self._static_by_name
            ]
            self._keys = tuple(static + stored)
            self._loaded_at = time.monotonic()

    def authenticate(self, presented: str | None, *, refresh: bool = True) -> Principal | None:
        """The principal for ``presented``, or None; timing does not depend on which key.

        ``refresh=False`` checks against the keys loaded last, never reloading them (no I/O).
        """
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hash_key(presented).encode()
        found: StoredKey | None = None
        keys = self.keys() if refresh else self._keys
        for key in keys:  # no early exit: every digest is compared
            if hmac.compare_digest(digest, key.digest.encode()):
                found = key
        return None if found is None else Principal(found.name, found.scope)

    def settings_key(self, name: str) -> StoredKey | None:
        """The key named ``name`` in ``SAFESHIP_ADMIN_KEYS``, revoked or not."""
        return self._static_by_name.get(name)

    def current_key(self, name: str, *, conn: sa.Connection | None = None) -> StoredKey | None:
        """The key in effect under ``name`` now, read from the database (not the cached set).

        Sessions call this on every request, so a revoked or downgraded key counts at once.
        """
        if self._engine is None:
            return self._static_by_name.get(name)
        if conn is None:
            with self._engine.connect() as own:
                return self._current_key(own, name)
        return self._current_key(conn, name)

    def _current_key(self, conn: sa.Connection, name: str) -> StoredKey | None:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.name == name)).mappings().first()
        static = self._static_by_name.get(name)
        if static is not None:
            return None if row is not None and _revoked_in(static, [row]) else static
        if row is None or row["revoked_at"] is not None:
            return None
        return StoredKey(row["name"], row["scope"], row["digest"], "database")


def _revoked_in(key: StoredKey, rows: Sequence[sa.RowMapping]) -> bool:
    """Whether ``rows`` hold ``key`` (same name and digest) as revoked."""
    return any(
        r["name"] == key.name
        and r["revoked_at"] is not None
        and hmac.compare_digest(r["digest"].encode(), key.digest.encode())
        for r in rows
    )


def create_key(
    conn: sa.Connection, *, name: str, scope: Scope, actor: str, reason: str | None = None
) -> str:
    """Store a new key's digest (audited, in the caller's transaction); return the key once."""
    check_key_name(name)
    if scope not in ("read", "admin", "frontend"):
        raise ValueError(f"scope must be read, admin or frontend, got {scope!r}")
    existing = conn.execute(sa.select(api_keys.c.name).where(api_keys.c.name == name)).first()
    if existing is not None:
        raise KeyError(f"a key named {name!r} exists; revoke it or choose another name")
    key = new_key()
    now = datetime.now(UTC)
    try:
        conn.execute(
            sa.insert(api_keys).values(name=name, scope=scope, digest=hash_key(key), created_at=now)
        )
    except sa.exc.IntegrityError:  # created by a concurrent call since the check above
        raise KeyError(f"a key named {name!r} exists; revoke it or choose another name") from None
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


def revoke_key(
    conn: sa.Connection,
    *,
    name: str,
    actor: str,
    reason: str | None = None,
    settings_key: StoredKey | None = None,
) -> bool:
    """Revoke the key in effect under ``name`` and end its sessions (audited, in the
    caller's transaction); False when no active key has that name.

    ``settings_key`` is the key of that name from ``SAFESHIP_ADMIN_KEYS``
    (`KeyRing.settings_key`), which takes precedence over a stored key of the same name:
    its digest is stored as revoked, so every process refuses it until the setting is
    given a new value.
    """
    now = datetime.now(UTC)
    if settings_key is not None:
        if not _revoke_settings_key(conn, settings_key, now):
            return False
        scope, source = settings_key.scope, "settings"
    else:
        result = conn.execute(
            sa.update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.scope)
        ).first()
        if result is None:
            return False
        scope, source = result.scope, "database"
    conn.execute(sa.delete(sessions).where(sessions.c.key_name == name))
    record_audit(
        conn,
        actor=actor,
        action="key.revoke",
        target=f"key:{name}",
        before={"name": name, "scope": scope, "source": source},
        reason=reason,
        at=now,
    )
    return True


def _revoke_settings_key(conn: sa.Connection, key: StoredKey, now: datetime) -> bool:
    """Store ``key``'s digest as revoked; False when it is revoked already."""
    row = conn.execute(sa.select(api_keys).where(api_keys.c.name == key.name)).mappings().first()
    if row is None:
        conn.execute(
            sa.insert(api_keys).values(
                name=key.name, scope=key.scope, digest=key.digest, created_at=now, revoked_at=now
            )
        )
        return True
    if _revoked_in(key, [row]):
        return False
    conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.name == key.name)
        .values(scope=key.scope, digest=key.digest, revoked_at=now)
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
