"""``safeship_sdk_clients``: registrations and reported counts, shared by every replica."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import create_engine, upgrade
from safeship.server.sdk_clients import Registration, SdkClientStore


def registration(instance: str, version: str = "unleash-python:6") -> Registration:
    return Registration("shop", instance, version, "prod", ("default",), None, 15000)


def test_registration_replaces_what_an_instance_said_and_keeps_its_count(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(engine)
    store = SdkClientStore(engine)
    store.reported("shop", "i-1", 7)  # a report before any registration makes the row
    store.register(registration("i-1"))
    store.register(registration("i-1", "unleash-python:7"))
    store.register(registration("i-2"))
    rows = {row["instance_id"]: row for row in store.newest()}
    assert rows["i-1"]["sdk_version"] == "unleash-python:7" and rows["i-1"]["evaluations"] == 7
    assert rows["i-2"]["evaluations"] == 0 and rows["i-2"]["strategies"] == ["default"]
    engine.dispose()


@pytest.mark.postgres
def test_concurrent_reports_from_replicas_lose_no_count(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    upgrade(engine)
    stores = [SdkClientStore(engine) for _ in range(4)]  # four control-plane replicas
    start = threading.Barrier(len(stores))

    def report(store: SdkClientStore) -> None:
        start.wait()
        for _ in range(50):
            store.reported("shop", "i-1", 3)

    threads = [threading.Thread(target=report, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT evaluations FROM safeship_sdk_clients")).scalar_one()
    assert total == 4 * 50 * 3
    engine.dispose()
