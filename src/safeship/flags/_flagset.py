"""``FlagSet``: an immutable, compiled snapshot of flags and the fast path that evaluates them.

``FlagSet.from_unleash(state)`` compiles a state in Unleash's format once; afterwards
``is_enabled`` and ``variant`` are a dictionary lookup and a call of a pre-built function,
safe from any thread or event loop without locks. Evaluation never raises: an unknown flag
gives the caller's default, and an evaluation that fails (a context that is not a mapping,
say) gives the default too, logged once per flag and counted.

Counting is opt-in and costs nothing when off: ``with_counter(counter)`` returns a snapshot
whose evaluators also advance the counter's per-flag slots (see ``safeship.flags._counter``).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from safeship.flags._codegen import Pick, Ticks
from safeship.flags._compiler import CompiledFlag, compile_state
from safeship.flags._constraints import Check
from safeship.flags._context import EMPTY, ContextLike
from safeship.flags._counter import EvaluationCounter
from safeship.flags._delta import fold_delta, is_delta
from safeship.flags._model import DISABLED_VARIANT, FlagProblem, FrozenDict, Variant
from safeship.flags._strategies import Environment

logger = logging.getLogger("safeship.flags")
_PRIVATE = object()
_T = TypeVar("_T")


class FlagSet:
    """Compiled flags: evaluate with ``is_enabled`` and ``variant``; build with ``from_unleash``."""

    __slots__ = ("_checks", "_counter", "_flags", "_picks", "_raw", "_reported", "_state")

    _checks: dict[str, Callable[[Any], bool]]
    _picks: dict[str, Callable[[Any], Variant]]
    _flags: dict[str, CompiledFlag]
    _state: dict[str, Any]
    _raw: dict[str, Mapping[str, Any]]
    _counter: EvaluationCounter | None
    _reported: set[str]

    def __init__(self, *, _private: object = None) -> None:
        if _private is not _PRIVATE:
            raise TypeError("build a FlagSet with FlagSet.from_unleash(state) or FlagSet.empty()")

    @classmethod
    def from_unleash(
        cls,
        state: Mapping[str, Any],
        *,
        strict: bool = False,
        counter: EvaluationCounter | None = None,
        hostname: str | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> FlagSet:
        """Compile a state in Unleash's format (``{"features": [...], "segments": [...]}``),
        or in its delta format (``{"events": [...]}``, folded in order first).

        Raises ``FlagStateError`` when the state's shape is unusable; a rule that cannot be
        evaluated compiles to "never matches" and is logged once (``strict=True`` raises
        instead). ``hostname``, ``clock`` and ``rng`` replace the machine's host name, the
        current time (for date rules without ``currentTime``) and randomness (random
        stickiness), for tests and reproducible runs.
        """
        own_copy = _copy(fold_delta(state) if is_delta(state) else state)
        skipped: list[FlagProblem] = []
        flags = compile_state(
            own_copy, _environment(hostname, clock, rng), strict=strict, skipped=skipped
        )
        _log_problems(flags, skipped)
        snapshot = cls._build(flags, own_copy if isinstance(own_copy, dict) else {}, None)
        return snapshot if counter is None else snapshot.with_counter(counter)

    @classmethod
    def empty(cls) -> FlagSet:
        """A snapshot without flags: every flag answers the caller's default."""
        return cls.from_unleash({"version": 1, "features": []})

    @classmethod
    def _build(
        cls,
        flags: dict[str, CompiledFlag],
        state: dict[str, Any],
        counter: EvaluationCounter | None,
    ) -> FlagSet:
        snapshot = cls(_private=_PRIVATE)
        checks, picks = _evaluators(flags, counter)
        for name, value in (
            ("_flags", flags),
            ("_state", state),
            ("_raw", _raw_features(state, flags)),
            ("_counter", counter),
            ("_checks", checks),
            ("_picks", picks),
            ("_reported", set()),
        ):
            object.__setattr__(snapshot, name, value)
        return snapshot

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a FlagSet is immutable; compile a new one with from_unleash()")

    def is_enabled(
        self, name: str, context: ContextLike | None = None, default: bool = False
    ) -> bool:
        """Whether flag ``name`` is on for ``context``; ``default`` when the flag is unknown."""
        try:
            return self._checks[name](context)
        except Exception as exc:  # noqa: BLE001 - evaluation never raises into the caller
            return self._recover(self._checks, name, context, exc, default)

    def variant(self, name: str, context: ContextLike | None = None) -> Variant:
        """The variant of flag ``name`` for ``context`` (``"disabled"`` when off or unknown)."""
        try:
            return self._picks[name](context)
        except Exception as exc:  # noqa: BLE001 - evaluation never raises into the caller
            return self._recover(self._picks, name, context, exc, DISABLED_VARIANT)

    def _recover(
        self,
        evaluators: Mapping[str, Callable[[Any], _T]],
        name: str,
        context: object,
        exc: Exception,
        default: _T,
    ) -> _T:
        """The slow path: an unknown flag, no context given, or an evaluation that failed."""
        evaluate = evaluators.get(name) if isinstance(name, str) else None
        if evaluate is None:
            if self._counter is not None:
                self._counter.count_missing(name)
            return default
        if context is None:  # the evaluators read a mapping; retry with an empty one
            try:
                return evaluate(EMPTY)
            except Exception as again:  # noqa: BLE001 - same: answer the default
                exc = again
        self._failed(name, exc)
        return default

    def _failed(self, name: str, exc: Exception) -> None:
        if self._counter is not None:
            next(self._counter.slots(name).errors)
        if name in self._reported:
            return
        self._reported.add(name)
        logger.error(
            "flags.evaluation_failed",  # once per flag and snapshot; the default is answered
            exc_info=exc,
            extra={"flag": name, "error": type(exc).__name__},
        )

    def names(self) -> tuple[str, ...]:
        """The flag names, in the order of the state."""
        return tuple(self._flags)

    def __contains__(self, name: object) -> bool:
        return name in self._flags

    def __len__(self) -> int:
        return len(self._flags)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flags)

    def __repr__(self) -> str:
        counted = ", counted" if self._counter is not None else ""
        return f"<FlagSet {len(self._flags)} flags{counted}>"

    def feature(self, name: str) -> dict[str, Any]:
        """A copy of the flag's definition (Unleash's feature object); ``KeyError`` if unknown."""
        return dict(_copy(self._raw[name]))

    def constant(self, name: str) -> bool | None:
        """The flag's value when no context can change it (off, or on for all), else ``None``."""
        return self._flags[name].constant

    @property
    def problems(self) -> Mapping[str, tuple[FlagProblem, ...]]:
        """Rules that could not be compiled as written, per flag (only flags that have some)."""
        return FrozenDict({name: f.problems for name, f in self._flags.items() if f.problems})

    @property
    def counter(self) -> EvaluationCounter | None:
        """The counter this snapshot's evaluations advance, if any."""
        return self._counter

    def to_unleash(self) -> dict[str, Any]:
        """A copy of the state this snapshot was compiled from; ``from_unleash`` takes it back."""
        return dict(_copy(self._state))

    def with_counter(self, counter: EvaluationCounter | None) -> FlagSet:
        """The same flags, evaluations counted in ``counter`` (``None``: not counted)."""
        return type(self)._build(self._flags, self._state, counter)


