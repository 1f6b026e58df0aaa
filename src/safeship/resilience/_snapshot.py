"""Build a breaker's JSON-able snapshot (kept apart from the hot code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safeship.resilience.breaker_types import BreakerSnapshot, State, WindowFigures
from safeship.resilience.windows import ConsecutiveFailures, CountWindow, TimeWindow

if TYPE_CHECKING:
    from safeship.resilience.breaker import Breaker


def take_snapshot(breaker: Breaker) -> BreakerSnapshot:
    """Read ``breaker`` under its lock once and shape the result for JSON."""
    state, figures, trial, open_remaining, history = breaker._snapshot_parts()
    calls, failures, slows = figures
    is_open = state is State.OPEN
    return {
        "name": breaker.name,
        "state": state.value,
        "window": _window_figures(breaker, calls, failures, slows),
        "half_open": {
            "permitted": trial[0] if state is State.HALF_OPEN else 0,
            "admitted": trial[1] if state is State.HALF_OPEN else 0,
            "completed": trial[2] if state is State.HALF_OPEN else 0,
            "failures": trial[3] if state is State.HALF_OPEN else 0,
        },
        "open_remaining": max(0.0, round(open_remaining, 3)) if is_open else None,
        "totals": breaker.counts(),
        "transitions": [event.to_record() for event in history],
    }


def _window_figures(breaker: Breaker, calls: int, failures: int, slows: int) -> WindowFigures:
    spec = breaker.window
    if isinstance(spec, ConsecutiveFailures):
        minimum = spec.threshold
    elif isinstance(spec, CountWindow):
        minimum = spec.effective_minimum
    elif isinstance(spec, TimeWindow):
        minimum = spec.minimum_calls
    else:
        minimum = 0
    return {
        "kind": spec.kind,
        "calls": calls,
        "failures": failures,
        "slow_calls": slows,
        "failure_rate": round(failures / calls, 4) if calls else 0.0,
        "slow_call_rate": round(slows / calls, 4) if calls else 0.0,
        "minimum_calls": minimum,
    }
