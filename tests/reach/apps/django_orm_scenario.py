"""Run in a subprocess by tests/reach/test_django_orm.py: Django's ORM on REACH_DJANGO_DB
(PostgreSQL or SQLite), safeship's tables on the same database, the shop views through
Django's test client, a relay delivering the staged events. Prints what it observed as JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import django
import sqlalchemy as sa

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.reach.apps.django_site.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from safeship import FlagClient  # noqa: E402
from safeship.db import create_engine, upgrade  # noqa: E402
from safeship.flags.store import FlagStore  # noqa: E402
from safeship.integrations.django import outbox_connection  # noqa: E402
from safeship.outbox import CallbackSink, Event, Relay, RelayConfig  # noqa: E402
from tests.reach.apps.django_site.shop import views  # noqa: E402


def main(url: str) -> dict[str, Any]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    engine = create_engine(url)
    upgrade(engine)
    out: dict[str, Any] = {"vendor": connection.vendor, "driver": ""}
    client = Client(raise_request_exception=False)

    placed = client.post("/orders", {"item": "book"}, content_type="application/json",
                         HTTP_X_REQUEST_ID="order-1")  # fmt: skip
    failed = client.post("/orders", {"item": "lamp", "fail": True},
                         content_type="application/json")  # fmt: skip
    out["driver"] = type(connection.connection).__module__
    out["statuses"] = [placed.status_code, failed.status_code]
    out["order_id"] = placed.json()["id"]
    with engine.connect() as conn:  # another connection: only committed rows are seen
        out["orders"] = conn.execute(sa.text("SELECT item FROM shop_order ORDER BY id")).all()
        out["events"] = conn.execute(
            sa.text("SELECT aggregateid, type FROM safeship_outbox ORDER BY created_at")
        ).all()
    try:
        outbox_connection()
        out["outside_atomic"] = "accepted"
    except RuntimeError as exc:
        out["outside_atomic"] = str(exc)

    delivered: list[dict[str, Any]] = []
    config = RelayConfig(poll_interval=0.05)
    running = Relay(engine, CallbackSink(lambda e: delivered.append(_event(e))), config=config)
    thread = running.start_thread()
    try:
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
    out["delivered"] = delivered

    store = FlagStore(engine)
    store.create(
        "checkout-v2",
        actor="test",
        definition={"name": "checkout-v2", "enabled": True,
                    "strategies": [{"name": "default", "parameters": {}}]},
    )  # fmt: skip
    with FlagClient(store=store, poll_interval=0.1, push=False) as flags:
        views.FLAGS["client"] = flags
        answers = [client.get("/checkout", {"user": "u1"})]
        answers += [client.get("/checkout", {"user": "u1", "gateway": "down"}) for _ in range(3)]
        store.set_enabled("checkout-v2", False, actor="test", reason="live change")
        deadline = time.monotonic() + 5
        while flags.is_enabled("checkout-v2", {"userId": "u1"}) and time.monotonic() < deadline:
            time.sleep(0.05)
        answers.append(client.get("/checkout", {"user": "u1"}))
    out["checkout"] = [(a.status_code, a.json()) for a in answers]
    out["breaker"] = views.payments.state.value
    engine.dispose()
    return out


def _event(event: Event) -> dict[str, Any]:
    return {"id": event.aggregate_id, "type": event.type, "payload": event.payload_json()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=list))
