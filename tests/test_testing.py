"""``safeship.testing``: the helpers users test their own code with."""

from __future__ import annotations

import logging

from safeship.flags.live import FlagClient
from safeship.testing import capture_logs, fixed_flags, memory_flag_store


def test_memory_flag_store_serves_a_live_client() -> None:
    store = memory_flag_store({"on-flag": True, "off-flag": False})
    with FlagClient(store=store, poll_interval=5) as client:
        assert client.is_enabled("on-flag") and not client.is_enabled("off-flag")
        store.set_enabled("off-flag", True, actor="test")
        assert client.refresh() and client.is_enabled("off-flag")


def test_capture_logs_collects_safeship_events() -> None:
    with capture_logs() as logs:
        logging.getLogger("safeship.flags").warning("flags.degraded store unreachable")
        logging.getLogger("other").warning("not captured")
    assert [r.getMessage() for r in logs.events("flags.degraded")] == [
        "flags.degraded store unreachable"
    ]
    assert logs.messages() == ["flags.degraded store unreachable"]


def test_fixed_flags_is_reexported() -> None:
    assert fixed_flags({"x": True}).is_enabled("x")
