"""BreakerReporter starts nothing in its constructor: start()/close() and the context
managers run it; the old ``start=True`` still starts it, with a DeprecationWarning."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from safeship.resilience.board import BreakerReporter
from safeship.testing import memory_engine


def _reporter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "safeship-breakers" and t.is_alive()]


def test_the_constructor_starts_no_thread_and_touches_no_database() -> None:
    engine = memory_engine()
    checkouts: list[object] = []
    sa.event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    reporter = BreakerReporter(engine, service="orders", interval=0.05)
    assert not reporter.running and _reporter_threads() == [] and checkouts == []
    reporter.close()  # closing a reporter never started is fine
    reporter.report_once()  # the listener does see the database being used
    assert checkouts


def test_start_and_close_run_and_stop_the_thread() -> None:
    reporter = BreakerReporter(memory_engine(), service="orders", interval=0.05)
    reporter.start()
    reporter.start()  # a second start keeps the one thread
    assert reporter.running and len(_reporter_threads()) == 1
    reporter.close()
    assert not reporter.running and _reporter_threads() == []


def test_with_block_starts_and_stops_it() -> None:
    with BreakerReporter(memory_engine(), service="orders", interval=0.05) as reporter:
        assert reporter.running
    assert not reporter.running


async def test_async_with_block_starts_and_stops_it() -> None:
    async with BreakerReporter(memory_engine(), service="orders", interval=0.05) as reporter:
        assert reporter.running
    assert not reporter.running


def test_start_true_still_starts_but_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match=r"reporter\.start\(\)"):
        reporter = BreakerReporter(memory_engine(), service="orders", interval=0.05, start=True)
    assert reporter.running
    reporter.close()
