"""The flag page's chart of SDK-reported evaluations (yes, no, per variant, per minute,
added across reports) and its list of SDK instances; and the page in headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from safeship.db import create_engine
from safeship.server import create_app
from safeship.server._samples import read_series
from safeship.server.sdk_clients import Registration, SdkClientStore
from tests.server.support import ADMIN_KEY, READ_KEY, make_settings
from tests.support.browser import ARTIFACTS, chromium_page, served


@dataclass
class Counts:
    yes: int = 0
    no: int = 0
    variants: dict[str, int] = field(default_factory=dict)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def seed(app: FastAPI, now: datetime) -> None:
    cp = app.state.plane
    cp.flags.create("checkout", actor="test", definition={
        "name": "checkout", "enabled": True, "strategies": [{"name": "default"}]})  # fmt: skip
    store: SdkClientStore = app.state.sdk_clients
    store.register(Registration("orders-node", "pod-1", "unleash-client-node:6.12.1", "prod",
                                ("default",), None, 15000), now=now)  # fmt: skip
    earlier = now - timedelta(minutes=3)
    first = Counts(20, 10, {"blue": 12, "green": 8})
    store.reported("orders-node", "pod-1", 30, counts={"checkout": first}, now=earlier)
    store.reported("orders-node", "pod-1", 7, counts={"checkout": Counts(5, 2)}, now=now)
    store.reported("billing-py", "i-2", 4, counts={"checkout": Counts(4, 0)}, now=now)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path / 'plane.db'}"
    engine = create_engine(url)
    made = create_app(make_settings(url), engine=engine, sample_interval=None)
    yield made
    engine.dispose()


def test_reports_add_up_per_minute_and_flag(app: FastAPI) -> None:
    now = _minute(datetime.now(UTC)) + timedelta(seconds=30)
    seed(app, now)
    since = now - timedelta(hours=1)
    stored = read_series(app.state.plane.engine, since=since, kind="sdk", subject="checkout")
    found = {s.metric: s.points for s in stored}
    at, earlier = _minute(now), _minute(now - timedelta(minutes=3))
    assert found == {
        "yes": ((earlier, 20.0), (at, 9.0)),  # two reports in one minute are added
        "no": ((earlier, 10.0), (at, 2.0)),
        "variant:blue": ((earlier, 12.0),),
        "variant:green": ((earlier, 8.0),),
    }


def test_an_sdk_metrics_report_through_the_route_reaches_the_chart(app: FastAPI) -> None:
    """POST /api/client/metrics, as an Unleash SDK sends it, feeds the flag's chart rows;
    a name that is not a flag adds no row."""
    app.state.plane.flags.create("checkout", actor="test", definition={
        "name": "checkout", "enabled": True, "strategies": [{"name": "default"}]})  # fmt: skip
    report = {
        "appName": "orders-node",
        "instanceId": "pod-1",
        "bucket": {
            "start": "2026-01-01T00:00:00Z",
            "stop": "2026-01-01T00:01:00Z",
            "toggles": {
                "checkout": {"yes": 6, "no": 2, "variants": {"blue": 6}},
                "not-a-flag": {"yes": 9, "no": 0},
            },
        },
    }
    before = datetime.now(UTC) - timedelta(minutes=1)
    with TestClient(app) as client:
        for _ in range(2):
            answer = client.post(
                "/api/client/metrics", headers={"Authorization": READ_KEY}, json=report
            )
            assert answer.status_code == 202
    stored = read_series(app.state.plane.engine, since=before, kind="sdk")
    totals = {(s.subject, s.metric): sum(v for _, v in s.points) for s in stored}
    assert totals == {
        ("checkout", "yes"): 12.0,
        ("checkout", "no"): 4.0,
        ("checkout", "variant:blue"): 12.0,
    }


def test_flag_page_charts_sdk_evaluations_and_lists_instances(app: FastAPI) -> None:
    now = datetime.now(UTC)
    seed(app, now)
    with TestClient(app) as client:
        client.post("/login", data={"key": ADMIN_KEY})
        page = client.get("/flags/checkout")
    assert page.status_code == 200
    chart = page.text[page.text.index('id="sdk-evaluations-chart"') :]
    chart = chart[: chart.index("</svg>")]
    series = dict(re.findall(r'data-series="([^"]+)" data-count="(\d+)"', chart))
    # one point a minute from the first report to now (missing minutes are zeros)
    assert set(series) == {"yes", "no", "variant blue", "variant green"}
    assert len(set(series.values())) == 1 and int(series["yes"]) >= 4
    rows = page.text[page.text.index('id="sdk-instances"') :]
    assert rows.index("billing-py") < rows.index("orders-node")  # seen most recently first
    assert "unleash-client-node:6.12.1" in rows and ">37<" in rows


def test_flag_without_sdk_reports_shows_an_empty_chart(app: FastAPI) -> None:
    app.state.plane.flags.create("quiet", actor="test")
    with TestClient(app) as client:
        client.post("/login", data={"key": ADMIN_KEY})
        page = client.get("/flags/quiet")
    assert 'id="sdk-evaluations-chart"' in page.text and 'data-empty="yes"' in page.text
    assert "No SDK has registered or reported." in page.text


@pytest.mark.browser
def test_flag_page_chart_in_chromium(app: FastAPI) -> None:
    from playwright.sync_api import expect

    seed(app, datetime.now(UTC))
    problems: list[str] = []
    with served(app) as base, chromium_page(width=1280, height=900) as page:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(base + "/login")
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        page.goto(base + "/flags/checkout")
        chart = page.locator("#sdk-evaluations-chart")
        expect(chart).to_be_visible()
        expect(chart.locator("polyline")).to_have_count(4)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#sdk-evaluations").screenshot(path=str(ARTIFACTS / "flag-sdk-chart.png"))
    assert not problems, problems


def test_additions_are_atomic_on_postgres(postgres_url: str) -> None:
    """Many replicas report into the same minute at once: no count is lost."""
    from concurrent.futures import ThreadPoolExecutor

    from safeship.db import upgrade

    engine = create_engine(postgres_url)
    upgrade(engine)
    store = SdkClientStore(engine)
    now = datetime.now(UTC)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.reported(f"app-{i % 4}", "x", 1,
                                               counts={"f": Counts(1, 2)}, now=now),
                      range(80)))  # fmt: skip
    with engine.connect() as conn:
        values: dict[str, float] = dict(conn.execute(sa.text(
            "SELECT metric, value FROM safeship_samples WHERE kind = 'sdk'")).all())  # fmt: skip
    engine.dispose()
    assert values == {"yes": 80.0, "no": 160.0}
