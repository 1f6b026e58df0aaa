"""How one batch reaches the database: COPY on PostgreSQL, multi-row INSERT elsewhere.

PostgreSQL through psycopg 3 streams the rows with ``COPY ... FROM STDIN``; through asyncpg
with ``copy_records_to_table`` (binary COPY).  With a conflict key the rows are copied into
a temporary staging table (dropped at commit) and moved with ``INSERT ... SELECT ... ON
CONFLICT``, so replaying a batch does not duplicate it.  SQLite (and any other dialect)
gets multi-row ``INSERT`` statements within its bound-parameter limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from safeship.data._batch_core import Row, dedupe_last
from safeship.data._errors import BatchConfigError

__all__ = ["Target", "write_async", "write_sync"]

_SQLITE_MAX_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
_OTHER_MAX_PARAMS = 30000


@dataclass(frozen=True, slots=True)
class Target:
    """The table a writer fills, its columns, and the upsert rule (if any)."""

    table: sa.Table
    columns: tuple[str, ...]
    conflict: tuple[str, ...] = ()
    update: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        table: sa.Table,
        columns: Sequence[str] | None,
        conflict: Sequence[str] | None,
        update: Sequence[str] | None,
    ) -> Target:
        names = tuple(columns) if columns is not None else tuple(c.name for c in table.columns)
        for label, group in (
            ("columns", names),
            ("conflict", conflict or ()),
            ("update", update or ()),
        ):
            missing = [c for c in group if c not in table.c]
            if missing:
                raise BatchConfigError(f"{label} {missing} are not columns of {table.name!r}")
        if not names:
            raise BatchConfigError("a batch writer needs at least one column")
        if update and not conflict:
            raise BatchConfigError("update=... needs conflict=... (the key that identifies a row)")
        if conflict and not set(conflict) <= set(names):
            raise BatchConfigError(f"conflict columns {list(conflict)} must be among {list(names)}")
        return cls(table, names, tuple(conflict or ()), tuple(update or ()))

    @property
    def key_index(self) -> tuple[int, ...]:
        return tuple(self.columns.index(c) for c in self.conflict)

    def quoted(self, preparer: sa.sql.compiler.IdentifierPreparer) -> tuple[str, str]:
        """The table's qualified name and its column list, quoted for the dialect."""
        name = preparer.format_table(self.table)
        return name, ", ".join(preparer.quote(c) for c in self.columns)

    def merge_sql(self, preparer: sa.sql.compiler.IdentifierPreparer, staging: str) -> str:
        name, cols = self.quoted(preparer)
        key = ", ".join(preparer.quote(c) for c in self.conflict)
        if self.update:
            sets = ", ".join(
                f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}" for c in self.update
            )
            action = f"DO UPDATE SET {sets}"
        else:
            action = "DO NOTHING"
        # Every name is quoted by the dialect's preparer from the Table's own columns.
        return (
            f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {staging} "  # noqa: S608
            f"ON CONFLICT ({key}) {action}"
        )

    def insert(self, dialect: str, rows: Sequence[Row]) -> sa.Executable:
        values = [dict(zip(self.columns, row, strict=True)) for row in rows]
        if not self.conflict:
            return sa.insert(self.table).values(values)
        statement: Any
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(self.table).values(values)
        elif dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement = postgresql.insert(self.table).values(values)
        else:
            raise BatchConfigError(f"conflict=... needs PostgreSQL or SQLite, not {dialect}")
        if self.update:
            set_ = {c: statement.excluded[c] for c in self.update}
            result: sa.Executable = statement.on_conflict_do_update(
                index_elements=list(self.conflict), set_=set_
            )
            return result
        done: sa.Executable = statement.on_conflict_do_nothing(index_elements=list(self.conflict))
        return done

    def chunks(self, dialect: str, rows: Sequence[Row]) -> list[Sequence[Row]]:
        limit = _SQLITE_MAX_PARAMS if dialect == "sqlite" else _OTHER_MAX_PARAMS
        size = max(1, limit // len(self.columns))
        return [rows[i : i + size] for i in range(0, len(rows), size)]


_STAGING = "safeship_batch_staging"


def _prepare(target: Target, rows: Sequence[Row]) -> Sequence[Row]:
    return dedupe_last(rows, target.key_index)


def _copy_sql(target: Target, preparer: Any, into: str | None = None) -> str:
    name, cols = target.quoted(preparer)
    return f"COPY {into or name} ({cols}) FROM STDIN"


def _staging_sql(target: Target, preparer: Any) -> str:
    name, cols = target.quoted(preparer)
    return (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ON COMMIT DROP AS "  # noqa: S608
        f"SELECT {cols} FROM {name} WITH NO DATA"
    )


def write_sync(engine: sa.Engine, target: Target, rows: Sequence[Row]) -> None:
    """Write ``rows`` in one transaction of ``engine``."""
    rows = _prepare(target, rows)
    dialect = engine.dialect
    with engine.begin() as conn:
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            _copy_psycopg(conn, target, rows)
            return
        for chunk in target.chunks(dialect.name, rows):
            conn.execute(target.insert(dialect.name, chunk))


def _copy_psycopg(conn: sa.Connection, target: Target, rows: Sequence[Row]) -> None:
    preparer = conn.dialect.identifier_preparer
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        if target.conflict:
            cursor.execute(_staging_sql(target, preparer))
        with cursor.copy(
            _copy_sql(target, preparer, _STAGING if target.conflict else None)
        ) as copy:
            for row in rows:
                copy.write_row(row)
        if target.conflict:
            cursor.execute(target.merge_sql(preparer, _STAGING))


async def write_async(engine: AsyncEngine | Any, target: Target, rows: Sequence[Row]) -> None:
    """Write ``rows`` in one transaction: an :class:`AsyncEngine` or an asyncpg pool."""
    rows = _prepare(target, rows)
    if not isinstance(engine, AsyncEngine):
        async with engine.acquire() as connection:
            await _copy_asyncpg(connection, target, rows)
        return
    dialect = engine.dialect
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await _copy_asyncpg(raw.driver_connection, target, rows)
        return
    async with engine.begin() as conn:
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            raw = await conn.get_raw_connection()
            await _copy_psycopg_async(raw.driver_connection, target, rows)
            return
        for chunk in target.chunks(dialect.name, rows):
            await conn.execute(target.insert(dialect.name, chunk))


_PG_PREPARER = None


def _pg_preparer() -> Any:
    global _PG_PREPARER
    if _PG_PREPARER is None:
        from sqlalchemy.dialects import postgresql

        _PG_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    return _PG_PREPARER


async def _copy_asyncpg(connection: Any, target: Target, rows: Sequence[Row]) -> None:
    table = target.table
    if not target.conflict:  # one COPY is atomic alone: no BEGIN / COMMIT round trips
        await connection.copy_records_to_table(
            table.name, records=rows, columns=list(target.columns), schema_name=table.schema
        )
        return
    async with connection.transaction():
        preparer = _pg_preparer()
        await connection.execute(_staging_sql(target, preparer))
        await connection.copy_records_to_table(_STAGING, records=rows, columns=list(target.columns))
        await connection.execute(target.merge_sql(preparer, _STAGING))


async def _copy_psycopg_async(connection: Any, target: Target, rows: Sequence[Row]) -> None:
    preparer = _pg_preparer()
    async with connection.cursor() as cursor:
        if target.conflict:
            await cursor.execute(_staging_sql(target, preparer))
        staging = _STAGING if target.conflict else None
        async with cursor.copy(_copy_sql(target, preparer, staging)) as copy:
            for row in rows:
                await copy.write_row(row)
        if target.conflict:
            await cursor.execute(target.merge_sql(preparer, _STAGING))
