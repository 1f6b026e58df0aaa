"""The demo's listing: legacy and candidate agree; the injected fault only hits the candidate."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from safeship.demo.orders import orders, orders_metadata
from safeship.demo.polling import CandidateFaultError, polling_rollout
from safeship.rollouts import ShadowOptions


def test_shadow_listing_matches_and_a_broken_candidate_never_hurts(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    orders_metadata.create_all(engine)
    with engine.begin() as conn:
        for i in range(5):
            conn.execute(sa.insert(orders).values(customer="ada", item=f"i{i}", quantity=1,
                                                  created_at=datetime.now(UTC)))  # fmt: skip
    broken = False
    rollout = polling_rollout(engine, None, is_broken=lambda: broken,
                              shadow=ShadowOptions(off_path=False))  # fmt: skip
    assert len(rollout("ada")) == 5
    assert rollout.shadow.stats.matches == 1
    broken = True
    assert len(rollout("ada")) == 5
    assert rollout.shadow.stats.candidate_errors == 1
    rollout.mode = "on"
    with pytest.raises(CandidateFaultError):
        rollout("ada")
    engine.dispose()
