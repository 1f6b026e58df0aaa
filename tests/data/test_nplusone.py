"""The N+1 detector: ORM lazy loads and Core loops, sync and async, raise and log modes,
the allowlist and its stale entries, the ASGI middleware and the job hook."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from safeship.data import NPlusOneError
from safeship.data._fingerprint import fingerprint
from safeship.data._nplusone import (
    AllowEntry,
    NPlusOneDetector,
    NPlusOneMiddleware,
    detect_n_plus_one,
)
from safeship.testing import capture_logs


class Base(DeclarativeBase):
    pass


class Flag(Base):
    __tablename__ = "flag"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    rules: Mapped[list[Rule]] = relationship(back_populates="flag")


class Rule(Base):
    __tablename__ = "rule"
    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(sa.ForeignKey("flag.id"))
    flag: Mapped[Flag] = relationship(back_populates="rules")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    created = sa.create_engine(f"sqlite:///{tmp_path / 'n1.db'}")
    Base.metadata.create_all(created)
    with Session(created) as session:
        for i in range(20):
            session.add(Flag(id=i, name=f"f{i}", rules=[Rule(), Rule()]))
        session.commit()
    yield created
    created.dispose()


def lazy_listing(session: Session) -> int:
    return sum(len(flag.rules) for flag in session.scalars(sa.select(Flag)))


def test_a_lazy_loaded_relationship_raises_with_the_fix(engine: sa.Engine) -> None:
    with Session(engine) as session, pytest.raises(NPlusOneError) as caught, detect_n_plus_one():
        lazy_listing(session)
    report = caught.value.report
    assert "20 x SELECT" in report
    assert "selectinload(Flag.rules)" in report
    assert "test_nplusone.py" in report and "lazy_listing" in report


def test_the_batched_listing_is_clean(engine: sa.Engine) -> None:
    with Session(engine) as session, detect_n_plus_one():
        flags = session.scalars(sa.select(Flag).options(selectinload(Flag.rules))).all()
        assert sum(len(f.rules) for f in flags) == 40


def test_a_core_loop_suggests_any_ids(engine: sa.Engine) -> None:
    rule = Rule.__table__

    def rules_one_flag_at_a_time(conn: sa.Connection) -> None:
        for i in range(5):
            conn.execute(sa.select(rule).where(rule.c.flag_id == i)).all()

    with (
        engine.connect() as conn,
        pytest.raises(NPlusOneError, match="= ANY"),
        detect_n_plus_one(threshold=3),
    ):
        rules_one_flag_at_a_time(conn)


def test_the_same_statement_from_different_lines_is_not_one_loop(engine: sa.Engine) -> None:
    rule = Rule.__table__
    query = sa.select(rule).where(rule.c.flag_id == 1)
    with engine.connect() as conn, detect_n_plus_one(threshold=3):
        conn.execute(query).all()
        conn.execute(query).all()
        conn.execute(query).all()


def test_log_mode_logs_counts_and_samples(engine: sa.Engine) -> None:
    from prometheus_client import REGISTRY

    draws = iter([0.9, 0.1])  # the first unit is not sampled, the second is
    detector = NPlusOneDetector(mode="log", sample_rate=0.5, rng=lambda: next(draws))
    before = _metric_total(REGISTRY)
    with capture_logs() as logs, Session(engine) as session:
        with detector.unit("skipped"):
            lazy_listing(session)
        session.expire_all()
        with detector.unit("GET /flags"):
            lazy_listing(session)
    (record,) = logs.events("data.n_plus_one")
    assert record.unit == "GET /flags" and record.count == 20  # type: ignore[attr-defined]
    assert "selectinload" in record.suggestion  # type: ignore[attr-defined]
    assert _metric_total(REGISTRY) == before + 1


def _metric_total(registry: Any) -> float:
    total = 0.0
    for family in registry.collect():
        if family.name == "safeship_data_n_plus_one":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def test_allowlist_entries_suppress_until_they_expire(engine: sa.Engine) -> None:
    today = date(2026, 6, 1)
    live = AllowEntry("FROM rule", reason="report page, fixed in #42", expires=date(2026, 7, 1))
    never = AllowEntry("FROM nowhere", reason="an old loop, since removed")
    detector = NPlusOneDetector(mode="raise", allowlist=[live, never], today=lambda: today)
    with Session(engine) as session, detector.unit():
        lazy_listing(session)
    assert detector.stale_entries() == [(never, "unused")]
    today = date(2026, 7, 2)
    with Session(engine) as session, pytest.raises(NPlusOneError), detector.unit():
        lazy_listing(session)
    assert (live, "expired") in detector.stale_entries()


def test_an_allow_entry_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        AllowEntry("FROM rule", reason=" ")


def test_each_request_is_a_unit_of_the_middleware(engine: sa.Engine) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        with Session(engine) as session:
            if scope["path"] == "/lazy":
                lazy_listing(session)
            else:
                session.scalars(sa.select(Flag).options(selectinload(Flag.rules))).all()

    detector = NPlusOneDetector(mode="raise")
    wrapped = NPlusOneMiddleware(app, detector=detector)

    async def call(path: str) -> None:
        await wrapped({"type": "http", "method": "GET", "path": path}, None, None)

    asyncio.run(call("/batched"))
    with pytest.raises(NPlusOneError, match="GET /lazy"):
        asyncio.run(call("/lazy"))


def test_a_job_run_is_a_unit(engine: sa.Engine) -> None:
    detector = NPlusOneDetector(mode="raise")

    @detector.job
    def cleanup() -> int:
        with Session(engine) as session:
            return lazy_listing(session)

    @detector.job
    async def cleanup_async() -> int:
        return cleanup.__wrapped__()  # type: ignore[attr-defined,no-any-return]

    with pytest.raises(NPlusOneError, match="cleanup"):
        cleanup()
    with pytest.raises(NPlusOneError, match="cleanup_async"):
        asyncio.run(cleanup_async())


def test_statements_outside_a_unit_are_not_watched(engine: sa.Engine) -> None:
    NPlusOneDetector(mode="raise")
    with Session(engine) as session:
        assert lazy_listing(session) == 40


@pytest.mark.postgres
async def test_an_async_engine_loop_is_found_with_its_call_site(postgres_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url.replace("+psycopg", "+asyncpg"))
    try:

        async def one_at_a_time() -> None:
            async with engine.connect() as conn:
                for i in range(4):
                    await conn.execute(sa.text("SELECT CAST(:i AS integer) AS n"), {"i": i})

        with pytest.raises(NPlusOneError) as caught, detect_n_plus_one(threshold=3):
            await one_at_a_time()
        assert "in one_at_a_time" in caught.value.report
    finally:
        await engine.dispose()


@given(st.integers(), st.integers(min_value=1, max_value=30))
def test_values_and_list_lengths_share_one_fingerprint(value: int, size: int) -> None:
    ids = ", ".join(["?"] * size)
    assert fingerprint(f"SELECT * FROM t WHERE a = {abs(value)} AND b IN ({ids})") == (
        "SELECT * FROM t WHERE a = ? AND b IN (?)"
    )
    assert fingerprint("SELECT * FROM t WHERE id = $1 AND s = 'x''y'") == (
        "SELECT * FROM t WHERE id = ? AND s = ?"
    )
