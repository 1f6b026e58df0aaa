"""Transactions that span several stores: one caller's connection, every write in it.

A store method given the caller's connection writes inside the caller's transaction, in a
savepoint of its own (so a change the store refuses leaves the caller's other writes
intact).  On SQLite that needs the transaction to be real first: pysqlite starts one only
at the first INSERT, UPDATE or DELETE, and a SAVEPOINT outside a transaction opens one of
its own that its RELEASE commits, alone.  ``hold_write_lock`` makes it real.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

__all__ = ["hold_write_lock", "savepoint"]


def hold_write_lock(conn: sa.Connection) -> None:
    """On SQLite, start ``conn``'s transaction now with the database's write lock.

    ``BEGIN IMMEDIATE`` waits (``busy_timeout``) for other writers, so every read after it
    sees the latest commit and no later write of the transaction can fail on a lock.
    Nothing happens when the transaction is already real, or on PostgreSQL (whose
    transaction starts with its first statement and locks rows as they are written).
    """
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if not getattr(dbapi, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def savepoint(conn: sa.Connection) -> Iterator[sa.Connection]:
    """A savepoint in the caller's transaction on ``conn``: released when the block ends,
    rolled back alone (the caller's earlier writes stay) when it raises."""
    hold_write_lock(conn)
    with conn.begin_nested():
        yield conn
