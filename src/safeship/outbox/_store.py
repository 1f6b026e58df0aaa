"""What the relay needs from a database, and the pieces both stores share."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from safeship.outbox._model import Event

__all__ = ["Failure", "RelayStore", "event_from_row"]

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed event to reschedule (``delay`` seconds) or bury (``delay`` is None)."""

    seq: int
    error: str
    delay: float | None


class RelayStore(Protocol):
    """The relay's side of the database; one instance per relay, used from one task.

    ``wants_more`` is True after a heartbeat that held fewer partitions than a fair share
    while some may soon be free (another relay releasing them): heartbeat again soon.
    A heartbeat records the relay's published total, its events in flight (claimed, not
    yet confirmed) and its delivery rate (events/s) for :func:`safeship.outbox.admin.stats`.
    """

    wants_more: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def heartbeat(
        self,
        relay_id: str,
        busy: frozenset[int],
        published: int,
        in_flight: int = 0,
        rate: float = 0.0,
    ) -> frozenset[int]: ...
    async def claim(
        self, partitions: frozenset[int], limit: int, exclude: Sequence[int]
    ) -> list[Event]: ...
    async def complete(self, seqs: Sequence[int]) -> None: ...
    async def fail(self, failures: Sequence[Failure]) -> None: ...
    async def pending(self) -> int: ...
    async def wait(self, seconds: float) -> None: ...
    def wake(self) -> None: ...


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _decoded(row: Sequence[Any]) -> tuple[bytes, Mapping[str, str], str | None]:
    """Payload bytes, headers and, for a row no sink could send, why."""
    payload = _text(row[5])
    headers = _text(row[6])
    body = b"null" if payload is None else payload.encode()
    if headers is None:
        return body, _NO_HEADERS, None
    decoded = json.loads(headers)
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
    ):
        shown = json.dumps(decoded)[:200]
        return body, _NO_HEADERS, f"stored headers are not a str-to-str object: {shown}"
    return body, decoded, None


def event_from_row(row: Sequence[Any]) -> Event:
    """An :class:`Event` from (seq, id, aggregatetype, aggregateid, type, payload, headers,
    created_at, attempts); JSON columns may arrive as text or already decoded.

    A row that cannot become a sendable event (written to the table by hand, bypassing
    ``stage()``) gives an event with ``invalid`` set, which the relay dead-letters, rather
    than an error that would stop the relay claiming anything."""
    try:
        payload, headers, invalid = _decoded(row)
    except (TypeError, ValueError) as exc:  # UnicodeError and JSONDecodeError are ValueErrors
        payload, headers = b"null", _NO_HEADERS
        invalid = f"stored event cannot be decoded: {type(exc).__name__}: {exc}"[:2000]
    created: datetime = row[7]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return Event(
        seq=row[0],
        id=row[1],
        aggregate_type=row[2],
        aggregate_id=row[3],
        type=row[4],
        payload=payload,
        headers=headers,
        created_at=created,
        attempts=row[8],
        invalid=invalid,
    )
