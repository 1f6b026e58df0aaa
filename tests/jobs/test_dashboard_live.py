"""The Jobs page in a browser: the live poll fills in a queue that appears while it is open,
and the page has no console errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeship.db import create_engine
from safeship.jobs import JobContext, Jobs
from safeship.server import create_app
from tests.server.support import ADMIN_KEY, make_settings
from tests.support.browser import chromium_page, served

pytestmark = pytest.mark.browser


def test_the_live_poll_adds_a_queue_that_appears_while_the_page_is_open(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    app = create_app(make_settings(url), engine=engine, sample_interval=None)
    jobs = Jobs()

    @jobs.task(queue="mail")
    def send(ctx: JobContext, n: int) -> None:
        return None

    problems: list[str] = []
    with served(app) as base, chromium_page() as page:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(base + "/login")
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        page.goto(base + "/jobs")
        expect(page.locator("#no-queues")).to_be_visible()
        with engine.begin() as conn:
            jobs.enqueue_many(conn, send, [{"n": i} for i in range(3)])
        pending = page.locator('tr[data-queue="mail"] [data-stat="pending"]')
        expect(pending).to_have_text("3", timeout=12_000)  # the next 5 s poll
        expect(page.locator("#no-queues")).to_have_count(0)
        assert int(page.locator("#live-count").inner_text()) >= 2
    engine.dispose()
    assert problems == [], problems
