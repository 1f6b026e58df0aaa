"""``read_count`` reads how often a ``count()`` was advanced, without advancing it."""

from __future__ import annotations

import itertools
import threading

from safeship._counting import read_count


def test_reading_a_count_tells_how_often_it_advanced_and_does_not_advance_it() -> None:
    count = itertools.count()
    assert read_count(count) == 0
    for _ in range(1234):
        next(count)
    assert read_count(count) == read_count(count) == 1234


def test_counts_from_many_threads_lose_nothing() -> None:
    count = itertools.count()

    def work() -> None:
        for _ in range(20_000):
            next(count)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_count(count) == 80_000
