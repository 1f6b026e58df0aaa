"""``purge_dead(..., expected=n)`` deletes only when exactly ``n`` dead letters match."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from safeship.jobs import JobContext, Jobs, PurgeMismatchError, count_dead, dead_letters, purge_dead
from safeship.jobs._store import Outcome
from safeship.jobs._worker import _store_for


async def _dead(engine: sa.Engine, task: str, count: int) -> list[uuid.UUID]:
    jobs = Jobs()

    @jobs.task(name=task, queue=f"q-{task}")
    def handler(ctx: JobContext, n: int) -> None:
        return None

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, handler, [{"n": i} for i in range(count)])
    store = _store_for(engine, listen=False)
    await store.open()
    try:
        claimed = await store.claim([f"q-{task}"], count, "purge-test", 30)
        assert len(claimed) == count
        error = json.dumps({"attempt": 1, "kind": "error", "message": "boom", "at": "now"})
        await store.finish([Outcome(c.id, c.token, "dead", error=error) for c in claimed])
    finally:
        await store.close()
    return list(ids)


async def test_a_purge_with_a_stale_count_deletes_nothing(engine: sa.Engine) -> None:
    task = f"t{uuid.uuid4().hex[:8]}"
    ids = await _dead(engine, task, 3)
    assert count_dead(engine, task=task) == 3
    with pytest.raises(PurgeMismatchError, match="3 dead letters match, not the 2 confirmed"):
        purge_dead(engine, task=task, expected=2)
    assert count_dead(engine, task=task) == 3
    # In the caller's transaction: the refused purge is rolled back even if the caller goes on.
    with engine.begin() as conn:
        with pytest.raises(PurgeMismatchError):
            purge_dead(conn, task=task, expected=4)
        assert count_dead(conn, task=task) == 3
    assert purge_dead(engine, ids=ids[:1], task=task, expected=1) == 1
    assert count_dead(engine, task=task) == 2
    assert purge_dead(engine, task=task, expected=2) == 2
    assert dead_letters(engine, task=task) == []
    assert purge_dead(engine, task=task) == 0  # no guard asked: deletes what matches
    with pytest.raises(ValueError, match="expected"):
        purge_dead(engine, task=task, expected=-1)
