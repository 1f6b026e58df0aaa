"""Engine factory: SQLite by default, PostgreSQL (psycopg 3 sync, asyncpg async) by URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from safeship.db._pool import remember_overflow
from safeship.errors import SafeshipError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from safeship.settings import Settings


class DatabaseUnavailableError(SafeshipError, RuntimeError):
    """The database could not be reached; callers answer 503 rather than hang."""


def normalise_url(url: str, *, async_: bool = False) -> str:
    """Pick safeship's driver for a plain URL: psycopg 3 (sync) or asyncpg (async)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg" if async_ else "postgresql+psycopg")
    elif backend == "postgresql" and async_ and parsed.drivername == "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and async_ and parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _postgres_options(settings: Settings | None) -> dict[str, Any]:
    connect_timeout = 3.0 if settings is None else settings.db_connect_timeout
    statement_timeout = 15_000 if settings is None else settings.db_statement_timeout_ms
    return {
        "connect_args": {
            "connect_timeout": max(1, round(connect_timeout)),
            "options": f"-c statement_timeout={statement_timeout}",
            "application_name": "safeship",
        },
        "pool_size": 5 if settings is None else settings.db_pool_size,
        "max_overflow": 5 if settings is None else settings.db_max_overflow,
        "pool_timeout": 5.0 if settings is None else settings.db_pool_timeout,
        "pool_pre_ping": True,
        "hide_parameters": True,
    }


def create_engine(url: str | None = None, *, settings: Settings | None = None) -> Engine:
    """A sync engine for ``url`` (or ``settings.database_url``) with safeship's pool settings.

    Statement parameters (outbox payloads, reasons, keys' names) are kept out of error
    messages and SQL logs (``hide_parameters``), so a failing write cannot leak them.
    """
    if url is None:
        if settings is None:
            raise ValueError("create_engine needs a URL or a Settings object")
        url = settings.database_url
    full = normalise_url(url)
    backend = make_url(full).get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(full, connect_args={"timeout": 5.0}, hide_parameters=True)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if isinstance(engine.pool, sa.QueuePool):  # a file database: SQLAlchemy's default
            remember_overflow(engine, 10)  # max_overflow, as documented for QueuePool
        return engine
    if backend == "postgresql":
        options = _postgres_options(settings)
        engine = sa.create_engine(full, **options)
        remember_overflow(engine, options["max_overflow"])
        return engine
    raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")


def create_async_engine(url: str, *, settings: Settings | None = None) -> AsyncEngine:
    """An async engine (asyncpg on PostgreSQL) sharing the same pool settings."""
    from sqlalchemy.ext.asyncio import create_async_engine as _create

    full = normalise_url(url, async_=True)
    if make_url(full).get_backend_name() != "postgresql":
        return _create(full, hide_parameters=True)
    options = _postgres_options(settings)
    args = options.pop("connect_args")
    server_settings = {
        "statement_timeout": args["options"].split("=", 1)[1],
        "application_name": "safeship",
    }
    return _create(
        full,
        connect_args={"timeout": args["connect_timeout"], "server_settings": server_settings},
        **options,
    )