def _environment(
    hostname: str | None, clock: Callable[[], datetime] | None, rng: random.Random | None
) -> Environment:
    if hostname is None:
        hostname = os.environ.get("HOSTNAME") or socket.gethostname()
    now: Callable[[], float] = time.time if clock is None else (lambda: clock().timestamp())
    return Environment(hostname, now, random.randint if rng is None else rng.randint)


def _evaluators(
    flags: Mapping[str, CompiledFlag], counter: EvaluationCounter | None
) -> tuple[dict[str, Check], dict[str, Pick]]:
    if counter is None:
        return (
            {name: flag.check for name, flag in flags.items()},
            {name: flag.pick for name, flag in flags.items()},
        )
    checks, picks = {}, {}
    for name, flag in flags.items():
        slots = counter.slots(name, flag.variant_names)
        ticks = {variant: count.__next__ for variant, count in slots.variants.items()}
        checks[name], picks[name] = flag.counted(
            Ticks(slots.yes.__next__, slots.no.__next__, ticks)
        )
    return checks, picks


def _raw_features(
    state: Mapping[str, Any], flags: Mapping[str, CompiledFlag]
) -> dict[str, Mapping[str, Any]]:
    """Each compiled flag's definition: the first feature of its name, as the compiler took."""
    raw: dict[str, Mapping[str, Any]] = {}
    for feature in state.get("features", ()):
        name = feature.get("name") if isinstance(feature, Mapping) else None
        if isinstance(name, str) and name in flags and name not in raw:
            raw[name] = feature
    return raw


def _log_problems(flags: Mapping[str, CompiledFlag], skipped: list[FlagProblem]) -> None:
    for name, flag in flags.items():
        if flag.problems:
            logger.warning(
                "flags.rule_broken",
                extra={
                    "flag": name,
                    "problems": "; ".join(str(problem) for problem in flag.problems),
                },
            )
    for problem in skipped:
        logger.warning(
            "flags.state_entry_skipped",
            extra={"flag": problem.flag, "field": problem.field, "problem": problem.message},
        )


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists), so callers and snapshots share nothing."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value
