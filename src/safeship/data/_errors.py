"""Errors of the data layer: each says which setting or row was wrong and what is allowed."""

from __future__ import annotations

from safeship.errors import SafeshipError

__all__ = [
    "BatchConfigError",
    "BatchRowError",
    "BatchWriterClosedError",
    "HeadroomError",
    "MigrationFailedError",
    "NPlusOneError",
]


class BatchConfigError(SafeshipError, ValueError):
    """A batch writer setting safeship cannot use; the message names it."""


class BatchRowError(SafeshipError, ValueError):
    """A row handed to a batch writer does not fit its columns; nothing was buffered."""


class BatchWriterClosedError(SafeshipError, RuntimeError):
    """A row was offered to a batch writer that is closing or closed."""


class NPlusOneError(SafeshipError, AssertionError):
    """One unit of work ran the same statement from the same place too many times."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class HeadroomError(SafeshipError, RuntimeError):
    """The fleet's pools may open more connections than the database server allows."""


class MigrationFailedError(SafeshipError, RuntimeError):
    """A migration run failed; ``invalid_indexes`` lists the INVALID indexes it left behind."""

    def __init__(self, message: str, *, invalid_indexes: list[str]) -> None:
        super().__init__(message)
        self.invalid_indexes = invalid_indexes
