"""One throttled log line per outage, instead of a line (or a traceback) per failed try."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["OutageLog", "first_line"]


def first_line(error: BaseException | str) -> str:
    """``Type: first line of the message`` (at most 300 characters), for a log field."""
    if isinstance(error, str):
        text = error
    else:
        message = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {message[0] if message else repr(error)}"
    return text[:300]


class OutageLog:
    """Logs ``event`` at the first failure of an outage, then at most once every
    ``interval`` seconds while it lasts (with the failures since the last line), and
    ``recovered_event`` once when it ends.  Never with a traceback."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        event: str,
        recovered_event: str,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._event = event
        self._recovered_event = recovered_event
        self._interval = interval
        self._clock = clock
        self._started: float | None = None
        self._last_line: float | None = None
        self.failures = 0  # failures since the last line
        self.total = 0  # failures in this outage

    @property
    def due(self) -> bool:
        """True when the next failure should be logged."""
        return self._last_line is None or self._clock() - self._last_line >= self._interval

    def failed(self, error: BaseException | str, **fields: Any) -> None:
        """Count one failure; log it if :attr:`due`."""
        now = self._clock()
        self.failures += 1
        self.total += 1
        if self._started is None:
            self._started = now
        if not self.due:
            return
        extra = {"error": first_line(error), "failures": self.failures, **fields}
        self._log.warning(self._event, extra=extra)
        self._last_line = now
        self.failures = 0

    def recovered(self, **fields: Any) -> None:
        """End the outage (a no-op when there is none)."""
        if self._started is None:
            return
        seconds = round(self._clock() - self._started, 3)
        extra = {"failures": self.total, "outage_seconds": seconds, **fields}
        self._log.info(self._recovered_event, extra=extra)
        self._started = self._last_line = None
        self.failures = self.total = 0
