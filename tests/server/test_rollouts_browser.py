"""The rollout page in headless Chromium: charts with data, live updates, rollback click."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI

from safeship.db import create_engine
from safeship.flags.store import FlagStore
from safeship.rollouts import ArmWindow, Plan, RolloutGuard
from safeship.server import create_app
from safeship.server.state import ControlPlane
from tests.server.support import ADMIN_KEY, make_settings
from tests.support.browser import ARTIFACTS, chromium_page, served

pytestmark = pytest.mark.browser


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    url = f"sqlite:///{tmp_path / 'rollouts.db'}"
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine)
    with served(app) as base:
        yield base, app
    engine.dispose()


@pytest.fixture
def browser_page() -> Iterator[object]:
    with chromium_page(height=1000) as page:
        yield page


def _clock_at(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def _history(plane: ControlPlane, name: str, minutes: int) -> None:
    """Windows spread over the past minutes (a guard on a clock set back), for the charts."""
    start = datetime.now(UTC) - timedelta(minutes=minutes)
    for i in range(minutes):
        at = start + timedelta(minutes=i)
        past = RolloutGuard(plane.engine, plane.flags, now=_clock_at(at))
        past.record_window(
            name,
            process="web-1",
            control=ArmWindow(requests=200, errors=i % 3, histogram={112: 180, 121: 20}),
            candidate=ArmWindow(requests=20, errors=0, histogram={113 + i % 4: 20}),
        )


def test_rollout_page_updates_live_and_rolls_back_on_click(
    served_app: tuple[str, FastAPI], browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    base, app = served_app
    page = browser_page
    assert isinstance(page, Page)
    plane: ControlPlane = app.state.plane
    plane.rollouts.create("orders-batched", actor="alice", plan=Plan(steps=(10, 50, 100)))
    _history(plane, "orders-batched", 6)

    page.goto(base + "/login")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.goto(base + "/rollouts")
    expect(page.locator("#rollouts")).to_contain_text("orders-batched")
    page.click("text=orders-batched")
    expect(page).to_have_url(base + "/rollouts/orders-batched")

    for chart in ("#chart-errors", "#chart-p95"):
        expect(page.locator(f"{chart} polyline.candidate")).to_have_attribute("data-count", "6")
        expect(page.locator(f"{chart} polyline.control")).to_have_attribute("data-count", "6")
    requests = page.locator("tr[data-metric=requests] td[data-arm=candidate]")
    expect(requests).to_have_text("120")
    expect(page.locator("#status")).to_have_text("running")

    plane.rollouts.record_window(
        "orders-batched",
        process="web-2",
        control=ArmWindow(requests=100, errors=0, histogram={112: 100}),
        candidate=ArmWindow(requests=30, errors=3, histogram={118: 30}),
    )  # the page polls every 2 s; no reload
    expect(requests).to_have_text("150", timeout=8000)
    expect(page.locator("#chart-errors polyline.candidate")).to_have_attribute(
        "data-count", "7", timeout=8000
    )

    page.click("#actions form[data-action=rollback] button")
    expect(page.locator("#status")).to_have_text("rolled_back", timeout=8000)
    expect(page.locator("#flag")).to_have_text("off")
    expect(page.locator("#decision-list li").first).to_contain_text("rolled back")
    assert FlagStore(plane.engine).get("orders-batched").enabled is False
    assert plane.rollouts.get("orders-batched").status == "rolled_back"
    expect(page.locator("#actions form[data-action=pause] button")).to_be_disabled()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "rollout-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5000
    print(f"screenshot: {shot}")
    page.goto(base + "/rollouts")
    expect(page.locator("#rollouts tr[data-rollout=orders-batched]")).to_contain_text("rolled_back")
    expect(page.locator("#decisions li").first).to_contain_text("rolled back")
    overview = ARTIFACTS / "rollouts-overview.png"
    page.screenshot(path=str(overview), full_page=True)
    print(f"screenshot: {overview}")
