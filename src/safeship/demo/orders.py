"""A small "orders" service, written the way a safeship user would write theirs.

It keeps orders in its own table, beside safeship's, and exposes liveness and readiness
probes and Prometheus metrics through safeship.  Later capabilities extend it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from safeship.observe.health import HEALTH_MEDIA_TYPE, HealthRegistry, sql_check
from safeship.observe.metrics import render_latest

orders_metadata = sa.MetaData()
orders = sa.Table(
    "demo_orders",
    orders_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer", sa.String(100), nullable=False),
    sa.Column("item", sa.String(100), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class NewOrder(BaseModel):
    customer: str = Field(min_length=1, max_length=100)
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=1000)


class Order(NewOrder):
    id: int
    created_at: datetime


def create_orders_app(engine: sa.Engine) -> FastAPI:
    """The orders service on ``engine`` (its table is created if missing)."""
    orders_metadata.create_all(engine)
    health = HealthRegistry()
    health.add("database", sql_check(engine), kinds=("readiness",))
    app = FastAPI(title="orders (safeship demo)")

    @app.post("/orders", response_model=Order, status_code=201)
    def create_order(body: NewOrder) -> Order:
        now = datetime.now(UTC)
        with engine.begin() as conn:
            order_id = conn.execute(
                sa.insert(orders).values(**body.model_dump(), created_at=now).returning(orders.c.id)
            ).scalar_one()
        return Order(id=order_id, created_at=now, **body.model_dump())

    @app.get("/orders/{order_id}", response_model=Order)
    def get_order(order_id: int) -> Order:
        with engine.connect() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
        if row is None:
            raise HTTPException(404, f"no order {order_id}")
        return Order(**row)

    @app.get("/orders", response_model=list[Order])
    def list_orders(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[Order]:
        query = sa.select(orders).order_by(orders.c.id.desc()).limit(limit)
        with engine.connect() as conn:
            return [Order(**row) for row in conn.execute(query).mappings()]

    @app.get("/health")
    async def liveness() -> JSONResponse:
        report = await health.run("liveness")
        return JSONResponse(report.to_dict(), report.http_status, media_type=HEALTH_MEDIA_TYPE)

    @app.get("/health/ready")
    async def readiness(_request: Request) -> JSONResponse:
        report = await health.run("readiness")
        return JSONResponse(report.to_dict(), report.http_status, media_type=HEALTH_MEDIA_TYPE)

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    return app
