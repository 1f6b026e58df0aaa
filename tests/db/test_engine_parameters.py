"""A failing statement's error names the statement, never its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.db import create_engine


def _failing_insert(engine: sa.Engine) -> str:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x INTEGER NOT NULL UNIQUE)"))
        conn.execute(sa.text("INSERT INTO t (x) VALUES (4111)"))
    with pytest.raises(sa.exc.IntegrityError) as failure, engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO t (x) VALUES (:card)"), {"card": 4111, "email": "a@b.example"}
        )
    return str(failure.value)


def test_sqlite_errors_hide_statement_parameters(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        text = _failing_insert(engine)
    finally:
        engine.dispose()
    assert "INSERT INTO t" in text and "4111" not in text.split("[SQL:")[1]
    assert "hidden due to hide_parameters" in text


@pytest.mark.postgres
def test_postgres_errors_hide_statement_parameters(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        text = _failing_insert(engine)
    finally:
        engine.dispose()
    assert "hidden due to hide_parameters" in text
