"""The flags every SDK test reads, and safeship's own answers to compare with."""

from __future__ import annotations

from typing import Any

from safeship.flags import FlagSet
from safeship.flags.store import FlagStore

ROLLOUT = "checkout-v2"
ON, OFF, COLOURS = "search-on", "search-off", "button-colour"
USERS = [f"user-{i}" for i in range(400)]


def _definition(name: str, enabled: bool, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "enabled": enabled,
        "strategies": [{"name": "default", "parameters": {}}],
        **extra,
    }


def seed(store: FlagStore) -> None:
    """An on flag, an off flag, a 25% rollout and a 50/50 variant flag with payloads."""
    store.create(ON, actor="test", definition=_definition(ON, True))
    store.create(OFF, actor="test", definition=_definition(OFF, False))
    store.create(ROLLOUT, actor="test", definition=_definition(ROLLOUT, True))
    store.rollout(ROLLOUT, 25, actor="test")
    variants = [
        {
            "name": colour,
            "weight": 500,
            "weightType": "variable",
            "stickiness": "default",
            "payload": {"type": "string", "value": colour.upper()},
        }
        for colour in ("blue", "green")
    ]
    store.create(COLOURS, actor="test", definition=_definition(COLOURS, True, variants=variants))


def own_answers(store: FlagStore) -> FlagSet:
    """safeship's own evaluation of the stored state."""
    return FlagSet.from_unleash(store.state()[1])
