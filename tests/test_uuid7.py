"""Time-ordered ids: within a process every id is after the one before it, in single draws
and batches, across threads, with a stalled or stepped-back clock, and after a fork."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid

import pytest

from safeship import _uuid7
from safeship._uuid7 import uuid7, uuid7s


def _millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_single_and_batch_draws_interleaved_only_ascend() -> None:
    drawn: list[uuid.UUID] = []
    for round_ in range(300):
        drawn.append(uuid7())
        drawn.extend(uuid7s(round_ % 7))
        drawn.append(uuid7())
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)
    assert {(i.version, i.variant) for i in drawn} == {(7, uuid.RFC_4122)}


def test_a_frozen_or_stepped_back_clock_still_ascends(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000_000_000_000]  # in the past: later tests' ids stay after these
    monkeypatch.setattr(_uuid7, "_last", 0)
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    first = [uuid7() for _ in range(50)] + uuid7s(100)
    now[0] -= 5_000_000_000  # five seconds back
    after = [uuid7() for _ in range(50)] + uuid7s(100)
    drawn = first + after
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)
    # the ids stay in the clock's millisecond (the steps are far smaller than one)
    assert {_millis(i) for i in drawn} == {1_700_000_000_000}
    # and each step is random, not +1: the next id cannot be told from the last
    steps = {b.int - a.int for a, b in itertools.pairwise(first[:50])}
    assert len(steps) > 40


def test_threads_never_draw_the_same_id_and_each_sees_ascending_ids() -> None:
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def draw(out: list[uuid.UUID]) -> None:
        start.wait()
        for n in range(2000):
            if n % 10 == 0:
                out.extend(uuid7s(5))
            else:
                out.append(uuid7())

    threads = [threading.Thread(target=draw, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        assert out == sorted(out)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    uuid7()  # the parent has a buffer of random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw and report, then leave at once
        os.close(read)
        os.write(write, b"".join(i.bytes for i in uuid7s(50)))
        os._exit(0)
    os.close(write)
    parent = uuid7s(50)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    child = [uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)]
    assert len(child) == 50
    assert not set(child) & set(parent)


def test_ids_carry_the_clock() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= _millis(value) <= after
    assert uuid7s(0) == [] and uuid7s(-1) == []


@pytest.mark.parametrize("count", [1, 2, 4096, 4097, 100_000])
def test_batches_of_every_size_ascend_distinct_and_well_formed(count: int) -> None:
    before = uuid7()
    batch = uuid7s(count)
    after = uuid7()
    assert len(batch) == count
    assert [before, *batch, after] == sorted([before, *batch, after])
    assert len(set(batch)) == count
    assert {(i.version, i.variant) for i in batch} == {(7, uuid.RFC_4122)}


def test_a_batch_that_would_carry_past_the_last_62_bits_still_ascends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_700_000_000_000_000_000
    monkeypatch.setattr(time, "time_ns", lambda: now)
    monkeypatch.setattr(_uuid7, "_last", 0)
    first = uuid7()
    # the last id so far sits just below the top of its last 62 bits
    monkeypatch.setattr(_uuid7, "_last", first.int | (1 << 62) - 1 - 5)
    top = uuid.UUID(int=_uuid7._last)
    batch = uuid7s(500)
    single = uuid7()
    drawn = [top, *batch, single]
    assert drawn == sorted(drawn)
    assert len(set(drawn)) == len(drawn)
    assert {(i.version, i.variant) for i in [*batch, single]} == {(7, uuid.RFC_4122)}
    assert {_millis(i) for i in drawn} == {1_700_000_000_000}
