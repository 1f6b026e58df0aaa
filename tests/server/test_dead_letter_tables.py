"""The jobs and outbox pages show their dead letters in one shared table: per-row retry,
bulk retry and a purge that confirms the exact count (admins only), escaped errors."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from safeship.jobs import GiveUp, JobContext, Jobs, Worker, count_dead
from safeship.outbox import NewEvent, stage_many
from safeship.outbox import _schema as outbox_schema
from tests.server.support import ADMIN_KEY, READ_KEY

ERROR = "<b>refused</b> & gone"


async def _dead_jobs(engine: sa.Engine, count: int) -> list[str]:
    """``count`` jobs whose handler gives up: each lands in dead letters with ERROR."""
    jobs = Jobs()
    queue = f"q{uuid.uuid4().hex[:8]}"

    @jobs.task(name=f"mail_{queue}", queue=queue)
    def mail(ctx: JobContext, n: int) -> None:
        raise GiveUp(ERROR)

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, mail, [{"n": i} for i in range(count)])
    worker = Worker(jobs, engine, poll=0.05, listen=False, cron=False)
    running = asyncio.create_task(worker.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while count_dead(engine) < count:
            assert asyncio.get_running_loop().time() < deadline, "jobs never dead-lettered"
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await running
    return [str(i) for i in ids]


def _dead_events(engine: sa.Engine, count: int) -> list[str]:
    """``count`` staged events moved straight to the outbox's dead letters with ERROR."""
    events = [
        NewEvent(aggregate_type="order", aggregate_id="k1", type="created", payload=i)
        for i in range(count)
    ]
    with engine.begin() as conn:
        stage_many(conn, events)
        t = outbox_schema.outbox
        conn.execute(sa.update(t).values(last_error=ERROR))
        names = [c.name for c in t.columns]
        conn.execute(
            sa.insert(outbox_schema.dead).from_select(
                [*names, "dead_at"], sa.select(*t.columns, sa.func.current_timestamp())
            )
        )
        conn.execute(sa.delete(t))
    return [str(e.id) for e in events]


def _card(page: str) -> str:
    match = re.search(r'<section class="card" id="dead-letters">(.*?)</section>', page, re.S)
    assert match is not None, page
    return match.group(1)


PAGES = {
    # page: (row attribute, per-row id field, first two headings)
    "/jobs": ("data-job", "job_id", ("Job", "Queue")),
    "/outbox": ("data-event", "event_id", ("Event", "Key")),
}


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_dead_letters_table_for_an_admin(
    page: str, client: TestClient, engine: sa.Engine
) -> None:
    attr, id_field, headings = PAGES[page]
    ids = await _dead_jobs(engine, 2) if page == "/jobs" else _dead_events(engine, 2)
    client.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
    card = _card(client.get(page).text)
    assert sorted(re.findall(rf'<tr {attr}="([^"]+)"', card)) == sorted(ids)
    assert re.findall(r"<th>([^<]*)</th>", card) == [
        *headings,
        "Attempts",
        "Last error",
        "Dead since",
        "",
    ]
    assert card.count("&lt;b&gt;refused&lt;/b&gt; &amp; gone") == 2 and "<b>refused" not in card
    for i in ids:
        assert f'name="{id_field}" value="{i}"' in card
    assert f'action="{page}/retry"' in card and f'action="{page}/purge"' in card
    assert 'name="expected" value="2"' in card and "Purge 2" in card
    assert "Delete 2 dead letters for good?" in card
    assert "No dead letters." not in card and "Showing the newest" not in card


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_dead_letters_table_for_a_reader_has_no_forms(
    page: str, client: TestClient, engine: sa.Engine
) -> None:
    attr, id_field, _ = PAGES[page]
    ids = await _dead_jobs(engine, 1) if page == "/jobs" else _dead_events(engine, 1)
    client.post("/login", data={"key": READ_KEY}, follow_redirects=False)
    card = _card(client.get(page).text)
    assert f'<tr {attr}="{ids[0]}">' in card
    assert "<form" not in card and id_field not in card and "csrf_token" not in card


@pytest.mark.parametrize("key", [ADMIN_KEY, READ_KEY], ids=["admin", "reader"])
@pytest.mark.parametrize("page", sorted(PAGES))
def test_no_dead_letters_spans_the_table(page: str, key: str, client: TestClient) -> None:
    client.post("/login", data={"key": key}, follow_redirects=False)
    card = _card(client.get(page).text)
    columns = card.count("<th>")
    assert f'<td colspan="{columns}">No dead letters.</td>' in card
    assert "<form" not in card
