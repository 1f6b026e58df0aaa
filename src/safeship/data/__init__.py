"""Data-layer safety for SQLAlchemy 2 services: batch writes, N+1 detection, database
health and safe migrations.

Needs the ``db`` extra (SQLAlchemy); COPY on PostgreSQL needs ``postgres`` (psycopg 3 or
asyncpg).  See docs/data.md.
"""

from __future__ import annotations

from safeship._extras import require

require("db", "sqlalchemy", feature="safeship.data")

from safeship.data._batch import BatchWriter  # noqa: E402
from safeship.data._batch_async import AsyncBatchWriter  # noqa: E402
from safeship.data._batch_core import BatchStats  # noqa: E402
from safeship.data._errors import (  # noqa: E402
    BatchConfigError,
    BatchRowError,
    BatchWriterClosedError,
    NPlusOneError,
)
from safeship.data._nplusone import (  # noqa: E402
    AllowEntry,
    Finding,
    NPlusOneDetector,
    NPlusOneMiddleware,
    detect_n_plus_one,
)

__all__ = [
    "AllowEntry",
    "AsyncBatchWriter",
    "BatchConfigError",
    "BatchRowError",
    "BatchStats",
    "BatchWriter",
    "BatchWriterClosedError",
    "Finding",
    "NPlusOneDetector",
    "NPlusOneError",
    "NPlusOneMiddleware",
    "detect_n_plus_one",
]
