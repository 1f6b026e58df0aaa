"""On SQL stores the key's response, the business write and a stage()d outbox event are one
transaction: they commit together or not at all, and the middleware only replays."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from safeship.idempotency import (
    IdempotencyMiddleware,
    SqlStore,
    State,
    idempotent,
    key_of,
    principal_from_header,
)
from safeship.idempotency._model import scoped_key
from safeship.outbox import stage
from safeship.outbox._schema import outbox
from tests.idempotency.conftest import sql_engine

orders = sa.Table(
    "test_idem_orders",
    sa.MetaData(),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("item", sa.String(50), nullable=False),
)


def _app(engine: sa.Engine) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    @idempotent()
    def create(request: Request, payload: dict[str, Any] = Body()) -> JSONResponse:  # noqa: B008
        handle = key_of(request)
        assert handle is not None
        order_id = str(uuid.uuid4())
        response = JSONResponse({"id": order_id}, status_code=201)
        with engine.begin() as conn:
            conn.execute(orders.insert().values(id=order_id, item=payload["item"]))
            stage(conn, aggregate_type="order", aggregate_id=order_id, type="created", payload={})
            handle.record(conn, response)
            if payload.get("crash_before_commit"):
                raise RuntimeError("the transaction rolls back after record()")
        return response

    app.add_middleware(
        IdempotencyMiddleware, store=SqlStore(engine), principal=principal_from_header("x-key")
    )
    return app


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Any:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else sqlite_url
    engine = sql_engine(url)
    orders.create(engine)
    outbox.create(engine)
    yield engine
    engine.dispose()


def _counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        made = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
        staged = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
    return made, staged


async def test_the_response_the_order_and_its_event_commit_together(engine: sa.Engine) -> None:
    transport = httpx.ASGITransport(app=_app(engine))
    key = str(uuid.uuid4())
    headers = {"x-key": "alice", "idempotency-key": key}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.post("/orders", json={"item": "tea"}, headers=headers)
        again = await client.post("/orders", json={"item": "tea"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert _counts(engine) == (1, 1)
    principal = principal_from_header("x-key")({"headers": [(b"x-key", b"alice")]})
    assert principal is not None
    record = await SqlStore(engine).get(scoped_key("http:" + principal, key))
    assert record is not None and record.state is State.DONE


async def test_a_rolled_back_transaction_keeps_nothing_and_the_key_says_unknown(
    engine: sa.Engine,
) -> None:
    transport = httpx.ASGITransport(app=_app(engine), raise_app_exceptions=False)
    headers = {"x-key": "alice", "idempotency-key": str(uuid.uuid4())}
    body = {"item": "tea", "crash_before_commit": True}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.post("/orders", json=body, headers=headers)
        retry = await client.post("/orders", json=body, headers=headers)
    assert first.status_code == 500
    assert retry.status_code == 409
    assert retry.json()["type"] == "urn:safeship:idempotency:outcome-unknown"
    assert _counts(engine) == (0, 0)
