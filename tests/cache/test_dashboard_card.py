"""Cache figures reach the control plane from another process: a service process caches,
reports with ``CacheReporter``, exits; the plane's overview (JSON, page and a Chromium
screenshot) shows hits, misses, hit ratio, stale served, errors and a hit-ratio chart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.cache import Cache, CacheReporter
from safeship.db import create_engine, upgrade
from safeship.server import create_app
from safeship.server._overview import cache_figures
from safeship.server._samples import Series
from tests.server.support import ADMIN_KEY, make_settings, read_headers

#: A service process: 3 misses and 7 hits, reported 20 minutes ago; 2 misses and 18 hits
#: more, reported 10 minutes ago; 10 hits more, reported now (35 hits and 5 misses in the
#: last hour; 90 % and 100 % in the later buckets).
SERVICE = """
import sys, time
import sqlalchemy as sa
from safeship.cache import Cache, CacheReporter
url, moment = sys.argv[1], float(sys.argv[2])
engine = sa.create_engine(url)
shop = Cache("dash-shop", ttl=3600)

@shop(ttl=3600)
def price(n: int) -> int:
    return n * 10

clock = iter([moment - 1200.0, moment - 600.0, moment])
reporter = CacheReporter(engine, service="shop", instance="pod-a", interval=30.0,
                         clock=lambda: next(clock))
for n in [1, 2, 3] + [1, 2, 3, 1, 2, 3, 1]:
    price(n)
reporter.report_once()
for n in [4, 5] + [1, 2, 3, 4, 5] * 3 + [1, 2, 3]:
    price(n)
reporter.report_once()
for n in [1, 2, 3, 4, 5] * 2:
    price(n)
reporter.report_once()
assert reporter.last_error is None, reporter.last_error
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def plane_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plane.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def reported(plane_url: str) -> Iterator[tuple[str, sa.Engine]]:
    engine = create_engine(plane_url)
    upgrade(engine)
    with engine.begin() as conn:  # a PG database may hold another test's cache rows
        conn.execute(sa.text("DELETE FROM safeship_samples WHERE kind = 'cache'"))
    done = subprocess.run(
        [sys.executable, "-c", SERVICE, plane_url, str(time.time())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    yield plane_url, engine
    engine.dispose()


def test_another_process_figures_on_the_overview(reported: tuple[str, sa.Engine]) -> None:
    url, engine = reported
    app = create_app(make_settings(url), engine=engine, sample_interval=None)
    with TestClient(app, base_url="http://testserver") as client:
        body = client.get("/api/v1/overview", headers=read_headers()).json()
        assert body["cache"] == [
            {
                "service": "shop",
                "namespace": "dash-shop",
                "instances": 1,
                "hits": 35,
                "misses": 5,
                "stale_served": 0,
                "errors": 0,
                "hit_ratio": pytest.approx(35 / 40),
                "reported_at": body["cache"][0]["reported_at"],
            }
        ]
        login = client.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
        assert login.status_code == 303
        page = client.get("/").text
        row = page.split('data-cache="shop/dash-shop"', 1)[1].split("</tr>", 1)[0]
        assert '<td data-stat="hit_ratio">87.5%</td>' in row
        assert '<td data-stat="misses">5</td>' in row
        # The later reports' buckets: 18 hits of 20 lookups, then 10 of 10.
        chart = page.split('id="chart-cache-1"', 1)[1].split("</svg>", 1)[0]
        assert 'data-count="2"' in chart


def _series(metric: str, subject: str, *points: tuple[float, float]) -> Series:
    base = datetime(2026, 1, 1, 12, tzinfo=UTC)
    return Series(
        "cache", subject, metric, tuple((base + timedelta(minutes=m), v) for m, v in points)
    )


def test_figures_count_the_window_across_processes_and_restarts() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(minutes=90)
    stored = [
        # pod-a ran before the window (40 hits then): only its rise inside counts.
        _series("hits", "shop/pod-a/cat", (0, 40), (60, 50), (80, 70)),
        _series("misses", "shop/pod-a/cat", (0, 10), (60, 10), (80, 20)),
        # pod-b started inside the window; one of its caches was collected (a drop).
        _series("hits", "shop/pod-b/cat", (40, 5), (70, 3), (85, 8)),
        _series("misses", "shop/pod-b/cat", (40, 0), (70, 0), (85, 0)),
        _series("errors", "shop/pod-b/cat", (85, 2)),
        _series("hits", "other/pod-c/cat", (0, 9)),  # nothing inside the window
    ]
    views, ratios = cache_figures(stored, now)
    (view,) = views
    assert (view.service, view.namespace, view.instances) == ("shop", "cat", 2)
    # pod-a: 30 hits, 10 misses; pod-b: 5 + 0 + 5 = 10 hits (the drop adds nothing).
    assert (view.hits, view.misses, view.errors) == (40, 10, 2)
    assert view.hit_ratio == pytest.approx(0.8)
    chart = {at.minute + 60 * (at.hour - 12): round(v, 1) for at, v in ratios[("shop", "cat")]}
    assert chart == {60: 100.0, 80: round(100 * 20 / 30, 1), 85: 100.0}


def test_a_reporter_writes_nothing_without_caches_and_survives_a_dead_database(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'plane.db'}")
    cache = Cache("dash-dead", ttl=60)
    cache.set("k", 1)
    reporter = CacheReporter(engine, service="shop", instance="pod-z", interval=1.0)
    assert any(p.subject == "shop/pod-z/dash-dead" for p in reporter.points())
    reporter.report_once()  # no such directory: the database cannot open
    assert reporter.last_error is not None
    with pytest.raises(ValueError, match="service"):
        CacheReporter(engine, service="a/b")
    engine.dispose()


@pytest.mark.browser
def test_the_cache_card_in_chromium(reported: tuple[str, sa.Engine]) -> None:
    from playwright.sync_api import expect

    from tests.support.browser import ARTIFACTS, chromium_page, served

    url, engine = reported
    if not url.startswith("sqlite"):
        pytest.skip("one browser run is enough")
    app = create_app(make_settings(url), engine=engine, sample_interval=None)
    with served(app) as base, chromium_page(width=1280, height=900) as page:
        page.goto(base + "/login")
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/")
        card = page.locator("#overview-cache")
        expect(card.locator('[data-stat="hit_ratio"]')).to_have_text("87.5%")
        expect(card.locator("#chart-cache-1 polyline")).to_have_attribute("data-count", "2")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        card.screenshot(path=str(ARTIFACTS / "overview-cache.png"))
