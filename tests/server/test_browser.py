"""The dashboard in headless Chromium: sign in, see the health page, take a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safeship.db import create_engine
from safeship.server import create_app
from tests.server.support import ADMIN_KEY, READ_KEY, make_settings
from tests.support.browser import ARTIFACTS, chromium_page, served

pytestmark = pytest.mark.browser


@pytest.fixture
def served_plane(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    engine = create_engine(url)
    with served(create_app(make_settings(url), engine=engine)) as base:
        yield base
    engine.dispose()


@pytest.fixture
def page() -> Iterator[object]:
    with chromium_page() as browser_page:
        yield browser_page


def test_sign_in_and_see_the_health_page(served_plane: str, page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(served_plane + "/")
    expect(page).to_have_url(served_plane + "/login")
    page.fill("#key", "wrong-key")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not valid")

    page.fill("#key", READ_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(served_plane + "/")
    expect(page.locator("#health")).to_contain_text("database")
    expect(page.locator("#health .status").first).to_have_text("pass")
    expect(page.locator(".who")).to_have_text("reader (read)")
    assert ADMIN_KEY not in page.content()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-overview.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 5000
    print(f"screenshot: {shot}")

    page.click("text=Sign out")
    expect(page).to_have_url(served_plane + "/login")
