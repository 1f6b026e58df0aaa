"""One app process of the two-process guard test: serve traffic, flush, let the guard decide."""

from __future__ import annotations

import contextlib
import json
import random
import sys
from typing import Any

from safeship.db import create_engine
from safeship.flags.store import FlagStore
from safeship.rollouts import GuardAgent, Mode, Rollout, RolloutGuard


class Split:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
        return self.rng.random() < 0.5


def main(url: str, process: str, seed: int) -> None:
    rng = random.Random(seed)
    engine = create_engine(url)
    guard = RolloutGuard(engine, FlagStore(engine))

    def candidate(i: int) -> int:
        if rng.random() < 0.3:
            raise RuntimeError("candidate fault")
        return i

    rollout = Rollout("orders-batched", legacy=lambda i: i, candidate=candidate,
                      flags=Split(rng), mode="canary")  # fmt: skip
    agent = GuardAgent(guard, [rollout], process=process)
    decisions = []
    for i in range(4000):
        with contextlib.suppress(RuntimeError):
            rollout(i)
        if i % 10 == 9:
            decisions += [d.kind for d in agent.tick()]
            if rollout.mode is Mode.OFF:
                break
    print(json.dumps({"process": process, "decisions": decisions, "calls": i + 1}))
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
