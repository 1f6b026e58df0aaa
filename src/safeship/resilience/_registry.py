"""Registries of circuit breakers by name, and the process-wide default one.

A registry holds its breakers weakly: one that nothing uses any more disappears from it.
Whoever wants to hear of new members (the Prometheus collector does) adds a listener,
called once per registration, outside the registry's lock. The module knows breakers
only by the :class:`Registrable` shape, so it imports nothing of the breaker.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from safeship.resilience._breaker_types import BreakerSnapshot, State

__all__ = ["DEFAULT_REGISTRY", "BreakerRegistry", "Registrable"]


class Registrable(Protocol):
    """What a registry and its readers need of a breaker."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> State: ...

    def snapshot(self) -> BreakerSnapshot: ...

    def counts(self) -> dict[str, int]: ...

    def transition_counts(self) -> dict[tuple[State, State], int]: ...


B = TypeVar("B", bound=Registrable)
RegistryListener = Callable[["BreakerRegistry", Any], None]


class BreakerRegistry:
    """Breakers by unique name, held weakly; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._members: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._listeners: tuple[RegistryListener, ...] = ()

    def add_listener(self, listener: RegistryListener) -> None:
        """Call ``listener(registry, breaker)`` after each registration."""
        self._listeners = (*self._listeners, listener)

    def register(self, breaker: B) -> B:
        """Add ``breaker`` under its name; a live breaker with the same name is an error."""
        with self._lock:
            current = self._members.get(breaker.name)
            if current is not None and current is not breaker:
                raise ValueError(
                    f"a circuit breaker named {breaker.name!r} already exists in this "
                    f"process; reuse it with get_breaker({breaker.name!r}), choose another "
                    "name, or build it with registry=None"
                )
            self._members[breaker.name] = breaker
        for listener in self._listeners:
            listener(self, breaker)
        return breaker

    def unregister(self, name: str) -> None:
        """Remove the breaker called ``name`` (no error when there is none)."""
        with self._lock:
            self._members.pop(name, None)

    def find(self, name: str) -> Any:
        """The breaker called ``name``, or None."""
        with self._lock:
            return self._members.get(name)

    def get(self, name: str) -> Any:
        """The breaker called ``name``; ``KeyError`` lists the known names."""
        with self._lock:
            found = self._members.get(name)
            if found is None:
                known = ", ".join(sorted(self._members)) or "none"
                raise KeyError(f"no circuit breaker named {name!r}; registered: {known}")
            return found

    def get_or_create(self, name: str, factory: Callable[[], B]) -> B:
        """The breaker ``name``, built with ``factory()`` and registered here if absent."""
        with self._create_lock:
            current = self.find(name)
            if current is not None:
                return current  # type: ignore[no-any-return]
            created = factory()
            if created.name != name:
                raise ValueError(
                    f"factory built a breaker named {created.name!r}, expected {name!r}"
                )
            if self.find(name) is not created:
                self.register(created)
        return created

    def all(self) -> list[Any]:
        """Every breaker, sorted by name."""
        with self._lock:
            items = sorted(self._members.items())
        return [breaker for _, breaker in items]


DEFAULT_REGISTRY = BreakerRegistry()
"""The process-wide registry that dashboards, the control plane and metrics read."""
