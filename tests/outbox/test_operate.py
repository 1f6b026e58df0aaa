"""Operating the outbox: stats, peek, retry and purge through the library, the API, the
dashboard page and the CLI; inbox; health check; metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from safeship.outbox import NewEvent, inbox, stage_many
from safeship.outbox import _schema as outbox_schema
from safeship.outbox.health import outbox_check
from tests.server.support import ADMIN_KEY, READ_KEY, admin_headers, make_settings, read_headers


def _bury(engine: sa.Engine, count: int, key: str = "k1") -> list[uuid.UUID]:
    """Stage ``count`` events and move them straight to the dead letters."""
    events = [
        NewEvent(aggregate_type="order", aggregate_id=key, type="created", payload=i)
        for i in range(count)
    ]
    with engine.begin() as conn:
        stage_many(conn, events)
        t = outbox_schema.outbox
        names = [c.name for c in t.columns]
        conn.execute(
            sa.insert(outbox_schema.dead).from_select(
                [*names, "dead_at"], sa.select(*t.columns, sa.func.current_timestamp())
            )
        )
        conn.execute(sa.delete(t))
    return [e.id for e in events]


@pytest.fixture
def app_client(sqlite_engine: sa.Engine, tmp_path: Path) -> Iterator[TestClient]:
    from safeship.server import create_app
    from safeship.server.routes import outbox as routes

    url = sqlite_engine.url.render_as_string(hide_password=False)
    app = create_app(make_settings(url), engine=sqlite_engine)
    if not any(getattr(r, "path", "") == "/api/v1/outbox/stats" for r in app.routes):
        app.include_router(routes.api)
        app.include_router(routes.pages)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def test_api_stats_peek_retry_and_purge(app_client: TestClient, sqlite_engine: sa.Engine) -> None:
    ids = _bury(sqlite_engine, 3)
    assert app_client.get("/api/v1/outbox/stats").status_code == 401
    stats = app_client.get("/api/v1/outbox/stats", headers=read_headers()).json()
    assert stats["dead"] == 3 and stats["pending"] == 0
    dead = app_client.get("/api/v1/outbox/events?where=dead", headers=read_headers()).json()
    assert {d["id"] for d in dead} == {str(i) for i in ids}
    body = {"ids": [str(ids[0])]}
    assert (
        app_client.post("/api/v1/outbox/dead/retry", json=body, headers=read_headers()).status_code
        == 403
    )
    retried = app_client.post("/api/v1/outbox/dead/retry", json=body, headers=admin_headers())
    assert retried.json() == {"count": 1}
    assert (
        app_client.post("/api/v1/outbox/dead/retry", json={}, headers=admin_headers()).status_code
        == 422
    )
    wrong = app_client.post(
        "/api/v1/outbox/dead/purge", json={"expected": 5}, headers=admin_headers()
    )
    assert wrong.status_code == 409 and "2 events match" in wrong.json()["detail"]
    purged = app_client.post(
        "/api/v1/outbox/dead/purge", json={"expected": 2}, headers=admin_headers()
    )
    assert purged.json() == {"count": 2}
    pending = app_client.get("/api/v1/outbox/events", headers=read_headers()).json()
    assert [p["id"] for p in pending] == [str(ids[0])] and pending[0]["attempts"] == 0


def test_dashboard_page_lists_dead_letters_and_retries_them(
    app_client: TestClient, sqlite_engine: sa.Engine
) -> None:
    ids = _bury(sqlite_engine, 2)
    assert app_client.get("/outbox", follow_redirects=False).status_code == 303
    app_client.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
    page = app_client.get("/outbox")
    assert page.status_code == 200 and str(ids[1]) in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = app_client.post(
        "/outbox/retry",
        data={"csrf_token": token.group(1), "event_id": str(ids[1])},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "retried 1" in app_client.get(response.headers["location"]).text
    _ = READ_KEY


def test_cli_stats_peek_retry_purge(sqlite_engine: sa.Engine) -> None:
    from safeship.cli.outbox import outbox_app

    url = sqlite_engine.url.render_as_string(hide_password=False)
    ids = _bury(sqlite_engine, 3)
    runner = CliRunner()
    env = {"SAFESHIP_DATABASE_URL": url}
    result = runner.invoke(outbox_app, ["stats", "--json"], env=env)
    assert result.exit_code == 0 and '"dead": 3' in result.output
    result = runner.invoke(outbox_app, ["peek", "--dead"], env=env)
    assert result.exit_code == 0 and "order.created" in result.output
    result = runner.invoke(outbox_app, ["retry"], env=env)
    assert result.exit_code == 2
    result = runner.invoke(outbox_app, ["retry", str(ids[0])], env=env)
    assert result.exit_code == 0 and "1 dead letters moved" in result.output
    result = runner.invoke(outbox_app, ["purge"], env=env, input="n\n")
    assert result.exit_code == 2 and "--yes" in result.output  # no terminal: never asks
    result = runner.invoke(outbox_app, ["purge", "--yes", "2"], env=env)
    assert result.exit_code == 0 and "2 dead letters deleted" in result.output


def test_inbox_records_once_in_the_handlers_transaction_and_prunes(
    sqlite_engine: sa.Engine,
) -> None:
    with sqlite_engine.begin() as conn:
        assert inbox.seen(conn, consumer="billing", message_id="m1") is False
        assert inbox.seen(conn, consumer="billing", message_id="m1") is True
        assert inbox.seen(conn, consumer="audit", message_id="m1") is False

    def failing_handler() -> None:
        with sqlite_engine.begin() as conn:
            inbox.seen(conn, consumer="billing", message_id="m2")
            raise RuntimeError("handler failed: nothing recorded")

    with pytest.raises(RuntimeError):
        failing_handler()
    with sqlite_engine.begin() as conn:
        assert inbox.seen(conn, consumer="billing", message_id="m2") is False
    assert inbox.prune(sqlite_engine, older_than=timedelta(hours=1)) == 0
    assert inbox.prune(sqlite_engine, older_than=timedelta(microseconds=1)) == 3


@pytest.mark.postgres
def test_inbox_on_postgres_ignores_the_duplicate(pg_engine: sa.Engine) -> None:
    with pg_engine.begin() as conn:
        assert inbox.seen(conn, consumer="c", message_id="x") is False
    with pg_engine.begin() as conn:
        assert inbox.seen(conn, consumer="c", message_id="x") is True


def test_health_check_warns_on_old_backlog_and_dead_letters(sqlite_engine: sa.Engine) -> None:
    check = outbox_check(sqlite_engine, max_oldest_age=60)
    assert check().status == "pass"
    _bury(sqlite_engine, 1)
    result = check()
    assert result.status == "warn" and "dead letters" in (result.output or "")


def test_metrics_are_exported() -> None:
    from prometheus_client import generate_latest

    from safeship.outbox import _metrics as metrics

    metrics.backlog(5, 1.5, 0)
    text = generate_latest().decode()
    assert "safeship_outbox_backlog 5.0" in text
    assert "safeship_outbox_publish_seconds_bucket" in text


def test_cli_relay_rejects_an_unknown_broker(sqlite_engine: sa.Engine) -> None:
    from safeship.cli.outbox import outbox_app

    url = sqlite_engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        outbox_app,
        ["relay", "--broker", "carrier-pigeon", "--url", "x"],
        env={"SAFESHIP_DATABASE_URL": url},
    )
    assert result.exit_code == 2 and "--broker must be" in result.output


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_purge_that_would_delete_more_than_confirmed_deletes_nothing(
    database: str, request: pytest.FixtureRequest
) -> None:
    from safeship.outbox.admin import PurgeMismatchError, purge, stats

    engine: sa.Engine = request.getfixturevalue(
        "sqlite_engine" if database == "sqlite" else "pg_engine"
    )
    _bury(engine, 3, key=f"purge-{uuid.uuid4().hex[:6]}")
    dead = stats(engine).dead
    with pytest.raises(PurgeMismatchError, match=f"{dead} events match"):
        purge(engine, expected=dead - 1)  # one arrived since the operator looked
    assert stats(engine).dead == dead
    with engine.begin() as conn:  # inside the caller's transaction: nothing deleted either
        with pytest.raises(PurgeMismatchError):
            purge(conn, expected=dead + 1)
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(outbox_schema.dead)).scalar()
            == dead
        )
    assert purge(engine, expected=dead) == dead
    assert stats(engine).dead == 0
