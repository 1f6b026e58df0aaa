"""A small "orders" service, written the way a safeship user would write theirs.

It keeps orders in its own table, beside safeship's, and exposes liveness and readiness
probes and Prometheus metrics through safeship.  Later capabilities extend it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from safeship.data import NPlusOneDetector, NPlusOneMiddleware
from safeship.demo.inventory import OUTAGE_FLAG, FlakyInventory, inventory_policy
from safeship.flags.live import FlagClient, flags_check
from safeship.flags.store import FlagExistsError, FlagStore
from safeship.idempotency import (
    IdempotencyMiddleware,
    SqlStore,
    idempotent,
    key_of,
    principal_from_header,
)
from safeship.jobs import JobContext, Jobs, Retry, accepted_in, status_response
from safeship.observe.health import HealthRegistry, sql_check
from safeship.outbox import stage
from safeship.web import protect

#: The demo's feature switches, created on first start (name, description, rollout %).
DEMO_FLAGS = (
    ("orders.free-shipping", "Free shipping for a share of customers", 25),
    ("orders.gift-wrap", "Offer gift wrapping on new orders", None),
    (OUTAGE_FLAG, "Demo switch: make the inventory dependency fail", None),
    ("demo.break-candidate", "Demo switch: inject a fault into the batched listing", None),
    ("demo.break-jobs", "Demo switch: make order confirmation jobs fail", None),
)

#: While this flag is on, sending an order confirmation fails: the job retries, then goes
#: to dead letters (the dashboard's Jobs page shows both).
BREAK_JOBS_FLAG = "demo.break-jobs"

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
    free_shipping: bool = False
    gift_wrap_offered: bool = False
    stock: str = "reserved"
    #: The confirmation job enqueued with the order (its status: ``GET /jobs/{id}``).
    confirmation_job: str | None = None


class ConfirmationFailedError(RuntimeError):
    """The demo's injected fault: the mail server "refused" the confirmation."""


def demo_jobs(flags: FlagClient) -> Jobs:
    """The orders service's background jobs: sending an order's confirmation."""
    jobs = Jobs()

    @jobs.task(
        queue="emails",
        retry=Retry(attempts=3, base=0.5, cap=2.0),
        timeout=10.0,
        unique=lambda order_id: f"confirm:{order_id}",
        result_ttl=3600.0,
    )
    def send_confirmation(ctx: JobContext, order_id: int) -> dict[str, Any]:
        if flags.is_enabled(BREAK_JOBS_FLAG, {}):
            raise ConfirmationFailedError(f"mail server refused the confirmation of {order_id}")
        return {"order_id": order_id, "sent_at": datetime.now(UTC).isoformat()}

    return jobs


def seed_flags(store: FlagStore) -> None:
    """Create the demo's flags once; later runs keep whatever the dashboard changed."""
    for name, description, percent in DEMO_FLAGS:
        try:
            store.create(
                name,
                actor="demo",
                description=description,
                owner="orders team",
                lifetime_days=90,
                reason="demo seed",
            )
        except FlagExistsError:
            continue
        if percent is not None:
            store.rollout(name, percent, actor="demo", stickiness="userId", reason="demo seed")


