"""``FlagSet.from_unleash`` on Unleash's delta format: events fold in order."""

from __future__ import annotations

import pytest

from safeship.flags import FlagSet, FlagStateError

ON = {"name": "on", "enabled": True, "strategies": [{"name": "default"}]}
SEGMENTED = {
    "name": "segmented",
    "enabled": True,
    "strategies": [{"name": "default", "segments": [7]}],
}
ONLY_ABC = {
    "id": 7,
    "constraints": [{"contextName": "appName", "operator": "IN", "values": ["abc"]}],
}


def test_events_apply_in_order_and_fold_into_the_full_format() -> None:
    flags = FlagSet.from_unleash(
        {
            "events": [
                {"type": "hydration", "features": [ON], "segments": []},
                {"type": "segment-updated", "segment": ONLY_ABC},
                {"type": "feature-updated", "feature": SEGMENTED},
                {"type": "feature-updated", "feature": {**ON, "enabled": False}},
                {"type": "some-future-event", "payload": 1},
            ]
        }
    )
    assert flags.is_enabled("on") is False
    assert flags.is_enabled("segmented", {"appName": "abc"}) is True
    assert flags.is_enabled("segmented", {"appName": "xyz"}) is False
    assert {f["name"] for f in flags.to_unleash()["features"]} == {"on", "segmented"}


def test_removals_and_a_later_hydration_replace_what_came_before() -> None:
    flags = FlagSet.from_unleash(
        {
            "events": [
                {"type": "hydration", "features": [ON, SEGMENTED], "segments": [ONLY_ABC]},
                {"type": "segment-removed", "segmentId": 7},
                {"type": "feature-removed", "featureName": "on"},
            ]
        }
    )
    assert "on" not in flags
    # a strategy naming a segment that no longer exists never matches
    assert flags.is_enabled("segmented", {"appName": "abc"}) is False
    rehydrated = FlagSet.from_unleash(
        {
            "events": [
                {"type": "feature-updated", "feature": SEGMENTED},
                {"type": "hydration", "features": [ON]},
            ]
        }
    )
    assert rehydrated.names() == ("on",)


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ("nope", "events"),
        ([1], "events[0]"),
        ([{"type": "feature-updated"}], "events[0].feature"),
        ([{"type": "feature-removed", "featureName": ""}], "events[0].featureName"),
        ([{"type": "segment-updated", "segment": {"id": "7"}}], "events[0].segment.id"),
        ([{"type": "segment-removed", "segmentId": True}], "events[0].segmentId"),
        ([{"type": "hydration", "features": {}}], "events[0]"),
    ],
)
def test_an_unusable_event_is_refused_with_its_field(events: object, field: str) -> None:
    with pytest.raises(FlagStateError) as caught:
        FlagSet.from_unleash({"events": events})
    assert caught.value.field == field
