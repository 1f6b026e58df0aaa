"""What the control plane holds for its lifetime: settings, engine, keys, health checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from fastapi import Request

from safeship.flags.store import FlagStore
from safeship.observe.health import HealthRegistry
from safeship.resilience.board import BreakerBoard
from safeship.rollouts._guard import RolloutGuard
from safeship.server.keys import KeyRing
from safeship.server.session import SessionStore
from safeship.settings import Settings
from safeship.web._limiter import FailureStore


@dataclass(frozen=True, slots=True)
class NavItem:
    """A dashboard page shown in the navigation (capabilities add their own)."""

    path: str
    label: str


@dataclass(slots=True)
class ControlPlane:
    settings: Settings
    engine: sa.Engine
    keys: KeyRing
    sessions: SessionStore
    health: HealthRegistry
    flags: FlagStore
    auth_failures: FailureStore
    breakers: BreakerBoard
    rollouts: RolloutGuard
    nav: list[NavItem] = field(default_factory=list)


def plane(request: Request) -> ControlPlane:
    """The ``ControlPlane`` of the app serving ``request``."""
    state: ControlPlane = request.app.state.plane
    return state
