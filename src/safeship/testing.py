"""Test helpers for code that uses safeship: frozen time, forced flags, in-memory stores,
captured logs.  Everything here is deterministic and needs no server.

    from safeship.testing import FakeClock, capture_logs, force_flags, memory_flag_store

    def test_checkout_falls_back_when_payments_is_down():
        with force_flags(myapp.flags, {"checkout-v2": True}), capture_logs() as logs:
            ...
        assert logs.events("breaker.opened")
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from safeship.data._nplusone import detect_n_plus_one
from safeship.flags.testing import fixed_flags, force_flags
from safeship.resilience.testing import (
    FakeClock,
    TransitionRecorder,
    instant_retries,
    isolated_registry,
)

__all__ = [
    "CapturedLogs",
    "FakeClock",
    "TransitionRecorder",
    "capture_logs",
    "detect_n_plus_one",
    "fixed_flags",
    "force_flags",
    "instant_retries",
    "isolated_registry",
    "memory_engine",
    "memory_flag_store",
]


@dataclass
class CapturedLogs:
    """Log records captured from the ``safeship`` loggers (and any others asked for)."""

    records: list[logging.LogRecord] = field(default_factory=list)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def events(self, prefix: str) -> list[logging.LogRecord]:
        """Records whose message starts with an event name such as ``flags.degraded``."""
        return [r for r in self.records if r.getMessage().startswith(prefix)]

    def at_level(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


class _ListHandler(logging.Handler):
    def __init__(self, sink: CapturedLogs) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.records.append(record)


@contextmanager
def capture_logs(*loggers: str, level: int = logging.DEBUG) -> Iterator[CapturedLogs]:
    """Capture records of ``loggers`` (default: ``safeship``) for the block."""
    captured = CapturedLogs()
    handler = _ListHandler(captured)
    targets = [logging.getLogger(name) for name in (loggers or ("safeship",))]
    previous = [t.level for t in targets]
    for target in targets:
        target.addHandler(handler)
        target.setLevel(level)
    try:
        yield captured
    finally:
        for target, old in zip(targets, previous, strict=True):
            target.removeHandler(handler)
            target.setLevel(old)


def memory_engine() -> sa.Engine:
    """A migrated in-memory SQLite database, shared by every connection of the engine."""
    from safeship.db._migrate import upgrade

    engine = sa.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    upgrade(engine)
    return engine


def memory_flag_store(flags: dict[str, Any] | None = None) -> Any:
    """A ``FlagStore`` in memory, with ``flags`` (name -> on/off) created in it."""
    from safeship.flags.store import FlagStore

    store = FlagStore(memory_engine())
    for name, enabled in (flags or {}).items():
        store.create(name, actor="test")
        if enabled:
            store.set_enabled(name, True, actor="test")
    return store
