"""Feature flags: Unleash-compatible evaluation on compiled, immutable snapshots.

    from safeship.flags import FlagSet

    flags = FlagSet.from_unleash(state)            # a state in Unleash's format
    if flags.is_enabled("checkout-v2", {"userId": user.id}):
        ...
    flags.variant("button-color", Context(user_id=user.id)).name

The OpenFeature provider lives in ``safeship.flags.openfeature`` (extra ``openfeature``)
and the test helpers in ``safeship.flags.testing``.
"""

from safeship.flags._context import Context, ContextLike
from safeship.flags._counter import EvaluationCounter, FlagCounts
from safeship.flags._flagset import FlagSet
from safeship.flags._model import (
    DISABLED_VARIANT,
    FlagProblem,
    FlagSource,
    FlagStateError,
    Variant,
)

__all__ = [
    "DISABLED_VARIANT",
    "Context",
    "ContextLike",
    "EvaluationCounter",
    "FlagCounts",
    "FlagProblem",
    "FlagSet",
    "FlagSource",
    "FlagStateError",
    "Variant",
]
