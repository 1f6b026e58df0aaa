"""The demo's orders enqueue a confirmation job: 202 + status by id, retries, dead letters."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from safeship.db import create_engine
from safeship.db._migrate import upgrade
from safeship.demo.orders import BREAK_JOBS_FLAG, create_orders_app, demo_jobs, seed_flags
from safeship.flags.live import FlagClient
from safeship.flags.store import FlagStore
from safeship.jobs import dead_letters
from safeship.resilience import default_registry
from safeship.server import create_app
from tests.server.support import ADMIN_KEY, make_settings

ORDER = {"customer": "ada", "item": "tea", "quantity": 2}


async def _until_finished(
    get: Callable[[str], Awaitable[httpx.Response]], url: str, seconds: float = 20.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await get(url)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] in ("succeeded", "dead", "cancelled"):
            assert "retry-after" not in response.headers
            return body
        assert response.headers["retry-after"] == "1"  # still running: look again later
        assert asyncio.get_running_loop().time() < deadline, f"job never finished: {body}"
        await asyncio.sleep(0.05)


async def test_an_order_confirms_through_a_job_and_a_broken_mailer_lands_in_dead_letters(
    tmp_path: Path,
) -> None:
    # The orders app registers its "inventory" breaker process-wide: another test's app in
    # this process may still hold the name, so this test takes it and gives it back.
    default_registry.unregister("inventory")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = create_engine(url)
    upgrade(engine)
    store = FlagStore(engine)
    seed_flags(store)
    flags = FlagClient(store=store, push=False)
    jobs = demo_jobs(flags)
    app = create_orders_app(engine, flags, jobs=jobs)
    # A long lease: on a loaded machine a short one can expire under a running job, and
    # this test is about retries and dead letters, not about rescues.
    worker = jobs.worker(engine, poll=0.05, lease=15.0, heartbeat=0.5, listen=False)
    running = asyncio.create_task(worker.run())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            created = await client.post("/orders", json=ORDER)
            assert created.status_code == 201, created.text
            order = created.json()
            job = await _until_finished(client.get, f"/jobs/{order['confirmation_job']}")
            assert job["state"] == "succeeded" and job["attempts"] == 1
            assert job["result"]["order_id"] == order["id"]

            # Resending answers the jobs contract; the same Idempotency-Key is the same job.
            key = {"idempotency-key": f'"{uuid.uuid4()}"', "x-api-key": "shop-1"}
            resend = f"/orders/{order['id']}/confirmation"
            first = await client.post(resend, headers=key)
            again = await client.post(resend, headers=key)
            other = await client.post(resend, headers={**key, "idempotency-key": '"other"'})
            assert first.status_code == again.status_code == 202, first.text
            job_id = first.json()["id"]
            assert first.headers["location"] == f"/jobs/{job_id}"
            assert first.headers["retry-after"] == "1"
            assert again.json()["id"] == job_id and again.headers["location"] == f"/jobs/{job_id}"
            assert again.headers["idempotent-replayed"] == "true"
            assert other.status_code == 202
            assert (await client.post("/orders/999999/confirmation")).status_code == 404
            assert (await client.get(f"/jobs/{uuid.uuid4()}")).status_code == 404
            await _until_finished(client.get, f"/jobs/{job_id}")
            # The other key's job is this one while it runs, or a new one once it finished:
            # either way it finishes before the mailer breaks.
            await _until_finished(client.get, f"/jobs/{other.json()['id']}")

            # The fault switch: the confirmation fails, retries with backoff, then is dead.
            store.set_enabled(BREAK_JOBS_FLAG, True, actor="test", reason="break the mailer")
            flags.refresh(force=True)
            broken = (await client.post("/orders", json=ORDER)).json()
            dead = await _until_finished(client.get, f"/jobs/{broken['confirmation_job']}")
            assert dead["state"] == "dead" and dead["attempts"] == 3
            assert len(dead["errors"]) == 3
            assert all("mail server refused" in e["message"] for e in dead["errors"])
            listed = dead_letters(engine)
            assert [str(j.id) for j in listed] == [broken["confirmation_job"]]

        # The control plane's Jobs page shows the dead confirmation with its error.
        plane = create_app(make_settings(url), engine=engine, migrate=False, sample_interval=None)
        plane_transport = httpx.ASGITransport(app=plane)
        async with httpx.AsyncClient(transport=plane_transport, base_url="http://plane") as ops:
            await ops.post("/login", data={"key": ADMIN_KEY})
            page = await ops.get("/jobs")
        assert page.status_code == 200, page.text
        assert broken["confirmation_job"] in page.text and "mail server refused" in page.text
        assert re.search(r'data-queue="emails".*?data-stat="dead">1<', page.text, re.S)
    finally:
        worker.stop()
        await running
        flags.close()
        engine.dispose()
        default_registry.unregister("inventory")
