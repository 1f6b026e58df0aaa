"""What OFREP reads of a flag once per snapshot decides ``TARGETING_KEY_MISSING`` and the
reason exactly as reading the definition on each request did."""

from __future__ import annotations

from typing import Any

import pytest

from safeship.flags import FlagSet
from safeship.server.flag_feed import ServedSnapshot
from safeship.server.routes.ofrep import OfrepError, evaluate, flag_facts


def _flag(name: str, strategy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, "strategies": [strategy], **extra}


def _rollout(stickiness: str, rollout: str = "50") -> dict[str, Any]:
    parameters = {"rollout": rollout, "stickiness": stickiness, "groupId": "g"}
    return {"name": "flexibleRollout", "parameters": parameters}


STATE = {
    "version": 1,
    "features": [
        _flag("by-user", _rollout("userId")),
        _flag("by-default", _rollout("default")),
        _flag("everyone", _rollout("default", "100")),
        _flag("by-gradual", {"name": "gradualRolloutUserId", "parameters": {"percentage": "50"}}),
        {**_flag("off", _rollout("userId")), "enabled": False},
        _flag(
            "coloured",
            {"name": "default"},
            variants=[{"name": "blue", "weight": 1000, "weightType": "variable"}],
        ),
    ],
}


@pytest.mark.parametrize(
    ("flag", "context", "missing"),
    [
        ("by-user", {}, True),
        ("by-user", {"sessionId": "s"}, True),
        ("by-user", {"userId": "u"}, False),
        ("by-default", {}, True),
        ("by-default", {"sessionId": "s"}, False),
        ("everyone", {}, False),
        ("by-gradual", {"sessionId": "s"}, True),
        ("off", {}, False),
    ],
)
def test_targeting_key_missing(flag: str, context: dict[str, Any], missing: bool) -> None:
    snapshot = ServedSnapshot.of(3, FlagSet.from_unleash(STATE))
    assert flag_facts(snapshot, flag).hashes_missing_id(context) is missing
    if missing:
        with pytest.raises(OfrepError) as caught:
            evaluate(snapshot, flag, context)
        assert caught.value.code == "TARGETING_KEY_MISSING"
    else:
        assert evaluate(snapshot, flag, context)["key"] == flag


def test_facts_follow_the_snapshot_they_were_read_from() -> None:
    first = ServedSnapshot.of(1, FlagSet.from_unleash(STATE))
    assert evaluate(first, "coloured", {})["reason"] == "SPLIT"
    plain = {"version": 1, "features": [_flag("coloured", {"name": "default"})]}
    second = ServedSnapshot.of(2, FlagSet.from_unleash(plain))
    assert evaluate(second, "coloured", {}) == {
        "key": "coloured",
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "value": True,
        "metadata": {"enabled": True, "version": 2},
    }
    assert evaluate(first, "off", {})["reason"] == "DISABLED"
