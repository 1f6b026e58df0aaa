"""The process-wide registry of circuit breakers, by name.

Every :class:`~safeship.resilience.Breaker` registers itself when created (unless built
with ``register=False``), so dashboards, the control plane and the Prometheus collector
can list them. The registry holds breakers weakly: one that nothing uses any more
disappears from it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safeship.resilience.breaker import Breaker
    from safeship.resilience.breaker_types import BreakerSnapshot

__all__ = [
    "all_breakers",
    "get_breaker",
    "get_or_create",
    "register",
    "snapshots",
    "unregister",
]

_lock = threading.Lock()
_create_lock = threading.Lock()
_breakers: weakref.WeakValueDictionary[str, Breaker] = weakref.WeakValueDictionary()


def register(breaker: Breaker) -> None:
    """Add ``breaker`` under its name; a live breaker with the same name is an error."""
    with _lock:
        current = _breakers.get(breaker.name)
        if current is not None and current is not breaker:
            raise ValueError(
                f"a circuit breaker named {breaker.name!r} already exists in this process; "
                f"reuse it with get_breaker({breaker.name!r}), choose another name, "
                "or build it with register=False"
            )
        _breakers[breaker.name] = breaker


def unregister(name: str) -> None:
    """Remove the breaker called ``name`` (no error when there is none)."""
    with _lock:
        _breakers.pop(name, None)


def get_or_create(name: str, factory: Callable[[], Breaker]) -> Breaker:
    """Return the registered breaker ``name``, building it with ``factory()`` if absent."""
    with _create_lock:
        with _lock:
            current = _breakers.get(name)
        if current is not None:
            return current
        created = factory()
    if created.name != name:
        raise ValueError(f"factory built a breaker named {created.name!r}, expected {name!r}")
    return created


def get_breaker(name: str) -> Breaker:
    """The registered breaker called ``name``; ``KeyError`` lists the known names."""
    with _lock:
        found = _breakers.get(name)
        if found is None:
            known = ", ".join(sorted(_breakers)) or "none"
            raise KeyError(f"no circuit breaker named {name!r}; registered: {known}")
        return found


def all_breakers() -> list[Breaker]:
    """Every registered breaker, sorted by name."""
    with _lock:
        items = sorted(_breakers.items())
    return [breaker for _, breaker in items]


def snapshots() -> list[BreakerSnapshot]:
    """A JSON-able snapshot of every registered breaker, sorted by name."""
    return [breaker.snapshot() for breaker in all_breakers()]
