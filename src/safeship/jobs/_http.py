"""The HTTP contract of a job for Starlette/FastAPI apps: ``202 Accepted`` with
``Location: /jobs/{id}`` and ``Retry-After``, and a status resource at that location.

Starlette is imported when a response is built, so the jobs slice itself stays light.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import sqlalchemy as sa

from safeship.jobs._admin import status
from safeship.jobs._model import UnknownJobError

__all__ = ["aaccepted_in", "accepted", "accepted_in", "status_response"]

_MAX_RETRY_AFTER = 3600


def _retry_after(seconds: int) -> str:
    if not isinstance(seconds, int) or not 0 <= seconds <= _MAX_RETRY_AFTER:
        raise ValueError(f"retry_after must be an int in [0, {_MAX_RETRY_AFTER}], got {seconds!r}")
    return str(seconds)


def accepted(job_id: uuid.UUID, *, prefix: str = "/jobs", retry_after: int = 1) -> Any:
    """``202 Accepted`` for a job just enqueued: ``Location`` names its status resource,
    ``Retry-After`` says when to look, and the body carries the id."""
    from starlette.responses import JSONResponse

    if not prefix.startswith("/") or "//" in prefix or any(c in prefix for c in "\r\n?#"):
        raise ValueError(f"prefix must be an absolute path without query, got {prefix!r}")
    location = f"{prefix.rstrip('/')}/{job_id}"
    headers = {"Location": location, "Retry-After": _retry_after(retry_after)}
    body = {"id": str(job_id), "state": "pending", "status_url": location}
    return JSONResponse(body, status_code=202, headers=headers)


def accepted_in(
    conn: Any, request: Any, job_id: uuid.UUID, *, prefix: str = "/jobs", retry_after: int = 1
) -> Any:
    """:func:`accepted` for a job enqueued in ``conn``'s (sync) transaction.

    When the request carries an ``Idempotency-Key`` (a route marked ``@idempotent`` behind
    ``IdempotencyMiddleware`` with a ``SqlStore`` on the same database), the 202 is recorded
    for that key in the same transaction: the job and the key's answer commit together or
    not at all, and a retry with the same key replays this job's id, never a second job.
    Without a key it is plain :func:`accepted`."""
    response = accepted(job_id, prefix=prefix, retry_after=retry_after)
    handle = _key_handle(request)
    if handle is not None:
        handle.record(conn, response)
    return response


async def aaccepted_in(
    conn: Any, request: Any, job_id: uuid.UUID, *, prefix: str = "/jobs", retry_after: int = 1
) -> Any:
    """:func:`accepted_in` for an ``AsyncConnection`` / ``AsyncSession``."""
    response = accepted(job_id, prefix=prefix, retry_after=retry_after)
    handle = _key_handle(request)
    if handle is not None:
        await handle.arecord(conn, response)
    return response


def _key_handle(request: Any) -> Any:
    if "safeship.idempotency" not in sys.modules:
        return None  # no middleware loaded the slice: no request can carry a claimed key
    from safeship.idempotency import key_of

    return key_of(request)


def status_response(bind: sa.Engine | sa.Connection, job_id: str, *, retry_after: int = 1) -> Any:
    """The status resource: ``200`` with state, attempts, progress, result or errors
    (``Retry-After`` while the job is not finished), ``404`` for an unknown or malformed id."""
    from starlette.responses import JSONResponse

    try:
        found = status(bind, uuid.UUID(job_id))
    except (ValueError, UnknownJobError):
        return JSONResponse({"error": "no such job"}, status_code=404)
    body = found.as_dict()
    body.pop("args", None)
    headers = {} if found.state.finished else {"Retry-After": _retry_after(retry_after)}
    return JSONResponse(body, status_code=200, headers=headers)
