"""The rollout page in headless Chromium: charts with data, live updates, rollback click."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from safeship.db import create_engine
from safeship.flags.store import FlagStore
from safeship.rollouts import ArmWindow, Plan, RolloutGuard
from safeship.server import create_app
from safeship.server.state import ControlPlane
from tests.conftest import REQUIRE_SERVICES
from tests.server.support import ADMIN_KEY, make_settings
from tests.server.test_browser import ARTIFACTS, CHROMIUM, _free_port

pytestmark = pytest.mark.browser


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    url = f"sqlite:///{tmp_path / 'rollouts.db'}"
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the control plane did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)
    engine.dispose()


@pytest.fixture
def chromium_page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 1000})
        finally:
            browser.close()


def _history(plane: ControlPlane, name: str, minutes: int) -> None:
    """Windows spread over the past minutes (a guard on a clock set back), for the charts."""
    start = datetime.now(UTC) - timedelta(minutes=minutes)
    for i in range(minutes):
        at = start + timedelta(minutes=i)
        past = RolloutGuard(plane.engine, plane.flags, now=lambda at=at: at)
        past.record_window(
            name,
            process="web-1",
            control=ArmWindow(requests=200, errors=i % 3, histogram={112: 180, 121: 20}),
            candidate=ArmWindow(requests=20, errors=0, histogram={113 + i % 4: 20}),
        )


def test_rollout_page_updates_live_and_rolls_back_on_click(
    served: tuple[str, FastAPI], chromium_page: object
) -> None:
    from playwright.sync_api import Page, expect

    base, app = served
    page = chromium_page
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
