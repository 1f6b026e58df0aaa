"""A named ``run_at`` is kept as given (no earlier than the write's now), single and bulk,
on SQLite and PostgreSQL; a delay counts from the database's now; bad times are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from safeship.jobs import Jobs
from safeship.jobs._schema import jobs as jobs_table


def _jobs() -> Jobs:
    jobs = Jobs()

    @jobs.task(name="t")
    def t(n: int) -> None:
        pass

    return jobs


def _run_ats(engine: sa.Engine) -> list[datetime]:
    with engine.connect() as conn:
        values = conn.execute(sa.select(jobs_table.c.run_at)).scalars().all()
    return [v if v.tzinfo else v.replace(tzinfo=UTC) for v in values]


def test_a_future_run_at_is_stored_as_given_single_and_bulk(engine: sa.Engine) -> None:
    jobs = _jobs()
    at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=123456)
    with engine.begin() as conn:
        jobs.enqueue(conn, "t", {"n": 0}, run_at=at)
        jobs.enqueue_many(conn, "t", [{"n": n} for n in range(1, 5)], run_at=at)
    assert _run_ats(engine) == [at] * 5


def test_a_past_run_at_runs_now(engine: sa.Engine) -> None:
    jobs = _jobs()
    before = datetime.now(UTC) - timedelta(seconds=1)  # slack for the database's clock
    with engine.begin() as conn:
        jobs.enqueue(conn, "t", {"n": 0}, run_at=datetime(2020, 1, 1, tzinfo=UTC))
        jobs.enqueue_many(conn, "t", [{"n": 1}], run_at=datetime(2020, 1, 1, tzinfo=UTC))
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert all(before <= at <= after for at in _run_ats(engine))


def test_a_delay_counts_from_the_write(engine: sa.Engine) -> None:
    jobs = _jobs()
    start = datetime.now(UTC)
    with engine.begin() as conn:
        jobs.enqueue(conn, "t", {"n": 0}, delay=60)
    (at,) = _run_ats(engine)
    assert start + timedelta(seconds=59) <= at <= datetime.now(UTC) + timedelta(seconds=61)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),  # noqa: DTZ001 - the point
        ({"run_at": datetime.now(UTC) + timedelta(days=400)}, "within 366 days"),
        ({"delay": 1, "run_at": datetime.now(UTC)}, "not both"),
        ({"delay": -1}, r"\[0 s, 366 days\]"),
        ({"delay": float("nan")}, r"\[0 s, 366 days\]"),
    ],
)
def test_bad_times_are_refused_before_anything_is_written(
    sqlite_engine: sa.Engine, options: dict[str, object], message: str
) -> None:
    jobs = _jobs()
    with sqlite_engine.begin() as conn:
        with pytest.raises(ValueError, match=message):
            jobs.enqueue(conn, "t", {"n": 0}, **options)
        with pytest.raises(ValueError, match=message):
            jobs.enqueue_many(conn, "t", [{"n": 0}], **options)
    assert _run_ats(sqlite_engine) == []
