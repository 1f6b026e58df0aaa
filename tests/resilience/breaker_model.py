"""A deliberately naive reference model of the circuit breaker, written from the spec.

It keeps every outcome in a plain list and recomputes everything from scratch, with
exact fractions, so it shares no code or cleverness with the real implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass
class ModelConfig:
    kind: str  # consecutive | count | time
    size: int  # threshold, calls or seconds
    minimum: int
    failure_rate: Fraction
    slow_rate: Fraction
    half_open_calls: int
    open_duration: float
    multiplier: float
    max_open: float | None
    slow_duration: float | None


@dataclass
class ModelBreaker:
    config: ModelConfig
    state: str = "closed"
    epoch: int = 0
    open_until: float = 0.0
    opens: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)
    trials_left: int = 0
    trials: list[tuple[bool, bool]] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)

    def _move(self, new: str) -> None:
        self.moves.append((self.state, new))
        if new in ("closed", "metrics_only"):
            self.outcomes = []
        if new == "closed":
            self.opens = 0
        if new == "half_open":
            self.trials_left = self.config.half_open_calls
            self.trials = []
        self.state = new
        self.epoch += 1

    def _open(self, now: float) -> None:
        self.opens += 1
        cfg = self.config
        duration = cfg.open_duration * cfg.multiplier ** (self.opens - 1)
        if cfg.max_open is not None:
            duration = min(duration, cfg.max_open)
        self.open_until = now + duration
        self._move("open")

    def admit(self, now: float) -> int | None:
        """The epoch the call runs under, or None when rejected."""
        if self.state in ("closed", "disabled", "metrics_only"):
            return self.epoch
        if self.state == "forced_open":
            return None
        if self.state == "open":
            if now < self.open_until:
                return None
            self._move("half_open")
        if self.trials_left > 0:
            self.trials_left -= 1
            return self.epoch
        return None

    def record(self, epoch: int, now: float, kind: str, duration: float) -> None:
        """kind: success | failure | ignored."""
        if kind == "ignored":
            if epoch == self.epoch and self.state == "half_open":
                self.trials_left += 1
            return
        if epoch != self.epoch:
            return
        failed = kind == "failure"
        slow = self.config.slow_duration is not None and duration >= self.config.slow_duration
        if self.state == "closed":
            self.outcomes.append((now, failed, slow))
            if self._tripped(now):
                self._open(now)
        elif self.state == "metrics_only":
            self.outcomes.append((now, failed, slow))
        elif self.state == "half_open":
            self.trials.append((failed, slow))
            self._judge_trials(now)

    def _judged(self, now: float) -> list[tuple[float, bool, bool]]:
        cfg = self.config
        if cfg.kind == "count":
            return self.outcomes[-cfg.size :]
        if cfg.kind == "time":
            current = math.floor(now)
            return [o for o in self.outcomes if math.floor(o[0]) > current - cfg.size]
        return self.outcomes

    def figures(self, now: float) -> tuple[int, int, int]:
        judged = self._judged(now)
        return (len(judged), sum(o[1] for o in judged), sum(o[2] for o in judged))

    def _tripped(self, now: float) -> bool:
        cfg = self.config
        if cfg.kind == "consecutive":
            run = 0
            for _, failed, slow in reversed(self.outcomes):
                if not (failed or slow):
                    break
                run += 1
            return run >= cfg.size
        calls, failures, slows = self.figures(now)
        if calls < cfg.minimum:
            return False
        return (
            Fraction(failures, calls) >= cfg.failure_rate or Fraction(slows, calls) >= cfg.slow_rate
        )

    def _judge_trials(self, now: float) -> None:
        cfg = self.config
        n = cfg.half_open_calls
        failures = sum(t[0] for t in self.trials)
        slows = sum(t[1] for t in self.trials)
        if cfg.kind == "consecutive":
            reopen = failures + slows > 0
        else:
            reopen = (
                Fraction(failures, n) >= cfg.failure_rate or Fraction(slows, n) >= cfg.slow_rate
            )
        if reopen:
            self._open(now)
        elif len(self.trials) >= n:
            self._move("closed")

    def manual(self, new: str) -> None:
        self._move(new)
