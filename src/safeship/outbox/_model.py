"""Value objects of the outbox: the staged event, delivery outcomes, ids and partitions."""

from __future__ import annotations

import json
import uuid
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from safeship._uuid7 import uuid7
from safeship.outbox._schema import PARTITIONS
from safeship.outbox.encoding import OutboxPayloadError, check_key, encode_json

__all__ = [
    "DeliveryRate",
    "Event",
    "OutboxPayloadError",
    "Outcome",
    "Status",
    "check_key",
    "dumps",
    "partition_of",
    "uuid7",
]


def partition_of(aggregate_id: str) -> int:
    """The partition of a key: CRC-32 of its UTF-8 bytes modulo :data:`PARTITIONS`."""
    return zlib.crc32(aggregate_id.encode()) % PARTITIONS


def dumps(value: Any, *, field: str) -> str:
    """Serialize ``value`` to compact JSON, or raise :class:`OutboxPayloadError`."""
    return encode_json(value, field=field)


@dataclass(frozen=True, slots=True)
class Event:
    """One pending event as the relay hands it to a sink."""

    seq: int
    id: uuid.UUID
    aggregate_type: str
    aggregate_id: str
    type: str
    payload: bytes
    headers: Mapping[str, str]
    created_at: datetime
    attempts: int = 0
    #: Why this stored row cannot be sent (e.g. headers written to the table by hand that
    #: are not a str-to-str mapping); the relay dead-letters such an event at once.
    invalid: str | None = None

    def payload_json(self) -> Any:
        """The payload decoded from JSON."""
        return json.loads(self.payload)


class Status(Enum):
    """What happened to one event handed to a sink."""

    DELIVERED = "delivered"
    RETRY = "retry"  # transient: try again after a backoff
    PERMANENT = "permanent"  # the sink will never accept it: dead-letter now
    SKIPPED = "skipped"  # not attempted (an earlier event of its key failed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result for one event: status, error text, and a sink's requested delay."""

    status: Status
    error: str | None = None
    retry_after: float | None = None


DELIVERED = Outcome(Status.DELIVERED)
SKIPPED = Outcome(Status.SKIPPED)


class DeliveryRate:
    """Events per second over a sliding window of ``(time, total)`` readings of a counter.

    The oldest reading kept is the last one at or before the window's start, so the rate
    covers at least ``window`` seconds once the counter is that old and never swings to 0
    between two close readings.  Times are the caller's (monotonic seconds).
    """

    def __init__(self, window: float = 10.0, *, max_readings: int = 512) -> None:
        if window <= 0:
            raise ValueError("DeliveryRate window must be > 0 seconds")
        self.window = window
        self._readings: deque[tuple[float, int]] = deque(maxlen=max_readings)

    def observe(self, now: float, total: int) -> float:
        """Record ``total`` at ``now`` and return the rate over the window."""
        readings = self._readings
        if readings and (now < readings[-1][0] or total < readings[-1][1]):
            readings.clear()  # clock or counter went back: start over
        readings.append((now, total))
        while len(readings) >= 2 and readings[1][0] <= now - self.window:
            readings.popleft()
        first_at, first = readings[0]
        return 0.0 if now <= first_at else (total - first) / (now - first_at)
