"""The rollout page in plain words: what the guard's statistics say, and which operator
actions fit the rollout's state (pure; tests/server/test_dashboard_rollout_words.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIVE = ("running", "paused")
MODES = ("off", "shadow", "canary", "on")
#: Which statuses and modes each action applies to; the page shows only those buttons
#: and its script hides them again when the state moves (the same table, as data).
ACTION_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pause": (("running",), MODES),
    "resume": (("paused",), MODES),
    "advance": (LIVE, ("off", "canary", "on")),
    "promote": (LIVE, ("shadow",)),
    "rollback": (LIVE, MODES),
    "abort": (LIVE, MODES),
}


def available_actions(status: str, mode: str) -> list[str]:
    """The actions an operator may take on a rollout in ``status`` and ``mode``."""
    return [a for a, (st, md) in ACTION_RULES.items() if status in st and mode in md]


def times(value: float) -> str:
    """``168×``, ``2.5×``, ``0.04×``: a ratio a person reads at a glance."""
    if value >= 10:
        return f"{value:.0f}×"
    if value >= 1:
        return f"{value:.1f}×"
    return f"{value:.2g}×"


def _metric_line(e: Mapping[str, Any]) -> str:
    name = "errors" if e.get("metric") == "errors" else "slow requests"
    cand, ctrl = int(e.get("candidate_events") or 0), int(e.get("control_events") or 0)
    threshold = float(e.get("threshold") or 1.0)
    ratio = float(e.get("e_value") or 0.0) / threshold
    return (
        f"{name.capitalize()}: {cand} in the candidate and {ctrl} in control so far; "
        f"the evidence that the candidate has more {name} is {times(ratio)} what a "
        "rollback needs."
    )


def explain_verdict(verdict: Mapping[str, Any], *, alpha: float, status: str) -> list[str]:
    """Sentences for the guard's verdict, for a reader who is not a statistician."""
    threshold = 1.0 / alpha
    combined = float(verdict.get("combined") or 0.0)
    ratio = combined / threshold
    out: list[str] = []
    if status not in LIVE:
        out.append(f"The rollout is {status.replace('_', ' ')}: the guard no longer acts on it.")
    if verdict.get("breach"):
        worst = verdict.get("breached_metric") or "errors or latency"
        out.append(
            f"The candidate is worse than control: the evidence is {times(ratio)} the "
            f"threshold for a rollback (mostly {worst})."
        )
    elif verdict.get("promotable") and status in LIVE:
        out.append(
            "The candidate looks no worse than control on what it has seen so far: the "
            "guard moves to the next step once the step has held its minimum time and sample."
        )
    else:
        out.append(
            f"No verdict yet: the evidence that the candidate is worse is {times(ratio)} "
            "the rollback threshold, and there is not yet enough to call it as good."
        )
    out.extend(_metric_line(e) for e in verdict.get("evidence") or [] if isinstance(e, Mapping))
    out.append(
        f"How to read it: at 1× the threshold (an e-value of {threshold:g}) the guard rolls "
        f"back. The threshold is set so that, when the candidate is really no worse, the "
        f"chance of a needless rollback stays under {alpha:.0%} however long you watch."
    )
    return out
