"""Fixtures of the data-layer tests: an events table on SQLite or a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa


def events_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.Integer, sa.CheckConstraint("amount >= 0"), nullable=False),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A sync engine on SQLite (a file, so threads share it) or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    created = sa.create_engine(url)
    yield created
    created.dispose()


@pytest.fixture
def events(engine: sa.Engine) -> sa.Table:
    metadata = sa.MetaData()
    table = events_table(metadata)
    metadata.create_all(engine)
    return table


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
