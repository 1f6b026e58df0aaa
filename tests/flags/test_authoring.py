"""Authoring edits produce plain Unleash definitions that evaluate as the words say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.flags import _authoring as authoring
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags._flagset import FlagSet


def evaluate(feature: dict[str, object], context: dict[str, object]) -> bool:
    return FlagSet.from_unleash({"version": 1, "features": [feature]}).is_enabled(
        str(feature["name"]), context
    )


def test_new_feature_is_off_and_on_for_everyone_when_enabled() -> None:
    feature = authoring.new_feature("checkout-v2")
    assert not evaluate(feature, {"userId": "1"})
    assert evaluate(authoring.set_enabled(feature, True), {"userId": "1"})


@pytest.mark.parametrize("text", ["25", "25%", " 25 % ", 25, 25.0])
def test_percentages_parse(text: object) -> None:
    assert authoring.parse_percent(text) == 25.0  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "abc", "-1", "101%", "nan", "1e9"])
def test_bad_percentages_are_refused(text: str) -> None:
    with pytest.raises(FlagDefinitionError, match="rollout"):
        authoring.parse_percent(text)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 201, "tab\there"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(FlagDefinitionError, match="name"):
        authoring.new_feature(name)


def test_rollout_share_is_close_to_the_percentage() -> None:
    feature = authoring.set_enabled(
        authoring.rollout(authoring.new_feature("r"), 30, stickiness="userId"), True
    )
    flags = FlagSet.from_unleash({"version": 1, "features": [feature]})
    on = sum(flags.is_enabled("r", {"userId": str(i)}) for i in range(20_000))
    assert 0.28 < on / 20_000 < 0.32
    assert authoring.rollout_percent(feature) == 30.0


@given(low=st.integers(0, 100), high=st.integers(0, 100), user=st.text(min_size=1, max_size=20))
def test_rollout_is_monotonic_for_the_same_group(low: int, high: int, user: str) -> None:
    low, high = sorted((low, high))
    base = authoring.set_enabled(authoring.new_feature("mono"), True)
    at_low = authoring.rollout(base, low, stickiness="userId")
    at_high = authoring.rollout(at_low, high, stickiness="userId")
    if evaluate(at_low, {"userId": user}):
        assert evaluate(at_high, {"userId": user})


def test_targets_are_on_whatever_the_rollout_says_and_can_be_removed() -> None:
    feature = authoring.set_enabled(authoring.rollout(authoring.new_feature("t"), 0), True)
    feature = authoring.target(feature, ["7", "9", "7", " "], field="tenantId")
    assert feature["strategies"][1]["constraints"][0]["values"] == ["7", "9"]
    assert evaluate(feature, {"properties": {"tenantId": "7"}})
    assert not evaluate(feature, {"properties": {"tenantId": "8"}})
    again = authoring.rollout(feature, 0)  # a new rollout keeps the targets
    assert evaluate(again, {"properties": {"tenantId": "9"}})
    removed = authoring.target(again, [], field="tenantId")
    assert not evaluate(removed, {"properties": {"tenantId": "7"}})


def test_schedule_limits_the_flag_to_its_window() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    feature = authoring.set_enabled(authoring.new_feature("s"), True)
    scheduled = authoring.schedule(feature, enable_at=start, disable_at=start + timedelta(days=1))
    before, during, after = (
        start - timedelta(hours=1),
        start + timedelta(hours=1),
        start + timedelta(days=2),
    )
    assert not evaluate(scheduled, {"currentTime": before.isoformat()})
    assert evaluate(scheduled, {"currentTime": during.isoformat()})
    assert not evaluate(scheduled, {"currentTime": after.isoformat()})
    cleared = authoring.schedule(scheduled)
    assert evaluate(cleared, {"currentTime": after.isoformat()})


def test_schedule_needs_zones_and_order() -> None:
    feature = authoring.new_feature("s")
    with pytest.raises(FlagDefinitionError, match="timezone"):
        authoring.schedule(feature, enable_at=datetime(2030, 1, 1))  # noqa: DTZ001
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(FlagDefinitionError, match="after enable_at"):
        authoring.schedule(feature, enable_at=moment, disable_at=moment)


def test_edits_never_mutate_their_input() -> None:
    feature = authoring.new_feature("pure")
    snapshot = repr(feature)
    authoring.rollout(feature, 50)
    authoring.target(feature, ["1"])
    authoring.schedule(feature, enable_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert repr(feature) == snapshot


def test_targeting_a_new_flag_turns_it_on_for_those_ids_only() -> None:
    feature = authoring.set_enabled(authoring.new_feature("only-some"), True)
    targeted = authoring.target(feature, ["a"])
    assert evaluate(targeted, {"userId": "a"})
    assert not evaluate(targeted, {"userId": "b"})


def test_a_rollout_without_stickiness_keeps_the_flags_own() -> None:
    from safeship.flags import _authoring as authoring

    feature = authoring.new_feature("sticky")
    at_25 = authoring.rollout(feature, "25%", stickiness="userId")
    at_100 = authoring.rollout(at_25, "100%")
    assert authoring.rollout_stickiness(at_100) == "userId"
    assert authoring.rollout_stickiness(authoring.rollout(feature, "10%")) == "default"
