"""Pure helpers of the N+1 detector: a statement's fingerprint, the caller's place in the
code, and the fix to suggest.  No database and no global state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

try:
    from greenlet import getcurrent as _getcurrent  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - greenlet comes with SQLAlchemy on most platforms
    _getcurrent = None

__all__ = ["call_site", "fingerprint", "suggest_fix", "user_stack"]

_PLACEHOLDER = re.compile(r"\$\d+|%\(\w+\)s|%s|\?|(?<![:\w]):\w+|\b\d+(?:\.\d+)?\b|'(?:[^']|'')*'")
_LISTS = re.compile(r"\?(?:\s*,\s*\?)+")
_SPACE = re.compile(r"\s+")
_EQUALS = re.compile(r"WHERE\s+([\w.\"]+)\s*=\s*\?", re.IGNORECASE)
_MAX_STATEMENT = 2000

#: Modules whose frames are never "the call site": the ORM, drivers, the event loop.
LIBRARY_PREFIXES = (
    "sqlalchemy",
    "safeship.data",
    "asyncio",
    "greenlet",
    "asyncpg",
    "psycopg",
    "contextlib",
    "starlette",
    "fastapi",
    "anyio",
    "concurrent",
    "threading",
)


def fingerprint(statement: str) -> str:
    """``statement`` with values and placeholder lists collapsed: one shape, one print."""
    text = _PLACEHOLDER.sub("?", statement[:_MAX_STATEMENT])
    return _SPACE.sub(" ", _LISTS.sub("?", text)).strip()


_LIBRARY_CODE: dict[CodeType, bool] = {}
_MAX_CODES = 20_000


def _is_library(frame: FrameType) -> bool:
    """Whether ``frame`` runs library code, remembered per code object (the hot path)."""
    code = frame.f_code
    known = _LIBRARY_CODE.get(code)
    if known is None:
        name = frame.f_globals.get("__name__", "")
        known = isinstance(name, str) and name.startswith(LIBRARY_PREFIXES)
        if len(_LIBRARY_CODE) < _MAX_CODES:
            _LIBRARY_CODE[code] = known
    return known


def _frames(frame: FrameType | None) -> Iterator[FrameType]:
    """The frames from ``frame`` outwards, following an async engine's greenlet to its parent
    (lazily: the call site is usually a few frames out)."""
    current = frame
    parent = _greenlet_parent()
    for _ in range(400):
        if current is None:
            if parent is None:
                return
            current, parent = parent.gr_frame, parent.parent
            continue
        yield current
        current = current.f_back


def _greenlet_parent() -> Any:
    """The greenlet that an async engine's statement runs under waits in its parent."""
    return None if _getcurrent is None else _getcurrent().parent


def call_site(frame: FrameType | None) -> str:
    """``path:line in function`` of the first frame outside the library modules."""
    current, codes = frame, _LIBRARY_CODE
    while current is not None:  # the plain stack first: no greenlet, no generator
        code = current.f_code
        library = codes.get(code)
        if library is None:
            library = _is_library(current)
        if not library:
            return f"{code.co_filename}:{current.f_lineno} in {code.co_name}"
        current = current.f_back
    for each in _frames(frame):  # an async engine: continue in the awaiting greenlet
        if not _is_library(each):
            return f"{each.f_code.co_filename}:{each.f_lineno} in {each.f_code.co_name}"
    return "unknown"


def user_stack(frame: FrameType | None, limit: int = 12) -> tuple[str, ...]:
    """The caller's frames (outside the library), innermost first."""
    lines = [
        f"{each.f_code.co_filename}:{each.f_lineno} in {each.f_code.co_name}"
        for each in _frames(frame)
        if not _is_library(each)
    ]
    return tuple(lines[:limit])


def lazy_relationship(frame: FrameType | None) -> str | None:
    """``Parent.attribute`` when the statement comes from an ORM lazy load, else ``None``."""
    for each in _frames(frame):
        if each.f_globals.get("__name__") == "sqlalchemy.orm.strategies":
            strategy = each.f_locals.get("self")
            prop = getattr(strategy, "parent_property", None)
            if prop is not None:
                return str(prop)
    return None


def suggest_fix(statement: str, relationship: str | None) -> str:
    """What to write instead of the loop, in one sentence."""
    if relationship is not None:
        return (
            f"load {relationship} for every parent at once: "
            f".options(selectinload({relationship})) on the query that loads the parents"
        )
    match = _EQUALS.search(statement)
    if match:
        column = match.group(1)
        return (
            f"fetch all rows in one statement: WHERE {column} = ANY(:ids) on PostgreSQL, or "
            f"{column} IN :ids with bindparam('ids', expanding=True), then group them in Python"
        )
    return "run the statement once for the whole set instead of once per item of the loop"
