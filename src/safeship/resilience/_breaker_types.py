"""Value types a circuit breaker exposes: its states, transition events and snapshot."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

__all__ = [
    "BreakerSnapshot",
    "HalfOpenFigures",
    "State",
    "Transition",
    "TransitionRecord",
    "WindowFigures",
]


class State(StrEnum):
    """Where a breaker stands. The last three are set by hand and never change on their own."""

    CLOSED = "closed"
    """Calls run; outcomes are judged by the window."""
    OPEN = "open"
    """Calls are rejected until the open duration ends."""
    HALF_OPEN = "half_open"
    """A fixed number of trial calls run; the rest are rejected."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until :meth:`Breaker.reset`."""
    DISABLED = "disabled"
    """Every call runs and nothing is recorded."""
    METRICS_ONLY = "metrics_only"
    """Every call runs and is recorded, but the breaker never opens."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as given to listeners and kept in the breaker's history."""

    breaker: str
    from_state: State
    to_state: State
    at: float
    """Wall-clock time of the change, seconds since the epoch."""
    reason: str
    """Why: ``failure threshold``, ``slow-call threshold``, ``trial calls failed``,
    ``trial calls succeeded``, ``open duration elapsed``, ``manual``, ``reset``, or
    ``peer ...`` when it came from another process through shared state."""

    def to_record(self) -> TransitionRecord:
        """A JSON-able form with an ISO 8601 timestamp beside the epoch one."""
        iso = dt.datetime.fromtimestamp(self.at, tz=dt.UTC).isoformat()
        return {
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "at": self.at,
            "at_iso": iso,
            "reason": self.reason,
        }


class TransitionRecord(TypedDict):
    """JSON form of a :class:`Transition`."""

    from_state: str
    to_state: str
    at: float
    at_iso: str
    reason: str


class WindowFigures(TypedDict):
    """What the judging window currently holds."""

    kind: str
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    minimum_calls: int


class HalfOpenFigures(TypedDict):
    """Trial-call accounting while half-open (zeros otherwise)."""

    permitted: int
    admitted: int
    completed: int
    failures: int


class BreakerSnapshot(TypedDict):
    """A JSON-able picture of one breaker, for dashboards and the control plane."""

    name: str
    state: str
    window: WindowFigures
    half_open: HalfOpenFigures
    open_remaining: float | None
    """Seconds until an open breaker admits trial calls; ``None`` unless open."""
    totals: dict[str, int]
    """Calls since the breaker was created, by outcome, plus ``rejected``."""
    transitions: list[TransitionRecord]
    """The most recent state changes, oldest first."""
