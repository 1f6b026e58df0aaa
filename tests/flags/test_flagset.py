"""The public surface of ``FlagSet``: building, evaluating, reporting, round-tripping."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.flags import DISABLED_VARIANT, Context, FlagSet, FlagStateError, Variant

STATE: dict[str, Any] = {
    "version": 2,
    "features": [
        {"name": "on", "enabled": True, "strategies": [{"name": "default"}], "description": "x"},
        {"name": "off", "enabled": False, "strategies": [{"name": "default"}]},
        {
            "name": "pro-only",
            "enabled": True,
            "strategies": [
                {
                    "name": "default",
                    "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro"]}],
                }
            ],
            "variants": [
                {"name": "blue", "weight": 1, "payload": {"type": "string", "value": "#00f"}}
            ],
        },
    ],
    "segments": [],
}


def flags() -> FlagSet:
    return FlagSet.from_unleash(STATE)


def test_unknown_flags_answer_the_callers_default() -> None:
    assert flags().is_enabled("nope") is False
    assert flags().is_enabled("nope", {"userId": "1"}, default=True) is True
    assert flags().variant("nope") is DISABLED_VARIANT


def test_context_may_be_none_a_dict_or_a_context_object() -> None:
    snapshot = flags()
    assert snapshot.is_enabled("on") is True
    assert snapshot.is_enabled("pro-only") is False
    assert snapshot.is_enabled("pro-only", {"properties": {"plan": "pro"}}) is True
    assert snapshot.is_enabled("pro-only", Context(properties={"plan": "pro"})) is True
    assert (
        snapshot.variant("pro-only", Context(user_id="7", properties={"plan": "pro"})).name
        == "blue"
    )


def test_variant_of_a_flag_that_is_off_is_disabled_with_feature_disabled() -> None:
    assert flags().variant("off") == Variant("disabled", enabled=False, feature_enabled=False)


def test_variant_of_a_flag_without_variants_keeps_feature_enabled() -> None:
    assert flags().variant("on") == Variant("disabled", enabled=False, feature_enabled=True)


def test_variant_payloads_are_read_only_dicts() -> None:
    payload = flags().variant("pro-only", {"properties": {"plan": "pro"}}).payload
    assert payload == {"type": "string", "value": "#00f"}
    assert isinstance(payload, dict)
    with pytest.raises(TypeError):
        payload["value"] = "#f00"


def test_names_membership_and_length() -> None:
    snapshot = flags()
    assert snapshot.names() == ("on", "off", "pro-only")
    assert "on" in snapshot
    assert "nope" not in snapshot
    assert len(snapshot) == 3
    assert list(snapshot) == ["on", "off", "pro-only"]


def test_to_unleash_round_trips_and_shares_nothing_with_the_caller() -> None:
    state = {**STATE, "features": [dict(f) for f in STATE["features"]]}
    snapshot = FlagSet.from_unleash(state)
    state["features"][0]["enabled"] = False  # the caller's copy changes later...
    assert snapshot.is_enabled("on") is True  # ...the snapshot does not
    exported = snapshot.to_unleash()
    assert exported == STATE
    exported["features"].clear()
    assert FlagSet.from_unleash(snapshot.to_unleash()).names() == snapshot.names()


def test_feature_returns_a_copy_of_the_definition() -> None:
    snapshot = flags()
    definition = snapshot.feature("on")
    assert definition["description"] == "x"
    definition["enabled"] = False
    assert snapshot.feature("on")["enabled"] is True
    with pytest.raises(KeyError):
        snapshot.feature("nope")


def test_constant_says_which_flags_no_context_can_change() -> None:
    snapshot = flags()
    assert snapshot.constant("on") is True
    assert snapshot.constant("off") is False
    assert snapshot.constant("pro-only") is None


def test_a_flagset_is_immutable_and_built_by_from_unleash() -> None:
    snapshot = flags()
    with pytest.raises(AttributeError):
        snapshot._checks = {}
    with pytest.raises(TypeError, match="from_unleash"):
        FlagSet()
    assert FlagSet.empty().names() == ()


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ([], "state"),
        ({"features": "on"}, "features"),
        ({"features": [], "segments": {}}, "segments"),
    ],
)
def test_unusable_state_shapes_raise_a_clear_error(state: Any, field: str) -> None:
    with pytest.raises(FlagStateError) as caught:
        FlagSet.from_unleash(state)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


BAD_ENTRIES = [
    ({"features": [1]}, "features[0]"),
    ({"features": [{"enabled": True}]}, "features[0].name"),
    ({"features": [{"name": "a"}, {"name": "a"}]}, "name"),
    ({"features": [], "segments": [{"constraints": []}]}, "segments[0]"),
    ({"features": [], "segments": [{"id": [1], "constraints": []}]}, "segments[0]"),
    ({"features": [], "segments": [{"id": True, "constraints": []}]}, "segments[0]"),
]


@pytest.mark.parametrize(("state", "field"), BAD_ENTRIES)
def test_strict_compilation_refuses_an_unusable_entry(state: Any, field: str) -> None:
    with pytest.raises(FlagStateError) as caught:
        FlagSet.from_unleash(state, strict=True)
    assert caught.value.field == field


@pytest.mark.parametrize(("state", "field"), BAD_ENTRIES)
def test_one_unusable_entry_never_takes_the_other_flags_down(
    state: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"name": "good", "enabled": True, "strategies": []}
    with caplog.at_level(logging.WARNING, logger="safeship.flags"):
        snapshot = FlagSet.from_unleash({**state, "features": [*state["features"], good]})
    assert snapshot.is_enabled("good")
    skipped = [r for r in caplog.records if r.getMessage() == "flags.state_entry_skipped"]
    assert [r.field for r in skipped] == [field]  # type: ignore[attr-defined]


def test_a_strategy_using_an_unusable_segment_is_off_and_the_rest_still_works() -> None:
    state = {
        "features": [
            {"name": "uses", "enabled": True, "strategies": [{"name": "default", "segments": [7]}]},
            {
                "name": "other",
                "enabled": True,
                "strategies": [{"name": "default", "segments": [8]}],
            },
            {
                "name": "bad-ref",
                "enabled": True,
                "strategies": [{"name": "default", "segments": [[1]]}],
            },
        ],
        "segments": [{"id": 7, "constraints": "everyone"}, {"id": 8, "constraints": []}],
    }
    snapshot = FlagSet.from_unleash(state)
    assert not snapshot.is_enabled("uses") and snapshot.is_enabled("other")
    assert not snapshot.is_enabled("bad-ref")
    assert snapshot.problems["uses"][0].field.startswith("strategies[0].segments[0]")


def test_the_error_names_the_flag() -> None:
    with pytest.raises(FlagStateError, match="flag 'a' name: appears twice"):
        FlagSet.from_unleash({"features": [{"name": "a"}, {"name": "a"}]}, strict=True)


BROKEN = {
    "features": [
        {
            "name": "broken",
            "enabled": True,
            "strategies": [
                {
                    "name": "default",
                    "constraints": [
                        {"contextName": "userId", "operator": "REGEX", "value": "(unclosed"},
                        {"contextName": "joined", "operator": "DATE_AFTER", "value": "yesterday"},
                    ],
                },
                {"name": "remoteAddress", "parameters": {"IPs": "10.0.0.1, nonsense"}},
            ],
        },
        {"name": "fine", "enabled": True, "strategies": []},
    ]
}


def test_a_broken_rule_is_off_logged_once_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="safeship.flags"):
        snapshot = FlagSet.from_unleash(BROKEN)
    warnings = [r for r in caplog.records if r.name == "safeship.flags"]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == "flags.rule_broken"
    assert warnings[0].flag == "broken"  # type: ignore[attr-defined]
    problems = snapshot.problems["broken"]
    assert [p.field for p in problems] == [
        "strategies[0].constraints[0].value",
        "strategies[1].parameters.IPs[1]",
    ]
    assert [p.effect for p in problems] == ["off", "ignored"]
    assert "fine" not in snapshot.problems
    caplog.clear()
    for _ in range(100):
        assert snapshot.is_enabled("broken", {"userId": "x"}) is False
        assert snapshot.is_enabled("broken", {"remoteAddress": "10.0.0.1"}) is True
    assert caplog.records == []  # nothing logged per call


def test_strict_compilation_raises_on_the_first_broken_rule() -> None:
    with pytest.raises(FlagStateError, match=r"strategies\[0\]\.constraints\[0\]\.value"):
        FlagSet.from_unleash(BROKEN, strict=True)


def test_a_failing_evaluation_answers_the_default_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    snapshot = flags()
    with caplog.at_level(logging.ERROR, logger="safeship.flags"):
        for _ in range(3):
            assert snapshot.is_enabled("pro-only", "not a mapping", default=True) is True  # type: ignore[arg-type]
            assert snapshot.variant("pro-only", 42) is DISABLED_VARIANT  # type: ignore[arg-type]
    errors = [r for r in caplog.records if "flags.evaluation_failed" in r.getMessage()]
    assert len(errors) == 1


def test_a_name_that_is_not_text_is_an_unknown_flag() -> None:
    assert flags().is_enabled(["on"], default=True) is True  # type: ignore[arg-type]
    assert flags().variant({"on": 1}) is DISABLED_VARIANT  # type: ignore[arg-type]


def test_constant_flags_do_not_even_look_at_the_context() -> None:
    assert flags().is_enabled("on", "anything") is True  # type: ignore[arg-type]


def test_clock_hostname_and_randomness_can_be_injected() -> None:
    state = {
        "features": [
            {
                "name": "later",
                "enabled": True,
                "strategies": [
                    {
                        "name": "default",
                        "constraints": [
                            {
                                "contextName": "currentTime",
                                "operator": "DATE_AFTER",
                                "value": "2040-01-01T00:00:00.000Z",
                            }
                        ],
                    }
                ],
            },
            {
                "name": "here",
                "enabled": True,
                "strategies": [
                    {"name": "applicationHostname", "parameters": {"hostNames": "box-1"}}
                ],
            },
        ]
    }
    future = FlagSet.from_unleash(state, clock=lambda: datetime(2041, 1, 1, tzinfo=UTC))
    assert future.is_enabled("later") is True
    assert FlagSet.from_unleash(state, hostname="BOX-1").is_enabled("here") is True
    assert FlagSet.from_unleash(state, hostname="box-2").is_enabled("here") is False


def test_context_objects_behave_like_unleash_mappings() -> None:
    context = Context(user_id="7", environment="prod", properties={"plan": "pro"})
    assert context["userId"] == "7"
    assert context.get("sessionId") is None
    assert dict(context) == {"userId": "7", "environment": "prod", "properties": {"plan": "pro"}}
    assert context.to_unleash() == dict(context)
    assert Context.from_unleash({"userId": "7", "tier": "gold"}).properties == {"tier": "gold"}
    assert hash(context) == hash(
        Context(user_id="7", environment="prod", properties={"plan": "pro"})
    )


def test_non_string_context_values_compare_as_text() -> None:
    state = {
        "features": [
            {
                "name": "f",
                "enabled": True,
                "strategies": [
                    {
                        "name": "default",
                        "constraints": [
                            {"contextName": "seats", "operator": "NUM_GT", "value": "3"},
                            {"contextName": "beta", "operator": "IN", "values": ["true"]},
                        ],
                    }
                ],
            }
        ]
    }
    snapshot = FlagSet.from_unleash(state)
    assert snapshot.is_enabled("f", {"properties": {"seats": 4, "beta": True}}) is True
    assert snapshot.is_enabled("f", {"properties": {"seats": 2, "beta": True}}) is False


def test_generated_source_holds_no_text_from_the_state() -> None:
    sneaky = '"); import os; os.system("echo pwned"); ("'
    state = {
        "features": [
            {
                "name": sneaky,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": "50", "stickiness": sneaky, "groupId": sneaky},
                        "constraints": [
                            {"contextName": sneaky, "operator": "IN", "values": [sneaky]}
                        ],
                    }
                ],
                "variants": [{"name": sneaky, "weight": 1}],
            }
        ]
    }
    snapshot = FlagSet.from_unleash(state)
    source = snapshot._flags[sneaky].source
    assert "os" not in source
    assert "pwned" not in source
    assert snapshot.is_enabled(sneaky, {"properties": {sneaky: sneaky}}) in (True, False)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "name",
        "enabled",
        "strategies",
        "variants",
        "dependencies",
        "segments",
        "constraints",
        "parameters",
        "operator",
        "contextName",
        "values",
        "value",
        "id",
        "feature",
        "weight",
    ]
)
_UNLEASH_LIKE = st.recursive(
    _JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(features=st.lists(_UNLEASH_LIKE, max_size=4), segments=st.lists(_UNLEASH_LIKE, max_size=3))
def test_no_stored_entry_makes_compilation_raise(features: list[Any], segments: list[Any]) -> None:
    """Whatever the entries hold, the snapshot compiles and evaluates without raising."""
    snapshot = FlagSet.from_unleash({"features": features, "segments": segments})
    for name in snapshot.names():
        snapshot.is_enabled(name, {"userId": "1"})
        snapshot.variant(name, {"userId": "1"})
