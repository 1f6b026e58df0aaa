"""The demo's ``POST /orders`` honours ``Idempotency-Key``: a retry returns the first order,
and the key's answer is recorded in the order's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from safeship.db import create_engine
from safeship.db._migrate import upgrade
from safeship.demo.orders import create_orders_app, orders, seed_flags
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
from safeship.idempotency import IdempotencyStoreError, KeyHandle, SqlStore
from safeship.idempotency._schema import idempotency
from safeship.outbox._schema import outbox
from safeship.resilience import default_registry

ORDER = {"customer": "ada", "item": "tea", "quantity": 2}


@pytest.fixture(autouse=True)
def _fresh_inventory_breaker() -> Iterator[None]:
    # The orders app registers its "inventory" breaker process-wide: each test's app is new.
    default_registry.unregister("inventory")
    yield
    default_registry.unregister("inventory")


async def test_a_retried_order_with_the_same_key_is_created_once(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    upgrade(engine)
    store = FlagStore(engine)
    seed_flags(store)
    flags = FlagClient(store=store, push=False)
    app = create_orders_app(engine, flags)
    key = {"idempotency-key": f'"{uuid.uuid4()}"', "x-api-key": "shop-1"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        first = await client.post("/orders", json=ORDER, headers=key)
        retry = await client.post("/orders", json=ORDER, headers=key)
        other_payload = await client.post("/orders", json={**ORDER, "quantity": 3}, headers=key)
        other_caller = await client.post("/orders", json=ORDER, headers={**key, "x-api-key": "b"})
        no_key = await client.post("/orders", json=ORDER)
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert other_payload.status_code == 422
    assert other_caller.status_code == 201 and other_caller.json()["id"] != first.json()["id"]
    assert no_key.status_code == 201  # the key is optional: clients without one still order
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
    assert count == 3  # first, the other caller's, the keyless one: never the retry
    flags.close()
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def demo_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = (
        f"sqlite:///{tmp_path / 'demo.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = create_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def test_the_orders_answer_is_recorded_in_the_orders_transaction(
    demo_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Storing the answer after the handler would fail here (as if the process died between
    # the order's commit and that write): the retry would get 409, not the order.
    after_handler: list[str] = []

    async def lost(self: SqlStore, key: str, *args: Any, **kwargs: Any) -> bool:
        after_handler.append(key)
        raise IdempotencyStoreError("the process died before the answer was stored")

    monkeypatch.setattr(SqlStore, "complete", lost)
    store = FlagStore(demo_engine)
    seed_flags(store)
    flags = FlagClient(store=store, push=False)
    app = create_orders_app(demo_engine, flags)
    key = {"idempotency-key": f'"{uuid.uuid4()}"', "x-api-key": "shop-1"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        first = await client.post("/orders", json=ORDER, headers=key)
        retry = await client.post("/orders", json=ORDER, headers=key)
    flags.close()
    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    assert after_handler == []  # nothing was left to store after the handler
    with demo_engine.connect() as conn:
        row = conn.execute(sa.select(idempotency.c.state, idempotency.c.status)).one()
    assert tuple(row) == ("done", 201)
    assert _count(demo_engine, orders) == 1 and _count(demo_engine, outbox) == 1


async def test_a_rolled_back_order_keeps_no_answer_for_its_key(
    demo_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transaction fails after the key's answer was written into it: both roll back.
    record = KeyHandle.record

    def record_then_fail(self: KeyHandle, conn: Any, response: Any) -> None:
        record(self, conn, response)
        raise RuntimeError("the order's transaction failed after the answer was written")

    monkeypatch.setattr(KeyHandle, "record", record_then_fail)
    store = FlagStore(demo_engine)
    seed_flags(store)
    flags = FlagClient(store=store, push=False)
    app = create_orders_app(demo_engine, flags)
    key = {"idempotency-key": f'"{uuid.uuid4()}"', "x-api-key": "shop-1"}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        failed = await client.post("/orders", json=ORDER, headers=key)
        retry = await client.post("/orders", json=ORDER, headers=key)
    flags.close()
    assert failed.status_code == 500
    # No order, no outbox event, and the key never claims a stored answer: the handler
    # raised, so the retry is told the outcome is unknown, never replayed a phantom order.
    assert _count(demo_engine, orders) == 0 and _count(demo_engine, outbox) == 0
    assert retry.status_code == 409 and retry.json()["type"].endswith("outcome-unknown")
    with demo_engine.connect() as conn:
        state = conn.execute(sa.select(idempotency.c.state, idempotency.c.status)).one()
    assert tuple(state) == ("unknown", None)
