"""The circuit breaker: stop calling a dependency that is failing, try it again later.

A breaker is CLOSED while the dependency is healthy: calls run concurrently (no lock is
held while they run) and their outcomes feed a judging window (see
:mod:`safeship.resilience._windows`). When the window's thresholds are reached it OPENS:
calls are rejected at once with a fresh :class:`~safeship.resilience.BreakerOpen` (or
answered by ``fallback=``) for ``open_duration`` seconds, optionally growing each time
the breaker reopens. Then it turns HALF_OPEN and admits exactly ``half_open_calls`` trial
calls, however many threads or tasks arrive at once; their outcomes close it or open it
again. Manual states (forced open, disabled, metrics-only) override all of this until
:meth:`Breaker.reset`.

Which outcomes count: an exception that is an instance of ``ignore`` (or a policy's own
:class:`~safeship.resilience.Rejected`, or a ``BaseException`` such as cancellation) is
ignored; one that is an instance of ``record`` is a failure; any other exception means
the dependency answered, so it counts as a success. ``failure_result`` marks returned
values as failures (say, HTTP 5xx responses); a predicate that raises marks its call a
failure. With ``slow_call_duration`` set, calls that take at least that long are also
counted as slow.

Layers: the state machine is :class:`~safeship.resilience._breaker_core.BreakerCore`
(pure, clock injected); :mod:`~safeship.resilience._breaker_calls` drives it around sync
and async calls; this facade classifies outcomes, tells listeners (the log line first)
and joins a :class:`~safeship.resilience._default_registry.BreakerRegistry`.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from safeship.resilience import _metrics as metrics
from safeship.resilience._breaker_calls import (
    NO_RESULT,
    BlockGuard,
    Driving,
    drive_async,
    drive_sync,
)
from safeship.resilience._breaker_core import BreakerCore, OpenPolicy
from safeship.resilience._breaker_support import (
    check_durations,
    check_name,
    check_positive_int,
    check_seconds,
    check_types,
    log_transition,
)
from safeship.resilience._breaker_types import BreakerSnapshot, State, Transition
from safeship.resilience._clock import SYSTEM_CLOCK, Clock
from safeship.resilience._errors import BreakerOpen, Rejected
from safeship.resilience._fallback import answer_async, answer_sync
from safeship.resilience._hooks import run_hook
from safeship.resilience._log import logger
from safeship.resilience._policy import Guard, GuardedPolicy
from safeship.resilience._registry import DEFAULT_REGISTRY, BreakerRegistry
from safeship.resilience._snapshot import take_snapshot
from safeship.resilience._windows import FAILURE, SLOW, SUCCESS, ConsecutiveFailures, WindowSpec

__all__ = ["Breaker", "Listener"]

P = ParamSpec("P")
R = TypeVar("R")
Listener = Callable[[Transition], None]
ExceptionTypes = tuple[type[BaseException], ...]

_NO_FALLBACK: Any = object()
_DEFAULT: Any = object()
DEFAULT_REGISTRY.add_listener(metrics.install_on_registration)


class Breaker(GuardedPolicy):
    """A circuit breaker; use as ``@breaker``, ``breaker.call(fn)`` or ``with breaker:``.

    All settings are keyword-only and checked here, so a bad one fails at start-up. The
    defaults follow what services commonly hand-write: open after 5 consecutive failures,
    stay open 60 s, close after 2 successful trial calls.

    A breaker joins the registry given as ``registry=``: ``default_registry`` is the
    process-wide one that dashboards, the control plane and the Prometheus collector read;
    ``registry=None`` keeps it out of every registry. Built without ``registry=``, it still
    joins the process-wide registry but warns (``DeprecationWarning``): that implicit,
    global registration ends in a later release.
    """

    __slots__ = (
        "__weakref__",
        "_core",
        "_failure_result",
        "_fallback",
        "_ignore",
        "_listeners",
        "_record",
        "_slow",
        "clock",
        "name",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        window: WindowSpec | None = None,
        open_duration: float = 60.0,
        open_duration_multiplier: float = 1.0,
        max_open_duration: float | None = None,
        half_open_calls: int = 2,
        slow_call_duration: float | None = None,
        record: ExceptionTypes = (Exception,),
        ignore: ExceptionTypes = (),
        failure_result: Callable[[Any], bool] | None = None,
        fallback: Any = _NO_FALLBACK,
        listeners: Iterable[Listener] = (),
        clock: Clock | None = None,
        register: bool | None = None,
        registry: BreakerRegistry | None = _DEFAULT,
    ) -> None:
        self.name = check_name(name)
        spec = window if window is not None else ConsecutiveFailures()
        check_durations(open_duration, open_duration_multiplier, max_open_duration)
        check_positive_int("half_open_calls", half_open_calls, 10_000)
        if slow_call_duration is not None:
            check_seconds("slow_call_duration", slow_call_duration)
        self._record = check_types("record", record)
        self._ignore = (*check_types("ignore", ignore), Rejected)
        if failure_result is not None and not callable(failure_result):
            raise TypeError(f"Breaker.failure_result must be callable, got {failure_result!r}")
        self._slow = slow_call_duration
        self._failure_result = failure_result
        self._fallback = fallback
        self._listeners: tuple[Listener, ...] = tuple(listeners)
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        opening = OpenPolicy(open_duration, open_duration_multiplier, max_open_duration)
        self._core = BreakerCore(self.name, spec, opening, half_open_calls, self.clock)
        joined = _registry_to_join(register, registry)
        if joined is not None:
            joined.register(self)

    def _driving(self) -> Driving:
        """What the drivers need, built per wrapped function: a breaker holding it would
        hold itself (bound methods), and only the garbage collector could free it."""
        judged = self._slow is not None or self._failure_result is not None
        return Driving(
            self._core,
            self.allow,
            self._emit,
            self.record_success,
            self.record_exception,
            judged,
            self._core.spec.kind == "time",
        )

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self._core.state.value}>"

    @property
    def state(self) -> State:
        """The current state (an open breaker whose time is up still reads OPEN)."""
        return self._core.state

    # -- admission ---------------------------------------------------------------------

    def allow(self) -> int:
        """Ask to make one call: return a permit, or raise :class:`BreakerOpen`.

        Pass the permit to :meth:`record_success`, :meth:`record_failure` or
        :meth:`record_exception` when the call ends (or :meth:`release` to not count it).
        The decorator does all of this.
        """
        ticket = self._core.ticket
        if ticket >= 0:
            return ticket
        admitted = self._admit()
        if isinstance(admitted, BreakerOpen):
            raise admitted
        return admitted

    def _admit(self) -> int | BreakerOpen:
        admitted, event = self._core.admit()
        if event is not None:
            self._emit(event)
        return admitted

    # -- recording ---------------------------------------------------------------------

    def record_success(self, permit: int, started: float = 0.0, result: Any = NO_RESULT) -> None:
        """Record a call that returned ``result`` (checked by ``failure_result``).

        Without ``result`` (a guarded block, an unrecorded exception) the predicate is not
        asked. A predicate that raises makes the call a failure (logged as
        ``resilience.hook_failed``); one that raises a ``BaseException`` gives the permit
        back before the exception goes on.
        """
        end = self._core.clock.monotonic()
        outcome = SUCCESS
        if self._slow is not None and end - started >= self._slow:
            outcome = SLOW
        predicate = self._failure_result
        if predicate is not None and result is not NO_RESULT:
            try:
                failed = run_hook(self.name, "failure_result", predicate, True, result)
            except BaseException:
                self._core.release(permit)
                raise
            if failed:
                outcome |= FAILURE
        event = self._core.record(permit, end, outcome)
        if event is not None:
            self._emit(event)

    def record_failure(self, permit: int, started: float = 0.0) -> None:
        """Record a failed call."""
        end = self.clock.monotonic()
        slow = self._slow is not None and end - started >= self._slow
        self._tell(self._core.record(permit, end, FAILURE | SLOW if slow else FAILURE))

    def record_exception(self, permit: int, started: float, exc: BaseException) -> bool:
        """Classify ``exc`` and record it; return True when it counted as a failure."""
        if not self.counts_as_failure(exc):
            if isinstance(exc, self._ignore) or not isinstance(exc, Exception):
                self._core.release(permit)
            else:
                self.record_success(permit, started)
            return False
        self.record_failure(permit, started)
        return True

    def counts_as_failure(self, exc: BaseException) -> bool:
        """Whether this breaker records ``exc`` as a failure of the dependency."""
        return (
            isinstance(exc, Exception)
            and isinstance(exc, self._record)
            and not isinstance(exc, self._ignore)
        )

    def release(self, permit: int) -> None:
        """Give back a permit whose call must not count (ignored or cancelled)."""
        self._core.release(permit)

    # -- events --------------------------------------------------------------------------

    def _tell(self, event: Transition | None) -> None:
        if event is not None:
            self._emit(event)

    def _emit(self, event: Transition) -> None:
        log_transition(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a faulty listener must never fail the call
                logger.exception(
                    "resilience.breaker.listener_failed",
                    extra={"breaker": self.name, "listener": repr(listener)},
                )

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(transition)`` after every state change (outside the lock)."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners = tuple(item for item in self._listeners if item is not listener)

    # -- manual control ----------------------------------------------------------------

    def force_open(self, *, reason: str = "manual") -> None:
        """Reject every call until :meth:`reset` (or another manual state)."""
        self._emit(self._core.move(State.FORCED_OPEN, reason))

    def disable(self, *, reason: str = "manual") -> None:
        """Let every call through and record nothing until :meth:`reset`."""
        self._emit(self._core.move(State.DISABLED, reason))

    def metrics_only(self, *, reason: str = "manual") -> None:
        """Let every call through and keep recording, but never open, until :meth:`reset`."""
        self._emit(self._core.move(State.METRICS_ONLY, reason))

    def reset(self, *, reason: str = "reset") -> None:
        """Return to CLOSED with an empty window and the base open duration."""
        self._emit(self._core.move(State.CLOSED, reason))

    def open_for(self, seconds: float, *, reason: str) -> bool:
        """Open now for ``seconds`` unless open or in a manual state; True if it opened.

        Used by shared state (:mod:`safeship.resilience.redis_shared`) when another
        process opened the breaker for the same dependency.
        """
        event = self._core.open_for(seconds, reason)
        self._tell(event)
        return event is not None

    def close_if_open(self, *, reason: str) -> bool:
        """Close an OPEN or HALF_OPEN breaker (a peer's trial succeeded); True if it closed."""
        event = self._core.close_if_open(reason)
        self._tell(event)
        return event is not None

    def set_half_open_gate(self, gate: Callable[[], bool] | None) -> None:
        """Consult ``gate()`` before turning HALF_OPEN; False keeps the breaker open."""
        self._core.gate = gate

    # -- reading -----------------------------------------------------------------------

    @property
    def open_duration(self) -> float:
        """The base open duration in seconds (before any growth)."""
        return self._core.opening.duration

    def open_remaining(self) -> float | None:
        """Seconds until an OPEN breaker admits trial calls (0 when due), else None."""
        return self._core.open_remaining()

    @property
    def window(self) -> WindowSpec:
        """The judging window's configuration."""
        return self._core.spec

    def counts(self) -> dict[str, int]:
        """Calls since creation by outcome, plus ``ignored`` and ``rejected``."""
        return self._core.counts()

    def transition_counts(self) -> dict[tuple[State, State], int]:
        """How many times each (from, to) transition happened since creation."""
        return self._core.transition_counts()

    def snapshot(self) -> BreakerSnapshot:
        """A JSON-able picture: state, window figures, trial figures, recent transitions."""
        figures = self._core.figures()
        return take_snapshot(self.name, self.window, figures, self.counts())

    # -- wrapping ----------------------------------------------------------------------

    def wrap_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Guard a plain function (answered by ``fallback=`` when one is set)."""
        call = drive_sync(self._driving(), fn)
        if self._fallback is _NO_FALLBACK:
            return call
        return answer_sync(call, self._fallback, self._fallback_answers)

    def wrap_async(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Guard a coroutine function (answered by ``fallback=`` when one is set)."""
        call = drive_async(self._driving(), fn)
        if self._fallback is _NO_FALLBACK:
            return call
        return answer_async(call, self._fallback, self._fallback_answers)

    def _fallback_answers(self, exc: Exception) -> bool:
        return isinstance(exc, BreakerOpen) or self.counts_as_failure(exc)

    def guard(self) -> Guard:
        """A single-use context manager: ``with breaker.guard(): ...``."""
        return BlockGuard(self)


def _registry_to_join(
    register: bool | None, registry: BreakerRegistry | None
) -> BreakerRegistry | None:
    if registry is _DEFAULT:
        if register is False:
            return None
        warnings.warn(
            "Breaker(...) without registry= joins the process-wide registry implicitly; "
            "this default ends in a later release: pass registry=default_registry (from "
            "safeship.resilience) to stay on dashboards and metrics, or registry=None",
            DeprecationWarning,
            stacklevel=4,
        )
        return DEFAULT_REGISTRY
    if register is False and registry is not None:
        raise ValueError(
            "Breaker: pass registry=None or register=False, not register=False "
            "with a registry to join"
        )
    if registry is not None and not isinstance(registry, BreakerRegistry):
        raise TypeError(f"Breaker.registry must be a BreakerRegistry or None, got {registry!r}")
    return registry
