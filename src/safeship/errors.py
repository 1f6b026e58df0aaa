"""The one root of every error safeship raises on purpose.

Each slice's errors derive from :class:`SafeshipError` (and, where it reads naturally,
from the built-in they have always been, such as ``ValueError`` or ``KeyError``), so a
caller can catch "anything safeship refused" in one place without losing the old names.
"""

from __future__ import annotations

__all__ = ["SafeshipError"]


class SafeshipError(Exception):
    """Base class of the errors safeship raises: a refusal, a rejection or bad input."""
