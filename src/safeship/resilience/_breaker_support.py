"""Helpers of the circuit breaker: setting checks, the transition log line, counting."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from safeship.resilience._breaker_types import State, Transition
from safeship.resilience._log import ALERT, logger
from safeship.resilience._windows import WindowSpec, WindowState

ExceptionTypes = tuple[type[BaseException], ...]
_names = itertools.count(1)


def threshold_reason(spec: WindowSpec, window: WindowState, now: float) -> str:
    """Which threshold opened the breaker, for the transition's reason."""
    if spec.kind == "consecutive":
        return "consecutive failures"
    calls, failures, _ = window.figures(now)
    return "failure threshold" if spec.judge(calls, failures, 0) else "slow-call threshold"


def gate_allows(gate: Callable[[], bool]) -> bool:
    """Ask the half-open gate; a gate that raises lets the breaker decide alone."""
    try:
        return bool(gate())
    except Exception:  # noqa: BLE001 - a faulty gate falls back to local decisions
        logger.exception("resilience.breaker.gate_failed")
        return True


def log_transition(event: Transition) -> None:
    """Log a state change: ALERT (45) when opening, INFO otherwise."""
    extra = {
        "breaker": event.breaker,
        "from_state": event.from_state.value,
        "to_state": event.to_state.value,
        "reason": event.reason,
    }
    if event.to_state is State.OPEN or event.to_state is State.FORCED_OPEN:
        logger.log(ALERT, "resilience.breaker.opened", extra=extra)
    else:
        logger.info("resilience.breaker.transition", extra=extra)


def check_name(name: str | None) -> str:
    """A valid breaker name, or a generated one."""
    if name is None:
        return f"breaker-{next(_names)}"
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError(
            f"Breaker name must be a non-empty string of at most 200 characters, got {name!r}"
        )
    return name


def check_seconds(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ValueError(f"Breaker.{field} must be a positive number of seconds, got {value!r}")


def check_positive_int(field: str, value: object, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"Breaker.{field} must be an int from 1 to {high}, got {value!r}")


def check_durations(duration: float, multiplier: float, cap: float | None) -> None:
    check_seconds("open_duration", duration)
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float) or multiplier < 1:
        raise ValueError(
            f"Breaker.open_duration_multiplier must be a number >= 1 (1 keeps the duration "
            f"fixed), got {multiplier!r}"
        )
    if cap is not None:
        check_seconds("max_open_duration", cap)
        if cap < duration:
            raise ValueError(
                f"Breaker.max_open_duration ({cap}) must be >= open_duration ({duration})"
            )


def check_types(field: str, types: object) -> ExceptionTypes:
    if isinstance(types, type):
        types = (types,)
    ok = isinstance(types, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in types
    )
    if not ok:
        raise TypeError(f"Breaker.{field} must be a tuple of exception classes, got {types!r}")
    return types  # type: ignore[return-value]
