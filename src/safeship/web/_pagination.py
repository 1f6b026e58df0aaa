"""Bounded pagination parameters and the response envelope.

Rule: constructing `Page` directly (or `Page.parse(..., strict=True)`) rejects
out-of-range values with ValueError; `Page.clamped` and `page_params` (the web entry
points) clamp them into range and fall back to the defaults for values that are not
integers, so a client can never ask for an unbounded page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")

MIN_PAGE = 1
MAX_PAGE = 10_000
MIN_LIMIT = 1
MAX_LIMIT = 100
DEFAULT_LIMIT = 50


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


@dataclass(frozen=True, slots=True)
class Page:
    """Which slice of a list to return: ``page`` 1..10000, ``limit`` 1..100 (default 50)."""

    page: int = 1
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        for field, value, low, high in (
            ("page", self.page, MIN_PAGE, MAX_PAGE),
            ("limit", self.limit, MIN_LIMIT, MAX_LIMIT),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{field} must be an integer in {low}..{high}, got {value!r}")

    @classmethod
    def clamped(cls, page: object = 1, limit: object = DEFAULT_LIMIT) -> Page:
        """A page from untrusted input: out-of-range values are clamped, junk → default."""
        p = _as_int(page)
        n = _as_int(limit)
        return cls(
            page=1 if p is None else _clamp(p, MIN_PAGE, MAX_PAGE),
            limit=DEFAULT_LIMIT if n is None else _clamp(n, MIN_LIMIT, MAX_LIMIT),
        )

    @classmethod
    def parse(cls, page: object = 1, limit: object = DEFAULT_LIMIT, *, strict: bool) -> Page:
        """Strictly validate (ValueError naming the field) or clamp, as chosen."""
        if not strict:
            return cls.clamped(page, limit)
        p, n = _as_int(page), _as_int(limit)
        if p is None:
            raise ValueError(f"page must be an integer, got {page!r}")
        if n is None:
            raise ValueError(f"limit must be an integer, got {limit!r}")
        return cls(page=p, limit=n)

    @property
    def offset(self) -> int:
        """Rows to skip (SQL ``OFFSET``)."""
        return (self.page - 1) * self.limit

    def result(self, items: Sequence[T], total: int) -> PageResult[T]:
        """Wrap one page of ``items`` out of ``total`` in the response envelope."""
        return PageResult(items=tuple(items), page=self.page, limit=self.limit, total=total)


@dataclass(frozen=True, slots=True, kw_only=True)
class PageResult(Generic[T]):
    """The response envelope: ``items``, ``page``, ``limit``, ``total``, ``has_next``."""

    items: tuple[T, ...]
    page: int
    limit: int
    total: int

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError(f"total must be >= 0, got {self.total}")

    @property
    def has_next(self) -> bool:
        """Whether a later page has items."""
        return self.page * self.limit < self.total and self.page < MAX_PAGE

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready envelope."""
        return {
            "items": list(self.items),
            "page": self.page,
            "limit": self.limit,
            "total": self.total,
            "has_next": self.has_next,
        }


def page_params(page: int = 1, limit: int = DEFAULT_LIMIT) -> Page:
    """FastAPI dependency: ``page: Page = Depends(page_params)``; clamps out-of-range."""
    return Page.clamped(page, limit)
