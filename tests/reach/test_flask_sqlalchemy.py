"""Flask-SQLAlchemy and the outbox in one transaction (SQLite and PostgreSQL): the view
adds an order to ``db.session``, stages its event through the same session, then commits;
a failure after the stage rolls both back; the relay delivers the committed event."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from safeship.db import create_engine, upgrade
from safeship.integrations.flask import Safeship, request_id
from safeship.outbox import CallbackSink, Event, Relay, RelayConfig, stage


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "flask_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(sa.String(100))


def make_app(url: str) -> tuple[Flask, SQLAlchemy]:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    db = SQLAlchemy(model_class=Base)
    db.init_app(app)
    Safeship(app, max_body_bytes=4096)

    @app.post("/orders")
    def place() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        order = Order(item=body["item"])
        db.session.add(order)
        db.session.flush()  # the order's id, in the request's transaction
        payload = {"item": order.item, "request_id": request_id()}
        stage(db.session, aggregate_type="order", aggregate_id=str(order.id),
              type="order.placed", payload=payload)  # fmt: skip
        if body.get("fail"):
            db.session.rollback()
            return {"error": "declined"}, 422
        db.session.commit()
        return {"id": order.id}, 200

    with app.app_context():
        db.create_all()
    return app, db


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flask.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_flask_sqlalchemy_session_stages_in_its_transaction(database_url: str) -> None:
    engine = create_engine(database_url)
    upgrade(engine)
    app, db = make_app(database_url)
    try:
        check_session_and_relay(engine, app)
    finally:  # Flask-SQLAlchemy's engines are the app's: their pooled connections close here
        with app.app_context():
            db.engine.dispose()
        engine.dispose()


def check_session_and_relay(engine: sa.Engine, app: Flask) -> None:
    client = app.test_client()
    placed = client.post("/orders", json={"item": "book"}, headers={"X-Request-ID": "fl-1"})
    declined = client.post("/orders", json={"item": "lamp", "fail": True})
    assert (placed.status_code, declined.status_code) == (200, 422)
    order = str(placed.get_json()["id"])
    with engine.connect() as conn:
        items = conn.execute(sa.text("SELECT item FROM flask_orders")).scalars().all()
        events = conn.execute(sa.text("SELECT aggregateid FROM safeship_outbox")).scalars().all()
    assert items == ["book"] and events == [order]

    delivered: list[Event] = []
    thread = Relay(engine, CallbackSink(delivered.append), config=RelayConfig(poll_interval=0.05))
    running = thread.start_thread()
    try:
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.stop()
    assert [(e.aggregate_id, e.payload_json()) for e in delivered] == [
        (order, {"item": "book", "request_id": "fl-1"})
    ]
