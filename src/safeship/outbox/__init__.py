"""Transactional outbox: stage events in your transaction, relay them to a broker.

``stage()`` (sync connections) and ``astage()`` (async ones) write an event through the
caller's own connection or session, so it commits or rolls back with the business change.
A :class:`Relay` publishes committed events to a sink (NATS JetStream, RabbitMQ, Redis
Streams, Kafka, HTTP webhook, or a callback), at least once and in order per
``aggregate_id``, and moves events that keep failing to dead letters.
"""

from safeship._extras import require

require("db", "sqlalchemy", feature="safeship.outbox")

from safeship.outbox._model import Event, OutboxPayloadError, Outcome, Status, uuid7  # noqa: E402
from safeship.outbox._relay import Relay, RelayConfig, RelayThread  # noqa: E402
from safeship.outbox._stage import (  # noqa: E402
    NewEvent,
    OutboxConnectionError,
    astage,
    astage_many,
    stage,
    stage_many,
)
from safeship.outbox.sinks import (  # noqa: E402
    CallbackSink,
    PermanentError,
    Route,
    Sink,
    SinkUnavailableError,
)

__all__ = [
    "CallbackSink",
    "Event",
    "NewEvent",
    "OutboxConnectionError",
    "OutboxPayloadError",
    "Outcome",
    "PermanentError",
    "Relay",
    "RelayConfig",
    "RelayThread",
    "Route",
    "Sink",
    "SinkUnavailableError",
    "Status",
    "astage",
    "astage_many",
    "stage",
    "stage_many",
    "uuid7",
]
