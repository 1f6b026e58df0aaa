"""The demo's showcase change: listing a customer's orders the N+1 way or batched.

``polling_rollout`` wraps both in a ``Rollout`` named ``ROLLOUT_NAME``; the candidate fails
while ``is_broken()`` answers True (by default: while the ``BREAK_FLAG`` flag is on), so a
newcomer can watch the guard roll it back by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from safeship.demo.orders import orders
from safeship.rollouts import Mode, Rollout, ShadowOptions
from safeship.rollouts._rollout import FlagReader

__all__ = ["BREAK_FLAG", "ROLLOUT_NAME", "CandidateFaultError", "polling_rollout"]

ROLLOUT_NAME = "orders.batched-listing"
BREAK_FLAG = "demo.break-candidate"
_COLUMNS = ("id", "customer", "item", "quantity", "created_at")


class CandidateFaultError(RuntimeError):
    """The fault injected into the candidate for the demo."""


def list_orders_n_plus_one(
    engine: sa.Engine, customer: str, limit: int = 50
) -> list[dict[str, Any]]:
    """Legacy: one query for the ids, then one query per order."""
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(orders.c.id).where(orders.c.customer == customer)
            .order_by(orders.c.id).limit(limit)
        ).scalars().all()  # fmt: skip
        rows = []
        for order_id in ids:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().one()
            rows.append({c: row[c] for c in _COLUMNS})
    return rows


def list_orders_batched(engine: sa.Engine, customer: str, limit: int = 50) -> list[dict[str, Any]]:
    """Candidate: one query."""
    query = (
        sa.select(orders).where(orders.c.customer == customer).order_by(orders.c.id).limit(limit)
    )
    with engine.connect() as conn:
        return [{c: r[c] for c in _COLUMNS} for r in conn.execute(query).mappings()]


def polling_rollout(
    engine: sa.Engine,
    flags: FlagReader | None,
    *,
    mode: Mode | str = Mode.SHADOW,
    is_broken: Callable[[], bool] | None = None,
    shadow: ShadowOptions | None = None,
) -> Rollout:
    """The Rollout the demo serves ``GET /orders?customer=`` through."""
    if is_broken is None:
        reader = flags

        def is_broken() -> bool:
            return reader is not None and reader.is_enabled(BREAK_FLAG)

    broken = is_broken

    def legacy(customer: str, limit: int = 50) -> list[dict[str, Any]]:
        return list_orders_n_plus_one(engine, customer, limit)

    def candidate(customer: str, limit: int = 50) -> list[dict[str, Any]]:
        if broken():
            raise CandidateFaultError("injected fault: the batched listing is broken")
        return list_orders_batched(engine, customer, limit)

    return Rollout(ROLLOUT_NAME, legacy=legacy, candidate=candidate, flags=flags, mode=mode,
                   shadow=shadow)  # fmt: skip
