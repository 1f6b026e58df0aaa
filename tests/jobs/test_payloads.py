"""A batch's rows: its arguments are encoded as one JSON array, held to the same rules as
one job, a bad payload anywhere in a write raises before any row is written, and its ids
are version-7 UUIDs ascending in batch order."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from safeship.jobs import Jobs, _enqueue
from safeship.jobs._enqueue import Row, write_async, write_sync
from safeship.jobs._model import (
    MAX_ARGS_BYTES,
    JobPayloadError,
    encode_args,
    encode_many,
    uuid7,
    uuid7s,
)

_text = st.text()
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(st.lists(st.dictionaries(_text, _json, max_size=5), max_size=20))
def test_a_batch_encodes_as_its_jobs_encodings_in_brackets(values: list[dict[str, Any]]) -> None:
    texts, first_error = [], None
    for value in values:
        try:
            texts.append(encode_args(value))
        except JobPayloadError as error:
            first_error = str(error)
            break
    if first_error is not None:  # the batch fails with the first bad job's error
        assert _error(encode_many, values) == first_error
    else:
        assert encode_many(values) == "[" + ",".join(texts) + "]"


def _error(function: Any, value: Any) -> str:
    with pytest.raises(JobPayloadError) as caught:
        function(value)
    return str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {1, 2}},  # not JSON
        {"x": math.nan},  # not JSON either (allow_nan is off)
        {"x": "a\x00b"},  # NUL
        {"x": "\ud800"},  # lone surrogate
        {"x": "y" * MAX_ARGS_BYTES},  # one job over the cap
    ],
    ids=["set", "nan", "nul", "surrogate", "too-big"],
)
def test_a_bad_job_in_a_batch_fails_as_it_would_alone(bad: dict[str, Any]) -> None:
    alone = _error(encode_args, bad)
    assert _error(encode_many, [{"n": 1}, bad, {"n": 2}]) == alone


def test_a_batch_over_the_cap_passes_when_every_job_is_within_it() -> None:
    values = [{"x": "y" * (MAX_ARGS_BYTES // 3)} for _ in range(4)]
    text = encode_many(values)
    assert len(text.encode()) > MAX_ARGS_BYTES
    assert text == "[" + ",".join(encode_args(v) for v in values) + "]"


def test_deep_jobs_that_only_fail_nested_in_a_list_still_encode() -> None:
    import sys

    depth = sys.getrecursionlimit() - 60
    deep: Any = 1
    for _ in range(depth):
        deep = [deep]
    try:
        alone = encode_args({"d": deep})
    except JobPayloadError:
        pytest.skip("this interpreter's encoder refuses the depth even alone")
    assert encode_many([{"d": deep}]) == f"[{alone}]"


def _count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM safeship_jobs")).scalar_one())


def test_a_bad_job_in_enqueue_many_writes_nothing(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(name="t")
    def t(ctx: Any, **_: Any) -> None: ...

    with engine.begin() as conn:
        with pytest.raises(JobPayloadError, match="NUL"):
            jobs.enqueue_many(conn, "t", [{"n": 1}, {"n": "\x00"}, {"n": 3}])
        assert _count(conn) == 0  # the transaction is still usable: no statement ran


def test_a_bad_payload_in_a_later_statement_writes_nothing(engine: sa.Engine) -> None:
    """Rows of two shapes are two statements; the second one's bad payload is found
    before the first one runs."""
    rows = [
        Row(uuid7(), "a", "q1", {"n": 1}, 0, 3, None, 0.0),
        Row(uuid7(), "a", "q1", {"n": 2}, 0, 3, None, 0.0),
        Row(uuid7(), "b", "q2", {"n": {1}}, 0, 3, None, 0.0),
        Row(uuid7(), "b", "q2", {"n": 4}, 0, 3, None, 0.0),
    ]
    with engine.begin() as conn:
        with pytest.raises(JobPayloadError, match="not JSON"):
            write_sync(conn, "sa", rows)
        assert _count(conn) == 0


def test_a_batchs_ids_ascend_in_its_order_and_are_distinct_version_7() -> None:
    ids = uuid7s(5000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {(i.version, i.variant) for i in ids} == {(7, "specified in RFC 4122")}
    assert uuid7s(0) == []


def test_enqueue_many_returns_ids_ascending_in_batch_order(engine: sa.Engine) -> None:
    jobs = Jobs()

    @jobs.task(name="t")
    def t(ctx: Any, **_: Any) -> None: ...

    with engine.begin() as conn:
        ids = jobs.enqueue_many(conn, "t", [{"n": n} for n in range(300)])
        stored = conn.execute(sa.text("SELECT id, args FROM safeship_jobs")).all()
    assert ids == sorted(ids)
    by_id = {str(row[0]).replace("-", ""): row[1] for row in stored}
    args = [by_id[i.hex] for i in ids]
    # SQLite hands the JSON column back as text, PostgreSQL as a decoded value
    decoded = [a if isinstance(a, dict) else json.loads(a) for a in args]
    assert decoded == [{"n": n} for n in range(300)]


@pytest.mark.postgres
async def test_a_run_too_long_for_one_jsonb_array_goes_in_as_several_statements(
    pg_url: str, pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    monkeypatch.setattr(_enqueue, "_MAX_ARRAY_CHARS", 100)  # 255 MB for real: too big here
    rows = [Row(i, "a", "q", {"n": n, "pad": "x" * 20}, 0, 3, None, 0.0) for n, i in
            enumerate(uuid7s(23))]  # fmt: skip
    statements = _enqueue._statements("asyncpg", rows)
    assert len(statements) > 1
    assert [r for s in statements for r in s.rows] == rows
    conn = await asyncpg.connect(pg_url.replace("postgresql+psycopg", "postgresql"))
    try:
        async with conn.transaction():
            assert await write_async(conn, "asyncpg", rows) == [r.id for r in rows]
    finally:
        await conn.close()
    with pg_engine.connect() as c:
        found = c.execute(sa.text("SELECT id, args FROM safeship_jobs")).all()
    stored: dict[Any, Any] = {row[0]: row[1] for row in found}
    assert [stored[r.id] for r in rows] == [r.args for r in rows]
