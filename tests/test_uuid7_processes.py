"""Time-ordered ids across processes and threads, through real enqueues into PostgreSQL:
no id is ever drawn twice (the jobs' primary key would refuse it), each process sees its
own ids ascend (forked or spawned, with the clock stepping back, in huge batches), a forked
child neither repeats its parent's ids nor hangs on a draw the parent had in progress, and
a batch drawn right after the top of the last 62 bits is well formed and ascending."""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from safeship import _uuid7
from safeship._uuid7 import uuid7, uuid7s
from safeship.db import create_engine, upgrade
from safeship.jobs import JobContext, Jobs

_LOW = (1 << 62) - 1


def _jobs() -> Jobs:
    jobs = Jobs()

    @jobs.task(name="t")
    def t(ctx: JobContext, n: int) -> None:
        pass

    return jobs


def _enqueue_rounds(url: str, rounds: int) -> tuple[int, list[str]]:
    """In a process of its own: enqueue singles and batches from two threads, each thread
    in its own transactions; the ids this process drew, in the order it drew them."""
    engine = create_engine(url)
    jobs = _jobs()
    drawn: list[list[uuid.UUID]] = [[], []]
    start = threading.Barrier(2)
    failures: list[Exception] = []

    def run(out: list[uuid.UUID]) -> None:
        try:
            start.wait()
            for n in range(rounds):
                with engine.begin() as conn:
                    out.append(jobs.enqueue(conn, "t", {"n": n}))
                    out.extend(jobs.enqueue_many(conn, "t", [{"n": m} for m in range(n % 9)]))
        except Exception as exc:  # noqa: BLE001 - raised again in the parent, below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(out,)) for out in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    if failures:
        raise failures[0]
    # the two threads' ids interleave; each thread's own list is in draw order
    return os.getpid(), [str(i) for out in drawn for i in out] + ["|"] + [
        "ascending" if all(out == sorted(out) for out in drawn) else "not ascending"
    ]


@pytest.fixture
def jobs_url(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    upgrade(engine)
    engine.dispose()
    return postgres_url


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_and_threads_enqueue_distinct_ascending_ids(jobs_url: str, method: str) -> None:
    uuid7s(10)  # the parent holds random bytes and a last id a forked child inherits
    context = multiprocessing.get_context(method)
    processes = 4 if method == "fork" else 2  # a spawned child imports everything again
    with context.Pool(processes) as pool:
        results = pool.starmap(_enqueue_rounds, [(jobs_url, 30)] * 2 * processes)
    everything: list[str] = []
    for _pid, out in results:
        *ids, bar, verdict = out
        assert bar == "|" and verdict == "ascending"
        everything.extend(ids)
    assert len(everything) == len(set(everything))
    engine = create_engine(jobs_url)
    with engine.connect() as conn:
        stored = {str(r.id) for r in conn.execute(sa.text("SELECT id FROM safeship_jobs"))}
    engine.dispose()
    assert stored == set(everything)


@pytest.mark.postgres
def test_a_clock_stepping_back_mid_stream_keeps_enqueued_ids_ascending(
    jobs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_700_000_000_000_000_000]  # in the past: later tests' ids stay after these
    monkeypatch.setattr(_uuid7, "_last", 0)
    monkeypatch.setattr(_uuid7, "time", SimpleNamespace(time_ns=lambda: now[0]))
    jobs = _jobs()
    engine = create_engine(jobs_url)
    drawn: list[uuid.UUID] = []
    try:
        for step in range(30):
            with engine.begin() as conn:
                drawn.append(jobs.enqueue(conn, "t", {"n": step}))
                drawn.extend(jobs.enqueue_many(conn, "t", [{"n": m} for m in range(20)]))
            # forwards one millisecond, or back by up to ten seconds
            now[0] += 1_000_000 if step % 3 else -(step + 1) * 333_000_000
        with engine.connect() as conn:
            stored = [r.id for r in conn.execute(sa.text("SELECT id FROM safeship_jobs"))]
    finally:
        engine.dispose()
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn) == 30 * 21
    assert sorted(stored) == drawn
    assert {(i.version, i.variant) for i in drawn} == {(7, uuid.RFC_4122)}


