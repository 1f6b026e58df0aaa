"""Shape a breaker's figures as its JSON-able snapshot (kept apart from the hot code)."""

from __future__ import annotations

from safeship.resilience._breaker_core import CoreFigures
from safeship.resilience._breaker_types import BreakerSnapshot, State, WindowFigures
from safeship.resilience._windows import ConsecutiveFailures, CountWindow, TimeWindow, WindowSpec


def take_snapshot(
    name: str, spec: WindowSpec, figures: CoreFigures, totals: dict[str, int]
) -> BreakerSnapshot:
    """The snapshot of breaker ``name`` from figures read at once under its lock."""
    state, (calls, failures, slows), trial, open_remaining, history = figures
    half_open = state is State.HALF_OPEN
    return {
        "name": name,
        "state": state.value,
        "window": _window_figures(spec, calls, failures, slows),
        "half_open": {
            "permitted": trial[0] if half_open else 0,
            "admitted": trial[1] if half_open else 0,
            "completed": trial[2] if half_open else 0,
            "failures": trial[3] if half_open else 0,
        },
        "open_remaining": max(0.0, round(open_remaining, 3)) if state is State.OPEN else None,
        "totals": totals,
        "transitions": [event.to_record() for event in history],
    }


def _window_figures(spec: WindowSpec, calls: int, failures: int, slows: int) -> WindowFigures:
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
