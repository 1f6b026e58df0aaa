"""Per-process side of the guard: ship counts off the request path, follow the decisions.

``GuardAgent.tick()`` drains each rollout's recorder into a shared window and its shadow
runner's new counters and mismatch samples into the stored shadow results, lets the guard
evaluate (one process at a time wins the row lock), and copies the rollout's mode and the
fleet's exceedance threshold back into the process.  ``start()`` runs ticks on a daemon
thread every ``interval`` seconds; tests call ``tick()`` directly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable

from safeship.rollouts._guard import Decision, RolloutGuard, RolloutNotFoundError
from safeship.rollouts._rollout import Mode, Rollout

__all__ = ["GuardAgent"]

logger = logging.getLogger("safeship.rollouts")


class GuardAgent:
    """Feeds a process's rollouts into the guard and applies what it decides."""

    def __init__(
        self,
        guard: RolloutGuard,
        rollouts: Iterable[Rollout],
        *,
        interval: float = 1.0,
        process: str | None = None,
        evaluate: bool = True,
    ) -> None:
        if not 0.05 <= interval <= 300:
            raise ValueError(f"interval: seconds between 0.05 and 300, got {interval}")
        self.guard = guard
        self.rollouts = {r.name: r for r in rollouts}
        self.interval = interval
        self.process = process or f"{socket.gethostname()}:{os.getpid()}"
        self.evaluate = evaluate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[Decision]:
        """Flush, evaluate and sync every rollout once; return the decisions applied here.

        Each rollout is handled on its own: an error with one (its row, its window, the
        database for a moment) is logged and never keeps the others from being guarded.
        """
        decisions: list[Decision] = []
        for rollout in list(self.rollouts.values()):
            try:
                decision = self._tick_one(rollout)
            except Exception:  # one rollout's failure must not unguard the others
                logger.exception(
                    "rollout.agent_rollout_failed",
                    extra={"rollout": rollout.name, "agent_process": self.process},
                )
                continue
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _tick_one(self, rollout: Rollout) -> Decision | None:
        drained = rollout.recorder.drain()
        if drained is not None:
            control, candidate = drained
            self.guard.record_window(
                rollout.name, process=self.process, control=control, candidate=candidate
            )
        self._ship_shadow(rollout)
        decision = self.guard.evaluate(rollout.name) if self.evaluate else None
        self._sync(rollout)
        return decision

    def _ship_shadow(self, rollout: Rollout) -> None:
        """Store what the rollout's shadow runs added since the last tick.  A failure loses
        that tick's shadow counts (logged) but never the arm windows or the evaluation."""
        try:
            delta = rollout.shadow.drain()
            if delta is not None:
                self.guard.record_shadow(
                    rollout.name, process=self.process, counts=delta.counts, samples=delta.samples
                )
        except Exception:
            logger.exception(
                "rollout.shadow_ship_failed",
                extra={"rollout": rollout.name, "agent_process": self.process},
            )

    def _sync(self, rollout: Rollout) -> None:
        try:
            record = self.guard.get(rollout.name)
        except RolloutNotFoundError:
            return
        rollout.recorder.threshold_bucket = record.threshold_bucket
        if record.status in ("rolled_back", "aborted"):
            rollout.mode = Mode.OFF
        elif rollout.flags is not None or record.mode != "canary":
            rollout.mode = Mode(record.mode)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="safeship-guard", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the loop outlives any tick; tick() already isolates rollouts
                logger.exception("rollout.agent_tick_failed", extra={"agent_process": self.process})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        try:
            self.tick()
        except Exception:  # last flush is best effort at shutdown: logged, close goes on
            logger.exception(
                "rollout.agent_final_flush_failed", extra={"agent_process": self.process}
            )
