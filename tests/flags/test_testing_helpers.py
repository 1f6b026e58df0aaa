"""The helpers applications use to force flag values in their own tests."""

from __future__ import annotations

import types
from typing import Any

import pytest

from safeship.flags import FlagSet, FlagStateError, Variant
from safeship.flags._model import FrozenDict
from safeship.flags.testing import fixed_flags, force_flags
from safeship.flags.testing import forced_flags as forced_flags  # the fixture, used by name

REAL = FlagSet.from_unleash(
    {
        "features": [
            {"name": "checkout-v2", "enabled": False, "strategies": []},
            {"name": "search", "enabled": True, "strategies": []},
        ]
    }
)


def test_fixed_flags_from_plain_values() -> None:
    payload = FrozenDict({"type": "json", "value": "{}"})
    flags = fixed_flags(
        {"on": True, "off": False, "color": "blue", "rich": Variant("gold", True, True, payload)}
    )
    assert flags.is_enabled("on", {"userId": "anyone"}) is True
    assert flags.is_enabled("off") is False
    assert flags.variant("color").name == "blue"
    assert flags.variant("rich").payload == payload
    assert fixed_flags(checkout_v2=True).is_enabled("checkout_v2") is True


def test_fixed_flags_over_a_base_keep_the_other_flags() -> None:
    flags = fixed_flags({"checkout-v2": True}, base=REAL)
    assert flags.is_enabled("checkout-v2") is True
    assert flags.is_enabled("search") is True
    assert REAL.is_enabled("checkout-v2") is False


def test_a_feature_object_forces_a_rule() -> None:
    only_u1 = {
        "enabled": True,
        "strategies": [{"name": "userWithId", "parameters": {"userIds": "u1"}}],
    }
    flags = fixed_flags({"beta": only_u1})
    assert flags.is_enabled("beta", {"userId": "u1"}) is True
    assert flags.is_enabled("beta", {"userId": "u2"}) is False


def test_bad_forced_values_are_refused() -> None:
    with pytest.raises(TypeError, match="'f'"):
        fixed_flags({"f": 3})  # type: ignore[dict-item]
    with pytest.raises(FlagStateError):
        fixed_flags({"f": {"enabled": True, "strategies": [{"name": "nope"}]}})


def test_force_flags_swaps_and_restores_the_snapshot() -> None:
    app = types.SimpleNamespace(flags=REAL)
    with force_flags(app, {"checkout-v2": True}) as forced:
        assert app.flags is forced
        assert app.flags.is_enabled("checkout-v2") is True
        assert app.flags.is_enabled("search") is True
    assert app.flags is REAL


def test_force_flags_on_an_empty_holder_removes_the_attribute_afterwards() -> None:
    holder = types.SimpleNamespace()
    with force_flags(holder, {"x": True}, attribute="features"):
        assert holder.features.is_enabled("x") is True
    assert not hasattr(holder, "features")


def test_the_pytest_fixture_undoes_itself(forced_flags: Any) -> None:
    app = types.SimpleNamespace(flags=REAL)
    forced_flags(app, {"search": False})
    assert app.flags.is_enabled("search") is False
