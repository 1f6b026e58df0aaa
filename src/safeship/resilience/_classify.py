"""Which failures are worth retrying, and what ``Retry-After`` says.

Retrying cannot fix a request the server refused (HTTP 4xx other than 408, 425 and 429),
so :func:`is_permanent` recognises those without importing any HTTP library: it looks for
a status code on the exception (``status_code`` / ``status``) or on its ``response``. An
exception may also declare ``retryable = False`` itself. :func:`retry_after_hint` reads a
wait hint from :class:`~safeship.resilience.Rejected` errors (``retry_after``), from an
HTTP ``Retry-After`` header (seconds or an HTTP date) on an exception's response or on a
returned response.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

__all__ = ["RETRYABLE_STATUS", "is_permanent", "retry_after_hint", "status_of"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: timeouts, too early, too many requests, server errors."""


def status_of(value: object) -> int | None:
    """The HTTP status carried by a response or an exception (or its response), if any."""
    for candidate in (value, getattr(value, "response", None)):
        if candidate is None:
            continue
        for attribute in ("status_code", "status"):
            status = getattr(candidate, attribute, None)
            if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
                return status
    return None


def is_permanent(exc: BaseException) -> bool:
    """True when retrying ``exc`` cannot help: a 4xx answer, or ``retryable = False``."""
    declared = getattr(exc, "retryable", None)
    if declared is False:
        return True
    status = status_of(exc)
    return status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS


def retry_after_hint(value: object, *, now: float | None = None) -> float | None:
    """Seconds the other side asked us to wait, from ``retry_after`` or a header."""
    hint = getattr(value, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool):
        return max(0.0, float(hint))
    for candidate in (value, getattr(value, "response", None)):
        headers: Any = getattr(candidate, "headers", None)
        if headers is None or not hasattr(headers, "get"):
            continue
        parsed = _parse_retry_after(headers.get("Retry-After"), now)
        if parsed is not None:
            return parsed
    return None


def _parse_retry_after(raw: object, now: float | None) -> float | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
