"""How long values live and how staleness is used, validated once at decoration."""

from __future__ import annotations

import math
from dataclasses import dataclass

from safeship.cache._errors import CacheConfigError

__all__ = ["Policy", "check_seconds"]

MAX_TTL = 366 * 24 * 3600.0


def check_seconds(field: str, value: float | None, *, zero: bool = True) -> float | None:
    """``value`` as seconds, or CacheConfigError naming ``field`` and the range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise CacheConfigError(f"{field}={value!r}: use a number of seconds")
    low_ok = value >= 0 if zero else value > 0
    if not low_ok or value > MAX_TTL:
        bound = "[0" if zero else "(0"
        raise CacheConfigError(f"{field}={value!r}: use seconds in {bound}, {MAX_TTL:.0f}]")
    return float(value)


@dataclass(frozen=True, slots=True)
class Policy:
    """``ttl`` fresh seconds; a stale value is served (and refreshed in the background)
    for ``stale_while_revalidate`` more seconds, and instead of a loader error for
    ``stale_if_error`` more; ``negative_ttl`` caches ``None`` results (off by default);
    ``beta`` scales XFetch's early refresh (0 turns it off)."""

    ttl: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    negative_ttl: float | None = None
    beta: float = 1.0

    def __post_init__(self) -> None:
        check_seconds("ttl", self.ttl, zero=False)
        check_seconds("stale_while_revalidate", self.stale_while_revalidate)
        check_seconds("stale_if_error", self.stale_if_error)
        check_seconds("negative_ttl", self.negative_ttl, zero=False)
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float):
            raise CacheConfigError(f"xfetch_beta={self.beta!r}: use a number in [0, 10]")
        if not 0 <= self.beta <= 10:
            raise CacheConfigError(f"xfetch_beta={self.beta!r}: use a number in [0, 10]")

    @property
    def keep(self) -> float:
        """Seconds past expiry an entry is kept for stale serving."""
        return max(self.stale_while_revalidate, self.stale_if_error)
