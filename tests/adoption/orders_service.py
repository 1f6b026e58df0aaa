"""A small orders service adopting safeship as the README shows (copied into a fresh
directory and run by ``uvicorn orders_service:app`` in the adoption scenario)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI

from safeship import Breaker, FlagClient, FlagStore, Retry, pipeline, protect
from safeship.db import create_engine
from safeship.outbox import stage
from safeship.resilience import default_registry

engine = create_engine(os.environ["SAFESHIP_DATABASE_URL"])
orders = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("variant", sa.String(8), nullable=False),
)
flags = FlagClient(store=FlagStore(engine), poll_interval=0.5)
payments = pipeline(
    retry=Retry(attempts=3), breaker=Breaker("payments", registry=default_registry), timeout=2.0
)


async def charge(user_id: str) -> str:
    return f"charged {user_id}"


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    orders.metadata.create_all(engine)
    flags.start()
    yield
    flags.close()
    engine.dispose()


api = FastAPI(lifespan=lifespan)


@api.post("/orders")
async def place_order(user_id: str) -> dict[str, object]:
    variant = "v2" if flags.is_enabled("checkout-v2", {"userId": user_id}) else "v1"
    receipt = await payments.call_async(charge, user_id)
    with engine.begin() as conn:  # the order and its event commit together
        order_id = conn.execute(
            orders.insert().values(user_id=user_id, variant=variant).returning(orders.c.id)
        ).scalar_one()
        stage(
            conn,
            aggregate_type="order",
            aggregate_id=str(order_id),
            type="order.created",
            payload={"id": order_id, "variant": variant},
        )
    return {"id": order_id, "variant": variant, "receipt": receipt}


@api.get("/boom")
async def boom() -> dict[str, object]:
    raise RuntimeError("the payment provider answered nonsense")


app = protect(api)
