"""Sinks the relay publishes to: one module per broker, each importing its client lazily."""

from safeship.outbox.sinks._base import (
    PermanentError,
    Route,
    Sink,
    SinkUnavailableError,
    publish_per_key,
)
from safeship.outbox.sinks._callback import CallbackSink

__all__ = [
    "CallbackSink",
    "PermanentError",
    "Route",
    "Sink",
    "SinkUnavailableError",
    "publish_per_key",
]
