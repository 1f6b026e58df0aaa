"""Progressive plans and the pure step logic (what to do next given a verdict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from safeship.rollouts._stats import Verdict

__all__ = ["STATUSES", "Action", "Plan", "next_action"]

STATUSES = ("running", "paused", "rolled_back", "aborted", "completed")
Action = Literal["rollback", "advance", "complete"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Steps of candidate traffic (percent), each held at least ``min_hold`` seconds and
    until the candidate has served ``min_sample`` requests in it."""

    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    min_hold: float = 300.0
    min_sample: int = 500

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("steps: at least one percentage, e.g. (1, 5, 25, 50, 100)")
        if any(not 0.0 < s <= 100.0 for s in self.steps):
            raise ValueError(f"steps: percentages in (0, 100], got {list(self.steps)}")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"steps: strictly increasing, got {list(self.steps)}")
        if not 0.0 <= self.min_hold <= 7 * 86400:
            raise ValueError(f"min_hold: seconds between 0 and a week, got {self.min_hold}")
        if not 0 <= self.min_sample <= 10_000_000:
            raise ValueError(
                f"min_sample: requests between 0 and 10,000,000, got {self.min_sample}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "min_hold": self.min_hold, "min_sample": self.min_sample}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            steps=tuple(float(s) for s in data["steps"]),
            min_hold=float(data["min_hold"]),
            min_sample=int(data["min_sample"]),
        )


def next_action(
    *,
    plan: Plan,
    status: str,
    step: int,
    verdict: Verdict,
    held_seconds: float,
    step_candidate_requests: int,
) -> Action | None:
    """Roll back on a breach (in any live status); otherwise advance, or complete after the
    last step, only while running, healthy on evidence, held long enough and sampled."""
    if status not in ("running", "paused"):
        return None
    if verdict.breach:
        return "rollback"
    if status == "paused" or not verdict.promotable:
        return None
    if held_seconds < plan.min_hold or step_candidate_requests < plan.min_sample:
        return None
    return "complete" if step >= len(plan.steps) - 1 else "advance"
