"""Circuit breaker behaviour: defaults, classification, fallback, manual states, events."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    BreakerRegistry,
    CountWindow,
    RateLimited,
    State,
    TimeWindow,
    all_breakers,
    default_registry,
    get_breaker,
)
from safeship.resilience._metrics import BreakerCollector
from safeship.resilience.testing import FakeClock, TransitionRecorder


class DownError(Exception):
    pass


def fail() -> None:
    raise DownError("dependency down")


def ok() -> str:
    return "ok"


def trip(breaker: Breaker, times: int = 5) -> None:
    for _ in range(times):
        with pytest.raises(DownError):
            breaker.call(fail)


def test_defaults_open_after_five_failures_for_sixty_seconds_and_close_after_two_trials(
    clock: FakeClock, name: str
) -> None:
    breaker = Breaker(name, clock=clock, registry=default_registry)
    trip(breaker, 4)
    assert breaker.state is State.CLOSED
    trip(breaker, 1)
    assert breaker.state is State.OPEN
    clock.advance(59.9)
    with pytest.raises(BreakerOpen) as rejected:
        breaker.call(ok)
    assert rejected.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.HALF_OPEN
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


def test_a_success_resets_the_run_of_failures(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    trip(breaker, 4)
    breaker.call(ok)
    trip(breaker, 4)
    assert breaker.state is State.CLOSED


def test_a_failed_trial_reopens_and_the_open_duration_grows_up_to_its_cap(clock: FakeClock) -> None:
    breaker = Breaker(
        clock=clock,
        register=False,
        open_duration=10,
        open_duration_multiplier=2,
        max_open_duration=25,
    )
    trip(breaker)
    durations = []
    for _ in range(3):
        durations.append(breaker.open_remaining())
        clock.advance(breaker.open_remaining() or 0)
        with pytest.raises(DownError):
            breaker.call(fail)
    assert durations == [10, 20, 25]
    clock.advance(25)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is State.CLOSED
    trip(breaker)
    assert breaker.open_remaining() == 10  # growth starts over after closing


def test_ignored_exceptions_and_rejections_do_not_count(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, ignore=(KeyError,))

    def missing() -> None:
        raise KeyError("x")

    def limited() -> None:
        raise RateLimited("upstream", 1.0)

    for _ in range(10):
        with pytest.raises(KeyError):
            breaker.call(missing)
        with pytest.raises(RateLimited):
            breaker.call(limited)
    assert breaker.state is State.CLOSED
    assert breaker.counts()["ignored"] == 20


def test_unrecorded_exceptions_count_as_successes(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, record=(ConnectionError,))
    for _ in range(10):
        with pytest.raises(ValueError, match="bad input"):
            breaker.call(lambda: (_ for _ in ()).throw(ValueError("bad input")))
    assert breaker.state is State.CLOSED
    assert breaker.counts()["success"] == 10


def test_the_result_predicate_counts_5xx_but_not_4xx(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, failure_result=lambda status: status >= 500)
    for _ in range(10):
        assert breaker.call(lambda: 404) == 404
    assert breaker.state is State.CLOSED
    for _ in range(5):
        assert breaker.call(lambda: 503) == 503
    assert breaker.state is State.OPEN


def test_slow_calls_open_a_rate_window(clock: FakeClock) -> None:
    breaker = Breaker(
        clock=clock,
        register=False,
        window=CountWindow(4, failure_rate=1.0, slow_call_rate=0.5),
        slow_call_duration=1.0,
    )

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    breaker.call(ok)
    breaker.call(ok)
    breaker.call(slow)
    assert breaker.state is State.CLOSED
    breaker.call(slow)
    assert breaker.state is State.OPEN
    assert breaker.snapshot()["transitions"][-1]["reason"] == "slow-call threshold"


def test_fallback_answers_rejections_and_recorded_failures(clock: FakeClock) -> None:
    seen: list[str] = []

    def fallback(exc: BaseException) -> str:
        seen.append(type(exc).__name__)
        return "cached"

    breaker = Breaker(clock=clock, register=False, fallback=fallback)
    guarded = breaker(fail)
    for _ in range(6):
        assert guarded() == "cached"
    assert seen == ["DownError"] * 5 + ["BreakerOpen"]


def test_fallback_value_and_unrecorded_errors_pass_through(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, fallback=0, record=(DownError,))

    @breaker
    def wrong(value: int) -> int:
        if value < 0:
            raise ValueError("negative")
        raise DownError

    assert wrong(1) == 0
    with pytest.raises(ValueError, match="negative"):
        wrong(-1)


async def test_async_breaker_with_async_fallback(clock: FakeClock) -> None:
    async def fallback(exc: BaseException) -> str:
        await asyncio.sleep(0)
        return "stale"

    breaker = Breaker(clock=clock, register=False, fallback=fallback)

    @breaker
    async def fetch(flag: bool) -> str:
        await asyncio.sleep(0)
        if flag:
            raise DownError
        return "fresh"

    assert await fetch(False) == "fresh"
    assert [await fetch(True) for _ in range(5)] == ["stale"] * 5
    assert breaker.state is State.OPEN
    assert await fetch(False) == "stale"


async def test_a_cancelled_trial_gives_its_slot_back(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False, half_open_calls=1)
    trip(breaker)
    clock.advance(60)
    started = asyncio.Event()

    @breaker
    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(hang())
    await started.wait()
    with pytest.raises(BreakerOpen):
        breaker.call(ok)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


def test_manual_states_override_everything(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    breaker.force_open()
    with pytest.raises(BreakerOpen) as rejected:
        breaker.call(ok)
    assert rejected.value.retry_after is None
    clock.advance(3600)
    with pytest.raises(BreakerOpen):
        breaker.call(ok)
    breaker.disable()
    trip(breaker, 50)
    assert breaker.state is State.DISABLED
    breaker.metrics_only()
    trip(breaker, 50)
    assert breaker.state is State.METRICS_ONLY
    assert breaker.snapshot()["window"]["failures"] == 50
    breaker.reset()
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["window"]["calls"] == 0


def test_listeners_get_every_transition_and_a_broken_one_is_contained(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = TransitionRecorder()

    def broken(_: Any) -> None:
        raise RuntimeError("listener bug")

    breaker = Breaker(clock=clock, register=False, listeners=[broken, recorder], half_open_calls=1)
    trip(breaker)
    clock.advance(60)
    breaker.call(ok)
    assert recorder.states == ["open", "half_open", "closed"]
    assert [t.reason for t in recorder.transitions] == [
        "consecutive failures",
        "open duration elapsed",
        "trial calls succeeded",
    ]
    assert "resilience.breaker.listener_failed" in caplog.text


def test_opening_logs_at_the_alert_level(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="safeship.resilience")
    breaker = Breaker("payments-alert", clock=clock, registry=default_registry)
    trip(breaker)
    alerts = [r for r in caplog.records if r.levelno == 45]
    assert [r.getMessage() for r in alerts] == ["resilience.breaker.opened"]
    assert alerts[0].levelname == "ALERT"
    assert alerts[0].breaker == "payments-alert"  # type: ignore[attr-defined]


def test_snapshot_is_json_and_describes_the_window(clock: FakeClock, name: str) -> None:
    breaker = Breaker(
        name, clock=clock, window=TimeWindow(10, minimum_calls=4), registry=default_registry
    )
    breaker.call(ok)
    trip(breaker, 3)
    snapshot = breaker.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["state"] == "open"
    assert snapshot["window"]["kind"] == "time"
    assert snapshot["open_remaining"] == 60
    assert snapshot["totals"]["failure"] == 3
    assert snapshot["transitions"][0]["at_iso"].startswith("2023-11-14T")
    clock.advance(60)
    breaker.call(ok)
    assert breaker.snapshot()["half_open"] == {
        "permitted": 2,
        "admitted": 1,
        "completed": 1,
        "failures": 0,
    }


def test_registry_lists_breakers_and_refuses_duplicates(name: str) -> None:
    breaker = Breaker(name, registry=default_registry)
    assert get_breaker(name) is breaker
    assert breaker in all_breakers()
    with pytest.raises(ValueError, match="already exists"):
        Breaker(name, registry=default_registry)
    with pytest.raises(KeyError, match="no circuit breaker named"):
        get_breaker(name + "-missing")


def test_metrics_are_exported_at_scrape_time(clock: FakeClock, name: str) -> None:
    breaker = Breaker(name, clock=clock, registry=default_registry)
    breaker.call(ok)
    trip(breaker)
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            breaker.call(ok)
    target = CollectorRegistry()
    target.register(BreakerCollector())
    text = generate_latest(target).decode()
    assert f'safeship_breaker_state{{breaker="{name}",state="open"}} 1.0' in text
    assert f'safeship_breaker_calls_total{{breaker="{name}",outcome="failure"}} 5.0' in text
    assert f'safeship_breaker_calls_total{{breaker="{name}",outcome="success"}} 1.0' in text
    assert f'safeship_breaker_rejected_total{{breaker="{name}"}} 3.0' in text
    assert (
        f'safeship_breaker_transitions_total{{breaker="{name}",from_state="closed",'
        f'to_state="open"}} 1.0'
    ) in text


def test_guard_protects_a_block(clock: FakeClock) -> None:
    breaker = Breaker(clock=clock, register=False)
    for _ in range(5):
        with pytest.raises(DownError), breaker:
            raise DownError
    with pytest.raises(BreakerOpen), breaker:
        pass


def test_decorated_functions_keep_their_name_and_signature(clock: FakeClock) -> None:
    import inspect

    breaker = Breaker(clock=clock, register=False)

    @breaker
    def send(to: str, *, body: str) -> str:
        """Send a message."""
        return f"{to}:{body}"

    assert send.__name__ == "send"
    assert send.__doc__ == "Send a message."
    assert list(inspect.signature(send).parameters) == ["to", "body"]
    assert send("bob", body="hi") == "bob:hi"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"open_duration": 0}, "open_duration"),
        ({"open_duration_multiplier": 0.5}, "open_duration_multiplier"),
        ({"open_duration": 10, "max_open_duration": 5}, "max_open_duration"),
        ({"half_open_calls": 0}, "half_open_calls"),
        ({"slow_call_duration": -1}, "slow_call_duration"),
    ],
)
def test_bad_settings_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Breaker(register=False, **options)


def test_record_must_be_exception_classes() -> None:
    with pytest.raises(TypeError, match=r"Breaker\.record"):
        Breaker(register=False, record=("DownError",))  # type: ignore[arg-type]


def test_a_count_window_opened_by_a_success_stays_open_for_its_duration() -> None:
    from safeship.resilience import BreakerOpen, CountWindow
    from safeship.resilience.testing import FakeClock

    clock = FakeClock()
    clock.advance(1000.0)
    breaker = Breaker(window=CountWindow(calls=2, failure_rate=0.25), open_duration=5.0,
                      clock=clock, register=False)  # fmt: skip

    class DownError(Exception):
        pass

    def fail() -> None:
        raise DownError

    with pytest.raises(DownError):
        breaker.call(fail)
    breaker.call(lambda: "ok")  # the window fills on a success: 1 of 2 failed, over 25%
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: "ok")
    clock.advance(5.0)
    assert breaker.call(lambda: "ok") == "ok"  # half-open trial after the open duration


def test_a_breaker_nothing_uses_leaves_the_registry_without_waiting_for_the_collector(
    name: str,
) -> None:
    import gc
    import weakref

    gc.disable()
    try:
        breaker = Breaker(name, registry=default_registry)
        guarded = breaker(ok)
        guarded()
        with breaker:
            pass
        alive = weakref.ref(breaker)
        del breaker, guarded
        assert alive() is None
        with pytest.raises(KeyError):
            get_breaker(name)
    finally:
        gc.enable()


def test_a_breaker_joins_the_registry_it_is_given_and_none_when_told(name: str) -> None:
    from safeship.resilience._default_registry import BreakerRegistry

    own = BreakerRegistry()
    breaker = Breaker(name, registry=own)
    assert own.get(name) is breaker
    assert breaker not in all_breakers()
    assert Breaker(name, registry=None) not in all_breakers()
    with pytest.raises(ValueError, match="register=False"):
        Breaker(name, register=False, registry=own)


def test_a_breaker_built_without_a_registry_warns_and_still_joins_the_default_one(
    name: str,
) -> None:
    with pytest.warns(DeprecationWarning, match="registry=default_registry"):
        breaker = Breaker(name)
    assert get_breaker(name) is breaker


def test_registry_none_joins_nothing_and_says_nothing(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Breaker(name, registry=None)
    assert default_registry.find(name) is None


def test_get_or_create_registers_the_built_breaker_in_its_own_registry_only(name: str) -> None:
    own = BreakerRegistry()
    built = own.get_or_create(name, lambda: Breaker(name, registry=None))
    assert own.get(name) is built
    assert own.get_or_create(name, lambda: Breaker(name, registry=None)) is built
    assert default_registry.find(name) is None
