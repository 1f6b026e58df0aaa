"""The dashboard in headless Chromium: sign in, see the health page, take a screenshot."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from safeship.db import create_engine
from safeship.server import create_app
from tests.conftest import REQUIRE_SERVICES
from tests.server.support import ADMIN_KEY, READ_KEY, make_settings

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("SAFESHIP_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")
)

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served_plane(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'browser.db'}"
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
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    engine.dispose()


@pytest.fixture
def page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 800})
        finally:
            browser.close()


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
