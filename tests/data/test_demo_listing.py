"""The demo's showcase change under the N+1 detector: the legacy listing (one query per
order) is flagged with its call site and the fix, the batched listing is clean."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.data import NPlusOneError
from safeship.demo.orders import orders, orders_metadata
from safeship.demo.polling import list_orders_batched, list_orders_n_plus_one
from safeship.testing import detect_n_plus_one


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    created = sa.create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    orders_metadata.create_all(created)
    now = datetime.now(UTC)
    with created.begin() as conn:
        conn.execute(
            sa.insert(orders),
            [
                {"customer": "ada", "item": "tea", "quantity": i, "created_at": now}
                for i in range(12)
            ],
        )
    yield created
    created.dispose()


def test_the_demos_n_plus_one_listing_is_flagged(engine: sa.Engine) -> None:
    with pytest.raises(NPlusOneError) as caught, detect_n_plus_one():
        list_orders_n_plus_one(engine, "ada")
    assert "12 x SELECT" in caught.value.report
    assert (
        "polling.py" in caught.value.report and "in list_orders_n_plus_one" in caught.value.report
    )
    assert "= ANY(:ids)" in caught.value.report


def test_the_demos_batched_listing_is_clean(engine: sa.Engine) -> None:
    with detect_n_plus_one():
        assert len(list_orders_batched(engine, "ada")) == 12