def create_orders_app(
    engine: sa.Engine,
    flags: FlagClient,
    inventory: FlakyInventory | None = None,
    listing: Callable[..., list[dict[str, Any]]] | None = None,
    jobs: Jobs | None = None,
) -> ASGIApp:
    """The orders service on ``engine``; its switches are safeship flags read from ``flags``.

    With ``jobs`` (see :func:`demo_jobs`), a new order enqueues its confirmation in the
    order's own transaction, ``POST /orders/{id}/confirmation`` answers ``202 Accepted``
    with ``Location: /jobs/{job id}``, and ``GET /jobs/{id}`` is the job's status."""
    orders_metadata.create_all(engine)
    health = HealthRegistry()
    health.add("database", sql_check(engine), kinds=("readiness",))
    health.add("flags", flags_check(flags), kinds=("readiness",), critical=False)
    app = FastAPI(title="orders (safeship demo)")
    inventory = inventory or FlakyInventory(flags)
    guarded = inventory_policy()

    @app.post("/orders", response_model=Order, status_code=201)
    # A retried POST with the same Idempotency-Key gets the first order back, not a second.
    @idempotent(required=False, ttl=24 * 3600)
    def create_order(body: NewOrder, request: Request) -> Any:
        now = datetime.now(UTC)
        who = {"userId": body.customer}
        stock = guarded.call(inventory.reserve, body.item, body.quantity)
        with engine.begin() as conn:
            order_id = conn.execute(
                sa.insert(orders).values(**body.model_dump(), created_at=now).returning(orders.c.id)
            ).scalar_one()
            # Same transaction: the event exists exactly when the order does.
            stage(
                conn,
                aggregate_type="order",
                aggregate_id=str(order_id),
                type="order.created",
                payload={**body.model_dump(), "id": order_id},
            )
            # Same transaction again: the confirmation job exists exactly when the order does.
            job_id = None
            if jobs is not None:
                job_id = jobs.enqueue(conn, "send_confirmation", {"order_id": order_id})
            order = Order(
                id=order_id,
                created_at=now,
                **body.model_dump(),
                free_shipping=flags.is_enabled("orders.free-shipping", who),
                gift_wrap_offered=flags.is_enabled("orders.gift-wrap", who),
                stock=stock,
                confirmation_job=str(job_id) if job_id else None,
            )
            response = JSONResponse(order.model_dump(mode="json"), status_code=201)
            # Same transaction once more: the key's answer commits with the order, so a
            # retry can never find the order without its answer (or the answer without it).
            handle = key_of(request)
            if handle is not None:
                handle.record(conn, response)
        return response

    @app.post("/orders/{order_id}/confirmation", status_code=202)
    # A retried request with the same Idempotency-Key replays the first 202: the same job id.
    @idempotent(required=False, ttl=24 * 3600)
    def send_confirmation_again(order_id: int, request: Request) -> Any:
        """(Re)send an order's confirmation: ``202`` + ``Location`` of the job's status."""
        if jobs is None:
            raise HTTPException(404, "background jobs are not configured")
        with engine.begin() as conn:
            found = conn.execute(sa.select(orders.c.id).where(orders.c.id == order_id)).first()
            if found is None:
                raise HTTPException(404, f"no order {order_id}")
            # A confirmation still pending or running is returned, not sent twice (unique key).
            job_id = jobs.enqueue(conn, "send_confirmation", {"order_id": order_id})
            # The key's 202 is recorded in this transaction: the job and the answer commit
            # together, so no retry can see a key without its job or a job without its key.
            return accepted_in(conn, request, job_id, prefix="/jobs", retry_after=1)

    @app.get("/jobs/{job_id}")
    def job_status(job_id: str) -> Any:
        """The status resource of a job: state, attempts, result or error history."""
        return status_response(engine, job_id)

    @app.get("/orders/{order_id}", response_model=Order)
    def get_order(order_id: int) -> Order:
        with engine.connect() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
        if row is None:
            raise HTTPException(404, f"no order {order_id}")
        return Order(**row)

    @app.get("/customers/{customer}/orders")
    def customer_orders(customer: str) -> list[dict[str, Any]]:
        """Served through the guarded rollout: N+1 legacy listing or the batched candidate."""
        if listing is None:
            raise HTTPException(404, "the listing rollout is not configured")
        try:
            return listing(customer, context={"userId": customer})
        except RuntimeError as exc:  # the demo's injected candidate fault
            raise HTTPException(500, f"listing failed: {exc}") from None

    @app.get("/orders", response_model=list[Order])
    def list_orders(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[Order]:
        query = sa.select(orders).order_by(orders.c.id.desc()).limit(limit)
        with engine.connect() as conn:
            return [Order(**row) for row in conn.execute(query).mappings()]

    # Each request is a unit of work of the N+1 detector: for a sample of requests the
    # legacy listing's loop is logged (data.n_plus_one) with its call site and the fix.
    app.add_middleware(NPlusOneMiddleware, detector=NPlusOneDetector(sample_rate=0.05))
    # Idempotency-Key on POST /orders, kept in safeship's table (migration 0009). Keys are
    # per caller: the demo has no accounts, so a caller names itself with X-Api-Key.
    app.add_middleware(
        IdempotencyMiddleware, store=SqlStore(engine), principal=principal_from_header("x-api-key")
    )
    # One call adds request ids, access logs, HTTP metrics, probes and request limits.
    return protect(
        app,
        health=health,
        health_paths={"liveness": "/health", "readiness": "/health/ready"},
        max_body_bytes=64_000,
        request_timeout=10.0,
        configure_logs=False,
    )
