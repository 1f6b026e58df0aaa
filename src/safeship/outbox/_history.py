"""A bounded in-memory history of outbox stats for the dashboard's backlog chart.

The control plane samples :func:`safeship.outbox.admin.stats` at most every
``min_interval`` seconds, and only when someone looks (the page or the history endpoint),
so an idle control plane costs nothing.  The history lives in the process: it restarts
empty, and each control-plane process keeps its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from safeship.outbox.admin import OutboxStats

__all__ = ["BacklogHistory", "Sample", "chart_points"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: wall-clock time (Unix seconds) and the figures the chart draws."""

    at: float
    pending: int
    dead: int
    in_flight: int
    delivered_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "pending": self.pending,
            "dead": self.dead,
            "in_flight": self.in_flight,
            "delivered_per_second": self.delivered_per_second,
        }


class BacklogHistory:
    """The last ``capacity`` samples, at least ``min_interval`` seconds apart (thread-safe)."""

    def __init__(
        self,
        *,
        capacity: int = 360,
        min_interval: float = 4.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 2:
            raise ValueError("BacklogHistory capacity must be at least 2")
        if min_interval < 0:
            raise ValueError("BacklogHistory min_interval must be >= 0")
        self.capacity = capacity
        self.min_interval = min_interval
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._last_try = float("-inf")

    def _due(self) -> float | None:
        """Reserve the next sample slot: the time to stamp it with, or None if too soon."""
        now = self._clock()
        with self._lock:
            if now - self._last_try < self.min_interval:
                return None
            self._last_try = now
            return now

    def offer(self, reading: OutboxStats) -> bool:
        """Keep ``reading`` if a sample is due (a page that read stats anyway)."""
        at = self._due()
        if at is None:
            return False
        self._append(at, reading)
        return True

    def sample(self, read: Callable[[], OutboxStats]) -> bool:
        """Call ``read`` and keep its result if a sample is due; True if one was taken.

        Concurrent callers do not read twice: the slot is reserved before ``read`` runs.
        An error from ``read`` propagates, and the next sample waits ``min_interval``."""
        at = self._due()
        if at is None:
            return False
        self._append(at, read())
        return True

    def _append(self, at: float, reading: OutboxStats) -> None:
        sample = Sample(
            at=round(at, 3),
            pending=reading.pending,
            dead=reading.dead,
            in_flight=reading.in_flight,
            delivered_per_second=reading.delivered_per_second,
        )
        with self._lock:
            self._samples.append(sample)

    def samples(self) -> list[Sample]:
        """The samples, oldest first."""
        with self._lock:
            return list(self._samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "min_interval_seconds": self.min_interval,
            "samples": [s.to_dict() for s in self.samples()],
        }


def chart_points(
    samples: Sequence[Sample], field: str, *, width: float, height: float, top: float
) -> str:
    """SVG ``polyline`` points for ``field`` of ``samples``: time left to right over
    ``width``, values from 0 (bottom) to ``top`` (the top edge) over ``height``."""
    if not samples:
        return ""
    start, end = samples[0].at, samples[-1].at
    span = end - start
    scale = max(top, 1e-9)
    points = []
    for s in samples:
        x = width if span <= 0 else (s.at - start) / span * width
        y = height - min(float(getattr(s, field)), scale) / scale * height
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)