@pytest.mark.postgres
def test_a_huge_batch_split_into_several_statements_keeps_its_order(jobs_url: str) -> None:
    jobs = _jobs()
    engine = create_engine(jobs_url)
    # 100,000 jobs of about 90 characters of arguments each: over 8 M characters, so the
    # batch goes in as several statements
    payload = [{"n": n, "pad": "x" * 80} for n in range(100_000)]
    inserts: list[str] = []

    def count(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "INSERT INTO safeship_jobs" in statement:
            inserts.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        before = uuid7()
        with engine.begin() as conn:
            ids = jobs.enqueue_many(conn, "t", payload)
        after = uuid7()
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, (args->>'n')::int AS n FROM safeship_jobs ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert len(inserts) >= 2  # the batch was split
    assert len(ids) == len(set(ids)) == 100_000
    assert [before, *ids, after] == sorted([before, *ids, after])
    assert [r.id for r in rows] == ids
    assert [r.n for r in rows] == list(range(100_000))  # id order is the batch's order


def _child_draw_finishes(seconds: float) -> bool:
    done = threading.Event()

    def draw() -> None:
        uuid7()
        done.set()

    threading.Thread(target=draw, daemon=True).start()
    return done.wait(seconds)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_during_a_draw_can_still_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    real = os.urandom
    inside, release = threading.Event(), threading.Event()

    def urandom(size: int) -> bytes:  # the drawing thread pauses inside its draw
        if os.getpid() == parent and threading.current_thread().name == "drawer":
            inside.set()
            release.wait(10)
        return real(size)

    monkeypatch.setattr(os, "urandom", urandom)
    monkeypatch.setattr(_uuid7, "_random", bytearray())  # the next draw reads the system
    drawer = threading.Thread(target=uuid7s, args=(1000,), name="drawer")
    drawer.start()
    try:
        assert inside.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: report whether a draw finishes, then leave at once
            os._exit(0 if _child_draw_finishes(1.0) else 1)
    finally:
        release.set()
        drawer.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_batch_after_the_very_top_of_the_low_bits_ascends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_700_000_000_000_000_000  # in the past: later tests' ids stay after these
    monkeypatch.setattr(_uuid7, "time", SimpleNamespace(time_ns=lambda: now))
    monkeypatch.setattr(_uuid7, "_last", 0)
    first = uuid7()
    # the last id: this millisecond, its 12 and its 62 random bits all ones
    monkeypatch.setattr(_uuid7, "_last", first.int | 0xFFF << 64 | _LOW)
    top = uuid.UUID(int=_uuid7._last)
    batch = uuid7s(3)
    assert {(i.version, i.variant) for i in batch} == {(7, uuid.RFC_4122)}
    assert [top, *batch] == sorted([top, *batch])
    assert len({top, *batch}) == 4


def test_a_single_draw_after_the_very_top_of_the_low_bits_ascends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_700_000_000_000_000_000
    monkeypatch.setattr(_uuid7, "time", SimpleNamespace(time_ns=lambda: now))
    monkeypatch.setattr(_uuid7, "_last", 0)
    first = uuid7()
    monkeypatch.setattr(_uuid7, "_last", first.int | 0xFFF << 64 | _LOW)
    top = uuid.UUID(int=_uuid7._last)
    drawn = [uuid7() for _ in range(20)]
    assert {(i.version, i.variant) for i in drawn} == {(7, uuid.RFC_4122)}
    assert [top, *drawn] == sorted([top, *drawn])
    assert len({top, *drawn}) == 21


def test_many_threads_mixing_huge_and_single_draws_never_repeat() -> None:
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(6)]
    start = threading.Barrier(6)

    def draw(out: list[uuid.UUID], big: bool) -> None:
        start.wait()
        for n in range(300):
            if big and n % 50 == 0:
                out.extend(uuid7s(5_000))
            elif n % 4 == 0:
                out.extend(uuid7s(n % 13))
            else:
                out.append(uuid7())

    threads = [
        threading.Thread(target=draw, args=(out, n % 2 == 0)) for n, out in enumerate(per_thread)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        assert out == sorted(out)
    assert {(i.version, i.variant) for i in everything} == {(7, uuid.RFC_4122)}


def _draw_in_child(count: int) -> tuple[int, list[Any]]:
    return os.getpid(), uuid7s(count) + [uuid7() for _ in range(count)]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_processes_draw_distinct_ids_ascending_per_process(method: str) -> None:
    uuid7s(50)
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(_draw_in_child, [500] * 8)
    everything = [i for _, ids in results for i in ids]
    assert len(set(everything)) == len(everything) == 8 * 1000
    by_process: dict[int, list[uuid.UUID]] = {}
    for pid, ids in results:  # map keeps the order tasks were given, which is draw order
        by_process.setdefault(pid, []).extend(ids)
    for ids in by_process.values():
        assert ids == sorted(ids)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SAFESHIP_SOAK"), reason="soak run: set SAFESHIP_SOAK=1")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_children_forked_while_a_thread_draws_big_batches_can_all_draw() -> None:
    """The same as the test above with nothing patched: a thread draws batches of 100,000
    ids (the lock is held while each batch's numbers are summed) while the main thread
    forks children that draw one id each; stop at the first child that cannot."""
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            uuid7s(100_000)

    drawer = threading.Thread(target=draw)
    drawer.start()
    hung = 0
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if _child_draw_finishes(1.0) else 1)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                hung += 1
                break
    finally:
        stop.set()
        drawer.join(30)
    assert hung == 0
