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

from safeship.rollouts.guard import Decision, RolloutGuard, RolloutNotFoundError
from safeship.rollouts.rollout import Mode, Rollout

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
        """Flush, evaluate and sync every rollout once; return the decisions applied here."""
        decisions: list[Decision] = []
        for name, rollout in self.rollouts.items():
            drained = rollout.recorder.drain()
            if drained is not None:
                control, candidate = drained
                self.guard.record_window(
                    name, process=self.process, control=control, candidate=candidate
                )
            self._ship_shadow(rollout)
            if self.evaluate:
                decision = self.guard.evaluate(name)
                if decision is not None:
                    decisions.append(decision)
            self._sync(rollout)
        return decisions

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
                "rollout.shadow_ship_failed rollout=%s process=%s", rollout.name, self.process
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
            except Exception:
                logger.exception("rollout.agent_tick_failed process=%s", self.process)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        try:
            self.tick()
        except Exception:  # noqa: BLE001 - last flush is best effort at shutdown
            logger.warning("rollout.agent_final_flush_failed process=%s", self.process)
