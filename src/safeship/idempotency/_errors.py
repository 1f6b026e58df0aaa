"""The idempotency slice's errors, all under :class:`safeship.SafeshipError`."""

from __future__ import annotations

from safeship.errors import SafeshipError

__all__ = ["IdempotencyConfigError", "IdempotencyError", "IdempotencyStoreError"]


class IdempotencyError(SafeshipError):
    """Base class of what the idempotency slice refuses."""


class IdempotencyConfigError(IdempotencyError, ValueError):
    """A setting was wrong at construction (which one, and what is allowed, is in the message)."""


class IdempotencyStoreError(IdempotencyError):
    """The key store could not answer (down, timed out): with ``on_store_error="closed"``
    (the default) nothing runs, so a duplicate can never slip through an outage."""
