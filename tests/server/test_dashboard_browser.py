"""Every dashboard page in headless Chromium: no console error, a favicon, localised
timestamps, and a screenshot of each into ``artifacts/``.

The pages come from the app's own navigation (``ControlPlane.nav``), plus the first detail
page each list links to, so a page added to the navigation later is covered without
editing this test.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from safeship.db import create_engine
from safeship.outbox import stage
from safeship.resilience import Breaker, default_registry
from safeship.resilience.board import BreakerReporter
from safeship.rollouts import ArmWindow, Plan, RolloutGuard
from safeship.server import create_app
from safeship.server._samples import Point, Sampler, plane_points
from safeship.server.state import ControlPlane
from tests.server.support import ADMIN_KEY, make_settings
from tests.support.browser import ARTIFACTS, chromium_page, served

pytestmark = pytest.mark.browser


def _same(at: datetime) -> datetime:
    return at


def _seed(cp: ControlPlane) -> None:
    """A service mid-migration: flags, a guarded rollout with traffic, a breaker forced
    open, a backlog no relay drains, and half an hour of sampled history."""
    cp.flags.create("orders-v2-writes", actor="cli:alice", reason="dual writes")
    cp.rollouts.create("checkout-v2", actor="cli:alice", plan=Plan(steps=(5, 25, 50, 100)))
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(30):
        at = start + timedelta(minutes=i)
        past = RolloutGuard(cp.engine, cp.flags, now=functools.partial(_same, at))
        past.record_window(
            "checkout-v2",
            process="web-1",
            control=ArmWindow(requests=400, errors=2 + i % 3, histogram={112: 360, 121: 40}),
            candidate=ArmWindow(requests=40, errors=i % 2, histogram={113 + i % 3: 40}),
        )
    breaker = Breaker(f"payments-{uuid.uuid4().hex[:6]}", registry=default_registry)
    breaker.force_open(reason="provider incident")
    BreakerReporter(cp.engine, service="orders", instance="web-1").report_once()
    with cp.engine.begin() as conn:
        for n in range(12):
            stage(conn, aggregate_type="order", aggregate_id=str(n), type="created", payload={})
    now = time.time()
    for i in range(12):  # history: backlog growing since the relay stopped
        moment = now - (12 - i) * 150.0

        def read(i: int = i) -> list[Point]:
            figures = plane_points(cp.engine, cp.breakers, cp.rollouts)
            pending = [Point("outbox", "", "pending", float(i))]
            return pending + [p for p in figures if p.metric != "pending"]

        Sampler(cp.engine, read, clock=functools.partial(float, moment)).sample_once()


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine, sample_interval=None)
    _seed(app.state.plane)
    with served(app) as base:
        yield base, app
    engine.dispose()


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "overview"


def _pages(page: Any, base: str, nav: list[str]) -> list[str]:
    """The navigation's pages, then the first detail page each one links to."""
    found = list(nav)
    for path in nav:
        if path == "/":
            continue
        page.goto(base + path)
        links = page.locator(f'main a[href^="{path}/"]')
        if links.count():
            href = links.first.get_attribute("href")
            if href and href not in found:
                found.append(href)
    return found


def test_every_page_loads_clean_with_a_favicon_and_a_screenshot(
    served_app: tuple[str, FastAPI],
) -> None:
    from playwright.sync_api import expect

    base, app = served_app
    nav = [item.path for item in app.state.plane.nav]
    assert nav[0] == "/" and len(nav) >= 5
    problems: list[str] = []
    with chromium_page(width=1280, height=900) as page:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        page.goto(base + "/login")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-login.png"))
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/")
        shots = []
        for path in _pages(page, base, nav):
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            icon = page.locator('link[rel="icon"]')
            expect(icon).to_have_count(1)
            href = icon.get_attribute("href")
            assert href and page.request.get(base + href).ok, path
            times = page.locator("main time[datetime]")
            if times.count():  # localised by the page: the UTC text moved to the title
                expect(times.first).to_have_attribute("data-local", "1")
                assert times.first.get_attribute("title", timeout=1000).endswith(" UTC")
            expect(page.locator("main time[datetime]:not([data-local])")).to_have_count(0)
            shot = ARTIFACTS / f"page-{_slug(path)}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000, path
            shots.append(shot.name)
        page.goto(base + "/")
        expect(page.locator("#verdict")).to_have_text("warn")
        expect(page.locator('[data-section="outbox"]')).to_contain_text("no relay alive")
        expect(page.locator('[data-section="breakers"]')).to_contain_text("forced open")
        expect(page.locator("#chart-backlog polyline.pending")).to_have_attribute(
            "data-count", "12"
        )
        expect(page.locator("#chart-backlog text[data-time]").first).not_to_contain_text("UTC")
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
        page.goto(base + "/rollouts/checkout-v2")  # a running canary: no promote, no resume
        for action, shown in [("pause", True), ("advance", True), ("rollback", True),
                              ("resume", False), ("promote", False)]:  # fmt: skip
            form = page.locator(f"#actions form[data-action={action}]")
            expect(form).to_be_visible() if shown else expect(form).to_be_hidden()
        expect(page.locator("#explain")).to_contain_text("the rollback threshold")
        ticks = page.locator("#chart-errors text[data-time]")  # time axis, viewer's zone
        expect(ticks).to_have_count(3)
        expect(ticks.first).not_to_contain_text("UTC")
        page.click("#actions form[data-action=rollback] button")
        expect(page.locator("#status")).to_have_text("rolled_back", timeout=8000)
        expect(page.locator("#actions form:visible")).to_have_count(0)
        expect(page.locator("#no-actions")).to_be_visible()
        expect(page.locator("#explain")).to_contain_text("no longer acts on it", timeout=8000)
        expect(page.locator("main time[datetime]:not([data-local])")).to_have_count(0)
    assert problems == [], problems
    assert len(shots) >= len(nav) + 2  # the list pages and at least a flag and a rollout
    print(f"screenshots in {ARTIFACTS}: {', '.join(shots)}")
