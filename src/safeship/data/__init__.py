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
from safeship.data._doctor import DoctorReport, diagnose  # noqa: E402
from safeship.data._errors import (  # noqa: E402
    BatchConfigError,
    BatchRowError,
    BatchWriterClosedError,
    HeadroomError,
    MigrationFailedError,
    NPlusOneError,
)
from safeship.data._indexes import IndexHealth, index_health  # noqa: E402
from safeship.data._lint import lint_alembic, lint_migrations, lint_sql  # noqa: E402
from safeship.data._lint_sql import RULES as LINT_RULES  # noqa: E402
from safeship.data._lint_sql import LintFinding  # noqa: E402
from safeship.data._migrate_runner import (  # noqa: E402
    UpgradeResult,
    configure_lock_timeout,
    safe_upgrade,
)
from safeship.data._nplusone import (  # noqa: E402
    AllowEntry,
    Finding,
    NPlusOneDetector,
    NPlusOneMiddleware,
    detect_n_plus_one,
)
from safeship.data._pools import (  # noqa: E402
    PoolCollector,
    PoolStats,
    check_headroom,
    pool_stats,
    startup_headroom,
    watch_pool,
)
from safeship.data._roles import API_ROLE, BATCH_ROLE, DatabaseRole  # noqa: E402
from safeship.resilience.presets.db import (  # noqa: E402
    is_transaction_conflict,
    run_transaction,
    run_transaction_async,
)

__all__ = [
    "API_ROLE",
    "BATCH_ROLE",
    "LINT_RULES",
    "AllowEntry",
    "AsyncBatchWriter",
    "BatchConfigError",
    "BatchRowError",
    "BatchStats",
    "BatchWriter",
    "BatchWriterClosedError",
    "DatabaseRole",
    "DoctorReport",
    "Finding",
    "HeadroomError",
    "IndexHealth",
    "LintFinding",
    "MigrationFailedError",
    "NPlusOneDetector",
    "NPlusOneError",
    "NPlusOneMiddleware",
    "PoolCollector",
    "PoolStats",
    "UpgradeResult",
    "check_headroom",
    "configure_lock_timeout",
    "detect_n_plus_one",
    "diagnose",
    "index_health",
    "is_transaction_conflict",
    "lint_alembic",
    "lint_migrations",
    "lint_sql",
    "pool_stats",
    "run_transaction",
    "run_transaction_async",
    "safe_upgrade",
    "startup_headroom",
    "watch_pool",
]
