"""The process-wide registry of circuit breakers, by name.

A :class:`~safeship.resilience.Breaker` joins the registry given as ``registry=`` when
it is built — by default this process-wide one, :data:`default_registry`, which
dashboards, the control plane and the Prometheus collector read — and none with
``registry=None`` (or the older ``register=False``). The functions below read and change
the default registry; a :class:`BreakerRegistry` of your own has the same methods.
Registries hold breakers weakly: one that nothing uses any more disappears from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from safeship.resilience._breaker import Breaker
from safeship.resilience._breaker_types import BreakerSnapshot
from safeship.resilience._registry import DEFAULT_REGISTRY, BreakerRegistry

__all__ = [
    "BreakerRegistry",
    "all_breakers",
    "default_registry",
    "get_breaker",
    "get_or_create",
    "register",
    "snapshots",
    "unregister",
]

default_registry: BreakerRegistry = DEFAULT_REGISTRY
"""The registry every breaker joins unless built with ``registry=`` or ``register=False``."""


def register(breaker: Breaker) -> None:
    """Add ``breaker`` under its name; a live breaker with the same name is an error."""
    DEFAULT_REGISTRY.register(breaker)


def unregister(name: str) -> None:
    """Remove the breaker called ``name`` (no error when there is none)."""
    DEFAULT_REGISTRY.unregister(name)


def get_or_create(name: str, factory: Callable[[], Breaker]) -> Breaker:
    """Return the registered breaker ``name``, building it with ``factory()`` if absent."""
    return DEFAULT_REGISTRY.get_or_create(name, factory)


def get_breaker(name: str) -> Breaker:
    """The registered breaker called ``name``; ``KeyError`` lists the known names."""
    return cast(Breaker, DEFAULT_REGISTRY.get(name))


def all_breakers() -> list[Breaker]:
    """Every registered breaker, sorted by name."""
    return cast(list[Breaker], DEFAULT_REGISTRY.all())


def snapshots() -> list[BreakerSnapshot]:
    """A JSON-able snapshot of every registered breaker, sorted by name."""
    return [breaker.snapshot() for breaker in all_breakers()]
