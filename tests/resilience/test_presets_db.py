"""Whole-transaction retry against the real PostgreSQL: a real deadlock, a real conflict."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from safeship.resilience import RetryEvent
from safeship.resilience.presets.db import (
    is_transaction_conflict,
    run_transaction,
    run_transaction_async,
    sqlstate_of,
    transaction_retry,
)

pytestmark = pytest.mark.postgres


Setup = Callable[[list[str]], sa.Engine]


@pytest.fixture
def setup(postgres_url: str) -> Iterator[Setup]:
    """Make a SERIALIZABLE engine on the test database after running ``ddl``; every engine
    it made is disposed when the test ends, passed or failed."""
    made: list[sa.Engine] = []

    def make(ddl: list[str]) -> sa.Engine:
        engine = sa.create_engine(postgres_url, isolation_level="SERIALIZABLE")
        made.append(engine)
        with engine.begin() as conn:
            for statement in ddl:
                conn.execute(sa.text(statement))
        return engine

    yield make
    for engine in made:
        engine.dispose()


def test_a_real_deadlock_is_retried_and_both_transfers_commit(setup: Setup) -> None:
    engine = setup(
        [
            "CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL)",
            "INSERT INTO account VALUES (1, 100), (2, 100)",
        ],
    )
    both_locked = threading.Barrier(2, timeout=10)
    retried: list[RetryEvent] = []
    errors: list[BaseException] = []

    def transfer(source: int, target: int) -> None:
        attempts = 0

        def work(conn: sa.Connection) -> None:
            nonlocal attempts
            attempts += 1
            conn.execute(sa.text("SET LOCAL deadlock_timeout = '100ms'"))
            conn.execute(
                sa.text("UPDATE account SET balance = balance - 10 WHERE id = :id"), {"id": source}
            )
            if attempts == 1:
                both_locked.wait()  # each holds its first row: the second update deadlocks
            conn.execute(
                sa.text("UPDATE account SET balance = balance + 10 WHERE id = :id"), {"id": target}
            )

        try:
            run_transaction(engine.begin, work, retry=transaction_retry(on_retry=retried.append))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=transfer, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    codes = [sqlstate_of(event.exception) for event in retried if event.exception]
    # The deadlock victim is retried; its retry may then meet the winner's commit as a
    # serialization failure, which is retried too.
    assert codes[:1] == ["40P01"] and set(codes[1:]) <= {"40001"}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, balance FROM account"))
        balances: dict[int, int] = {row[0]: row[1] for row in rows}
    assert balances == {1: 100, 2: 100}


def test_a_serialization_conflict_is_retried_with_fresh_reads(setup: Setup) -> None:
    engine = setup(
        [
            "CREATE TABLE doctor (name text PRIMARY KEY, on_call bool NOT NULL)",
            "INSERT INTO doctor VALUES ('alice', true), ('bob', true)",
        ],
    )
    both_read = threading.Barrier(2, timeout=10)
    retried: list[RetryEvent] = []
    errors: list[BaseException] = []

    def go_home(doctor: str) -> None:
        attempts = 0

        def work(conn: sa.Connection) -> None:
            nonlocal attempts
            attempts += 1
            on_call = conn.execute(
                sa.text("SELECT count(*) FROM doctor WHERE on_call")
            ).scalar_one()
            if attempts == 1:
                both_read.wait()  # both saw two doctors on call: write skew
            if on_call >= 2:
                conn.execute(
                    sa.text("UPDATE doctor SET on_call = false WHERE name = :n"), {"n": doctor}
                )

        try:
            run_transaction(engine.begin, work, retry=transaction_retry(on_retry=retried.append))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=go_home, args=(doctor,)) for doctor in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert [sqlstate_of(event.exception) for event in retried if event.exception] == ["40001"]
    with engine.connect() as conn:
        still = conn.execute(sa.text("SELECT count(*) FROM doctor WHERE on_call")).scalar_one()
    assert still == 1


async def test_the_async_twin_retries_a_conflict(postgres_url: str, setup: Setup) -> None:
    from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

    setup(["CREATE TABLE counter (id int PRIMARY KEY, n int)", "INSERT INTO counter VALUES (1, 0)"])
    engine = create_async_engine(postgres_url, isolation_level="SERIALIZABLE")
    both_read = asyncio.Barrier(2)
    retried: list[RetryEvent] = []

    async def bump() -> None:
        attempts = 0

        async def work(conn: AsyncConnection) -> None:
            nonlocal attempts
            attempts += 1
            n = (await conn.execute(sa.text("SELECT n FROM counter WHERE id = 1"))).scalar_one()
            if attempts == 1:
                await asyncio.wait_for(both_read.wait(), 10)
            await conn.execute(sa.text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})

        await run_transaction_async(
            engine.begin, work, retry=transaction_retry(on_retry=retried.append)
        )

    try:
        await asyncio.wait_for(asyncio.gather(bump(), bump()), 30)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT n FROM counter"))).scalar_one() == 2
    finally:
        await engine.dispose()
    assert len(retried) == 1


def test_other_database_errors_are_not_retried(setup: Setup) -> None:
    engine = setup([])
    attempts = 0

    def work(conn: sa.Connection) -> Any:
        nonlocal attempts
        attempts += 1
        return conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(sa.exc.ProgrammingError) as caught:
        run_transaction(engine.begin, work)
    assert attempts == 1
    assert sqlstate_of(caught.value) == "42P01"
    assert not is_transaction_conflict(caught.value)
