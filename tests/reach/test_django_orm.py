"""Django's ORM and the outbox in one transaction, on PostgreSQL (psycopg 3) and SQLite:
a view writes an order and stages its event inside ``transaction.atomic()`` through
``outbox_connection()``; a failure after the stage leaves neither; the relay delivers the
committed one. The same process reads a flag from a FlagClient and calls through a breaker
in a view. (A subprocess: Django's settings are per process.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reach.test_frameworks import ROOT


def run_scenario(url: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REACH_DJANGO_DB": url,
           "DJANGO_SETTINGS_MODULE": "tests.reach.apps.django_site.settings"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tests.reach.apps.django_orm_scenario", url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def check(found: dict[str, Any], vendor: str, driver: str) -> None:
    assert found["vendor"] == vendor and found["driver"].startswith(driver)
    assert found["statuses"] == [200, 500]
    order = str(found["order_id"])
    assert found["orders"] == [["book"]]  # the failed order's row rolled back ...
    assert found["events"] == [[order, "order.placed"]]  # ... and so did its event
    assert "inside transaction.atomic()" in found["outside_atomic"]
    assert found["delivered"] == [
        {"id": order, "type": "order.placed",
         "payload": {"item": "book", "request_id": "order-1"}}
    ]  # fmt: skip
    statuses = [status for status, _ in found["checkout"]]
    assert statuses == [200, 502, 502, 503, 503]  # two failures open the breaker
    assert [body["checkout_v2"] for _, body in found["checkout"]] == [True] * 4 + [False]
    assert found["checkout"][0][1]["payment"] == "charged"
    assert found["breaker"] == "open"


def test_django_orm_and_outbox_commit_together_on_sqlite(tmp_path: Path) -> None:
    check(run_scenario(f"sqlite:///{tmp_path / 'shop.db'}"), "sqlite", "sqlite3")


def test_django_orm_and_outbox_commit_together_on_postgres(postgres_url: str) -> None:
    check(run_scenario(postgres_url), "postgresql", "psycopg")


def test_sqlite3_connection_stages_many_and_is_refused_by_astage(tmp_path: Path) -> None:
    """The DB-API sqlite3 connection (Django's on SQLite) writes rows the relay's
    SQLAlchemy reads as its own; the async function refuses it before anything runs."""
    import asyncio
    import sqlite3

    import sqlalchemy as sa

    from safeship.db import create_engine, upgrade
    from safeship.outbox import NewEvent, OutboxConnectionError, admin, astage, stage_many

    path = tmp_path / "raw.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    raw = sqlite3.connect(path)
    events = [NewEvent(aggregate_type="o", aggregate_id=str(i), type="t", payload={"n": i})
              for i in range(3)]  # fmt: skip
    ids = stage_many(raw, events)
    with pytest.raises(OutboxConnectionError, match="use `stage"):
        asyncio.run(astage(raw, aggregate_type="o", aggregate_id="x", type="t", payload={}))
    raw.commit()
    raw.close()
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT id FROM safeship_outbox ORDER BY id")).scalars()
        assert list(stored) == sorted(i.hex for i in ids)
    assert admin.stats(engine).pending == 3
    engine.dispose()
