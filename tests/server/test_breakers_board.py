"""Breakers reported by app processes, listed and steered from the control plane."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.resilience import Breaker, default_registry
from safeship.resilience.board import BreakerBoard, BreakerReporter
from tests.server.support import ADMIN_KEY, admin_headers, read_headers


def test_reports_are_listed_and_modes_reach_the_breaker(
    client: TestClient, engine: sa.Engine
) -> None:
    breaker = Breaker("board-payments", registry=default_registry)
    reporter = BreakerReporter(engine, service="orders", instance="pod-1", start=False)
    try:
        reporter.report_once()
        listed = client.get("/api/v1/breakers", headers=read_headers()).json()
        mine = [b for b in listed if b["name"] == "board-payments"]
        assert mine and mine[0]["service"] == "orders" and mine[0]["state"] == "closed"
        assert mine[0]["mode"] == "automatic" and mine[0]["stale"] is False

        assert (
            client.post(
                "/api/v1/breakers/orders/board-payments/mode",
                json={"mode": "forced_open"},
                headers=read_headers(),
            ).status_code
            == 403
        )
        answer = client.post(
            "/api/v1/breakers/orders/board-payments/mode",
            json={"mode": "forced_open", "reason": "drill"},
            headers=admin_headers(),
        )
        assert answer.status_code == 200 and answer.json()["version"] == 1
        reporter.report_once()
        assert breaker.state == "forced_open"
        row = next(
            b
            for b in client.get("/api/v1/breakers", headers=read_headers()).json()
            if b["name"] == "board-payments"
        )
        assert row["state"] == "forced_open" and row["mode"] == "forced_open"

        client.post(
            "/api/v1/breakers/orders/board-payments/mode",
            json={"mode": "automatic"},
            headers=admin_headers(),
        )
        reporter.report_once()
        assert breaker.state == "closed"
        reporter.report_once()  # an applied mode is applied once, not on every report
        trail = client.get("/api/v1/audit", headers=read_headers()).json()["items"]
        assert [t["action"] for t in trail[:2]] == ["breaker.automatic", "breaker.forced_open"]
        assert trail[1]["reason"] == "drill"
    finally:
        reporter.close()


def test_bad_modes_are_refused(client: TestClient) -> None:
    response = client.post(
        "/api/v1/breakers/orders/x/mode", json={"mode": "explode"}, headers=admin_headers()
    )
    assert response.status_code == 422


def test_dashboard_page_shows_breakers_and_admin_can_force_open(
    client: TestClient, engine: sa.Engine
) -> None:
    breaker = Breaker("board-inventory", registry=default_registry)
    reporter = BreakerReporter(engine, service="orders", instance="pod-2", start=False)
    reporter.report_once()
    client.post("/login", data={"key": ADMIN_KEY})
    page = client.get("/breakers")
    assert "board-inventory" in page.text and "closed" in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    client.post(
        "/breakers/orders/board-inventory/mode",
        data={"csrf_token": token.group(1), "mode": "forced_open"},
    )
    reporter.report_once()
    assert breaker.state == "forced_open"
    assert (
        client.post(
            "/breakers/orders/board-inventory/mode",
            data={"csrf_token": "forged", "mode": "automatic"},
        ).status_code
        == 403
    )


def test_reporter_survives_a_database_outage() -> None:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    Breaker("board-offline", registry=default_registry)
    reporter = BreakerReporter(engine, service="orders", start=False)
    reporter.report_once()
    assert reporter.last_error is not None
    engine.dispose()


def test_board_refuses_unknown_modes(engine: sa.Engine) -> None:
    board = BreakerBoard(engine)
    with pytest.raises(ValueError, match="mode must be one of"):
        board.set_mode("orders", "x", "boom", actor="a")  # type: ignore[arg-type]
