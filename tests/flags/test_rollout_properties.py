"""Properties of sticky rollouts: the share honoured, the same answer twice, monotonic growth."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.flags import Context, FlagSet
from safeship.flags._hashing import in_rollout, normalized_hash, variant_bucket


def _rollout(percent: int, group: str = "exp", stickiness: str = "userId") -> FlagSet:
    strategy = {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(percent), "stickiness": stickiness, "groupId": group},
    }
    return FlagSet.from_unleash(
        {"features": [{"name": "f", "enabled": True, "strategies": [strategy]}]}
    )


def test_normalized_hash_matches_known_unleash_buckets() -> None:
    # Buckets taken from the shared specification's expectations (10%: user 174 in, 499 out).
    assert normalized_hash("174", "Feature.flexibleRollout.10") <= 10
    assert normalized_hash("499", "Feature.flexibleRollout.10") > 10
    assert 1 <= normalized_hash("anything", "g") <= 100
    assert 1 <= variant_bucket("anything", "g", 7) <= 7


@settings(max_examples=25, deadline=None)
@given(percent=st.integers(min_value=1, max_value=99), group=st.text(max_size=12))
def test_the_rollout_share_is_honoured_within_statistical_bounds(percent: int, group: str) -> None:
    flags = _rollout(percent, group)
    users = 4000
    enabled = sum(flags.is_enabled("f", {"userId": f"user-{i}"}) for i in range(users))
    expected = users * percent / 100
    spread = 5 * math.sqrt(users * percent / 100 * (1 - percent / 100))  # five sigma
    assert abs(enabled - expected) <= spread


@settings(max_examples=50, deadline=None)
@given(
    percent=st.integers(min_value=0, max_value=100),
    user=st.text(max_size=20),
    session=st.text(max_size=20),
    stickiness=st.sampled_from(["default", "userId", "sessionId", "tenant"]),
)
def test_the_same_context_always_gets_the_same_answer(
    percent: int, user: str, session: str, stickiness: str
) -> None:
    flags = _rollout(percent, stickiness=stickiness)
    context = {"userId": user, "sessionId": session, "properties": {"tenant": user}}
    answers = {flags.is_enabled("f", context) for _ in range(5)}
    assert len(answers) == 1
    assert answers == {flags.is_enabled("f", Context.from_unleash(context))}


@settings(max_examples=50, deadline=None)
@given(
    low=st.integers(min_value=0, max_value=100),
    high=st.integers(min_value=0, max_value=100),
    group=st.text(max_size=12),
    users=st.lists(st.text(max_size=16), min_size=1, max_size=30),
)
def test_a_user_in_a_rollout_stays_in_when_it_grows(
    low: int, high: int, group: str, users: list[str]
) -> None:
    low, high = min(low, high), max(low, high)
    smaller, larger = _rollout(low, group), _rollout(high, group)
    for user in users:
        if smaller.is_enabled("f", {"userId": user}):
            assert larger.is_enabled("f", {"userId": user})


@given(user=st.text(max_size=20), group=st.text(max_size=12), percent=st.integers(0, 100))
def test_compiled_rollouts_agree_with_the_reference_formula(
    user: str, group: str, percent: int
) -> None:
    assert _rollout(percent, group).is_enabled("f", {"userId": user}) is in_rollout(
        user, group, percent
    )
