"""The cache's errors: each derives from :class:`safeship.errors.SafeshipError`."""

from __future__ import annotations

from safeship.errors import SafeshipError

__all__ = ["CacheConfigError", "CacheError", "CacheKeyError"]


class CacheError(SafeshipError):
    """Something the cache refused."""


class CacheKeyError(CacheError, TypeError):
    """An argument has no canonical encoding, so it cannot be part of a cache key."""


class CacheConfigError(CacheError, ValueError):
    """A cache setting is out of range; the message names the setting and what is allowed."""
