"""Idempotency keys: a retried request or redelivered message never acts twice.

Three shapes: the primitive (`once`, `aonce`, `first_time`) for consumers and webhooks;
`IdempotencyMiddleware` with the `idempotent` route decorator for HTTP (the IETF
``Idempotency-Key`` header); and `KeyHandle.record` to store a response in the handler's
own SQL transaction.  Stores: `RedisStore`, `SqlStore` (PostgreSQL, SQLite).
"""

from safeship._extras import require

require("db", "sqlalchemy", feature="safeship.idempotency")

from safeship.idempotency._errors import (  # noqa: E402
    IdempotencyConfigError,
    IdempotencyError,
    IdempotencyStoreError,
)
from safeship.idempotency._http import REPLAY_HEADERS, RouteOptions, idempotent  # noqa: E402
from safeship.idempotency._middleware import (  # noqa: E402
    IdempotencyMiddleware,
    KeyHandle,
    Principal,
    key_of,
    principal_from_header,
    principal_from_user,
)
from safeship.idempotency._model import Record, State, StoredResponse  # noqa: E402
from safeship.idempotency._once import aonce, first_time, once  # noqa: E402
from safeship.idempotency._sql import SqlStore  # noqa: E402
from safeship.idempotency._store import RedisStore, Store  # noqa: E402

__all__ = [
    "REPLAY_HEADERS",
    "IdempotencyConfigError",
    "IdempotencyError",
    "IdempotencyMiddleware",
    "IdempotencyStoreError",
    "KeyHandle",
    "Principal",
    "Record",
    "RedisStore",
    "RouteOptions",
    "SqlStore",
    "State",
    "Store",
    "StoredResponse",
    "aonce",
    "first_time",
    "idempotent",
    "key_of",
    "once",
    "principal_from_header",
    "principal_from_user",
]
