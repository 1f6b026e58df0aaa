"""Stateful property test: the breaker behaves exactly like the naive reference model."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from safeship.resilience import (
    Breaker,
    BreakerOpen,
    ConsecutiveFailures,
    CountWindow,
    TimeWindow,
)
from safeship.resilience.testing import FakeClock, TransitionRecorder
from tests.resilience.breaker_model import ModelBreaker, ModelConfig

RATES = ["0.25", "0.5", "0.7", "1"]


class BoomError(Exception):
    """A failure the breaker records."""


class IgnoredError(Exception):
    """Ignored by the breaker under test."""


class UnrecordedError(Exception):
    """Neither recorded nor ignored: counts as a success."""


@st.composite
def configs(draw: Any, kind: str) -> tuple[dict[str, Any], ModelConfig]:
    failure_rate = draw(st.sampled_from(RATES))
    slow_rate = draw(st.sampled_from(RATES))
    if kind == "consecutive":
        size = draw(st.integers(1, 4))
        window: Any = ConsecutiveFailures(size)
        minimum = 0
    elif kind == "count":
        size = draw(st.integers(1, 6))
        minimum = draw(st.integers(1, size))
        window = CountWindow(size, minimum_calls=minimum, failure_rate=float(failure_rate),
                             slow_call_rate=float(slow_rate))  # fmt: skip
    else:
        size = draw(st.integers(1, 4))
        minimum = draw(st.integers(1, 5))
        window = TimeWindow(size, minimum_calls=minimum, failure_rate=float(failure_rate),
                            slow_call_rate=float(slow_rate))  # fmt: skip
    half_open = draw(st.integers(1, 3))
    duration = float(draw(st.integers(1, 5)))
    multiplier = float(draw(st.sampled_from([1, 2])))
    cap = draw(st.sampled_from([None, 8.0])) if multiplier > 1 else None
    if cap is not None:
        cap = max(cap, duration)
    slow = draw(st.sampled_from([None, 2.0]))
    options = {
        "window": window,
        "half_open_calls": half_open,
        "open_duration": duration,
        "open_duration_multiplier": multiplier,
        "max_open_duration": cap,
        "slow_call_duration": slow,
        "ignore": (IgnoredError,),
        "record": (BoomError,),
    }
    model = ModelConfig(kind, size, minimum, Fraction(failure_rate), Fraction(slow_rate),
                        half_open, duration, multiplier, cap, slow)  # fmt: skip
    return options, model


class BreakerMachine(RuleBasedStateMachine):
    """Drive the real breaker and the model with the same calls, time and manual moves."""

    pending = Bundle("pending")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.recorder = TransitionRecorder()
        self.breaker: Breaker | None = None
        self.model: ModelBreaker | None = None

    kind = "consecutive"

    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        options, config = data.draw(configs(self.kind))
        self.breaker = Breaker(
            clock=self.clock, register=False, listeners=[self.recorder], **options
        )
        self.model = ModelBreaker(config)

    @property
    def real(self) -> Breaker:
        assert self.breaker is not None
        return self.breaker

    @property
    def spec(self) -> ModelBreaker:
        assert self.model is not None
        return self.model

    @rule(
        kind=st.sampled_from(["success", "failure", "ignored", "not_recorded"]),
        duration=st.sampled_from([0.0, 0.5, 3.0]),
    )
    def call(self, kind: str, duration: float) -> None:
        epoch = self.spec.admit(self.clock.monotonic())

        def work() -> str:
            self.clock.advance(duration)
            if kind == "failure":
                raise BoomError
            if kind == "ignored":
                raise IgnoredError
            if kind == "not_recorded":
                raise UnrecordedError
            return "ok"

        try:
            self.real.call(work)
            admitted = True
        except BreakerOpen:
            admitted = False
        except (BoomError, IgnoredError, UnrecordedError):
            admitted = True
        assert admitted == (epoch is not None)
        if epoch is not None:
            model_kind = "success" if kind == "not_recorded" else kind
            self.spec.record(epoch, self.clock.monotonic(), model_kind, duration)

    @rule(target=pending)
    def begin(self) -> Any:
        epoch = self.spec.admit(self.clock.monotonic())
        try:
            permit = self.real.allow()
        except BreakerOpen:
            permit = None
        assert (permit is None) == (epoch is None)
        return (permit, epoch, self.clock.monotonic())

    @rule(call=consumes(pending), kind=st.sampled_from(["success", "failure", "ignored"]))
    def finish(self, call: tuple[int | None, int | None, float], kind: str) -> None:
        permit, epoch, started = call
        if permit is None or epoch is None:
            return
        now = self.clock.monotonic()
        if kind == "success":
            self.real.record_success(permit, started, "ok")
        elif kind == "failure":
            self.real.record_exception(permit, started, BoomError())
        else:
            self.real.record_exception(permit, started, IgnoredError())
        self.spec.record(epoch, now, kind, now - started)

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(move=st.sampled_from(["force_open", "disable", "metrics_only", "reset"]))
    def manual(self, move: str) -> None:
        getattr(self.real, move)()
        target = {"force_open": "forced_open", "disable": "disabled", "reset": "closed"}.get(
            move, move
        )
        self.spec.manual(target)

    @invariant()
    def same_state(self) -> None:
        if self.breaker is None:
            return
        assert self.real.state.value == self.spec.state

    @invariant()
    def same_transitions(self) -> None:
        if self.breaker is None:
            return
        real = [(t.from_state.value, t.to_state.value) for t in self.recorder.transitions]
        assert real == self.spec.moves

    @invariant()
    def same_window(self) -> None:
        if self.breaker is None or self.spec.state not in ("closed", "metrics_only"):
            return
        window = self.real.snapshot()["window"]
        figures = (window["calls"], window["failures"], window["slow_calls"])
        assert figures == self.spec.figures(self.clock.monotonic())


class CountWindowMachine(BreakerMachine):
    kind = "count"


class TimeWindowMachine(BreakerMachine):
    kind = "time"


MODEL_SETTINGS = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConsecutiveFailuresMatchesModel = BreakerMachine.TestCase
TestConsecutiveFailuresMatchesModel.settings = MODEL_SETTINGS
TestCountWindowMatchesModel = CountWindowMachine.TestCase
TestCountWindowMatchesModel.settings = MODEL_SETTINGS
TestTimeWindowMatchesModel = TimeWindowMachine.TestCase
TestTimeWindowMatchesModel.settings = MODEL_SETTINGS
