"""The demo's ``POST /orders`` honours ``Idempotency-Key``: a retry returns the first order."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from safeship.db import create_engine
from safeship.db._migrate import upgrade
from safeship.demo.orders import create_orders_app, orders, seed_flags
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore

ORDER = {"customer": "ada", "item": "tea", "quantity": 2}


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
