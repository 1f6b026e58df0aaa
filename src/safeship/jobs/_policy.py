"""Retry and orphan policies and the decisions they take (pure: no I/O, injected randomness).

A failed attempt is decided by :meth:`Retry.decide`: retry after an exponential backoff
with full jitter (a uniform draw in ``[0, min(cap, base * 2**(attempt-1))]``), snooze, or
give up (dead letter).  A crashed attempt (its worker vanished) is decided by
:func:`decide_orphan` from the task's orphan policy and its separate crash budget.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from safeship.jobs._model import GiveUp, Snooze

__all__ = ["Decision", "Orphan", "Retry", "decide_orphan", "parse_rate"]


class Orphan(enum.StrEnum):
    """What to do with a job whose worker died mid-run (its lease expired)."""

    RERUN = "rerun"  # back to pending at once (counts against the crash budget)
    FAIL = "fail"  # counts as a failed attempt: retried or dead like an exception
    HOLD = "hold"  # state ``interrupted`` until a human retries or cancels it


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to a job after an attempt: ``retry`` (after ``delay`` s), ``dead``,
    ``hold``; ``counts`` says whether the attempt used one of the job's attempts."""

    action: str
    delay: float = 0.0
    counts: bool = True


_ACTIONS = frozenset({"retry", "give_up", "snooze"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How often and how fast a task retries.

    ``attempts`` is the error budget (runs in all, the first included); ``on`` maps an
    exception type to ``"retry"`` or ``"give_up"`` (the nearest class in the MRO wins;
    unlisted exceptions retry); ``crashes`` is the separate budget for attempts whose worker
    died, so a crash loop cannot spend the error budget, nor the other way round.
    """

    attempts: int = 5
    base: float = 1.0
    cap: float = 300.0
    crashes: int = 5
    on: Mapping[type[BaseException], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 1000:
            raise ValueError(f"Retry.attempts must be in [1, 1000], got {self.attempts!r}")
        if not 0 <= self.crashes <= 1000:
            raise ValueError(f"Retry.crashes must be in [0, 1000], got {self.crashes!r}")
        if not (0 <= self.base <= self.cap <= 30 * 86400):
            raise ValueError("Retry: need 0 <= base <= cap <= 30 days")
        for kind, action in self.on.items():
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ValueError(f"Retry.on: keys are exception types, got {kind!r}")
            if action not in ("retry", "give_up"):
                raise ValueError(f"Retry.on[{kind.__name__}]: 'retry' or 'give_up', got {action!r}")

    def backoff(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds before the retry that follows ``attempt`` (1-based): full jitter."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        return draw() * ceiling

    def action_for(self, error: BaseException) -> str:
        if isinstance(error, Snooze):
            return "snooze"
        if isinstance(error, GiveUp):
            return "give_up"
        for kind in type(error).__mro__:
            if kind in self.on:
                return self.on[kind]
        return "retry"

    def decide(
        self, error: BaseException, attempt: int, draw: Callable[[], float] = random.random
    ) -> Decision:
        """The decision after ``attempt`` (1-based) raised ``error``."""
        action = self.action_for(error)
        if action == "snooze":
            assert isinstance(error, Snooze)
            return Decision("retry", error.seconds, counts=False)
        if action == "give_up" or attempt >= self.attempts:
            return Decision("dead")
        return Decision("retry", self.backoff(attempt, draw))


def decide_orphan(
    policy: Orphan,
    retry: Retry,
    attempt: int,
    crashes: int,
    draw: Callable[[], float] = random.random,
) -> Decision:
    """The decision for an attempt whose worker died; ``crashes`` counts this one."""
    if policy is Orphan.HOLD:
        return Decision("hold", counts=False)
    if policy is Orphan.FAIL:
        return retry.decide(RuntimeError("worker lost"), attempt, draw)
    if crashes > retry.crashes:
        return Decision("dead", counts=False)
    return Decision("retry", 0.0, counts=False)


_RATE = re.compile(r"([0-9]{1,7})/([0-9]{0,5}(?:\.[0-9]{1,3})?)(s|m|h)")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """A rate such as ``"100/s"``, ``"30/m"``, ``"5/h"`` or ``"10/5s"`` as (starts, period
    in seconds); at most 1,000,000 starts per period, a period from 0.1 s to one day."""
    found = _RATE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"rate must look like '100/s', '30/m', '5/h' or '10/5s', got {text!r}")
    count, number, unit = int(found[1]), found[2], found[3]
    period = (float(number) if number else 1.0) * _UNIT[unit]
    if not 1 <= count <= 1_000_000:
        raise ValueError(f"rate: starts per period must be in [1, 1000000], got {text!r}")
    if not 0.1 <= period <= 86400:
        raise ValueError(f"rate: the period must be in [0.1 s, 1 day], got {text!r}")
    return count, period
