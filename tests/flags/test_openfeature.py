"""The OpenFeature provider, through the OpenFeature client as applications use it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from safeship.flags import FlagSet
from safeship.flags.openfeature import SafeshipProvider


def _variant_flag(name: str, payload_type: str | None, value: str = "") -> dict[str, Any]:
    variant: dict[str, Any] = {"name": f"{name}-variant", "weight": 1}
    if payload_type is not None:
        variant["payload"] = {"type": payload_type, "value": value}
    return {"name": name, "enabled": True, "strategies": [], "variants": [variant]}


STATE: dict[str, Any] = {
    "features": [
        {
            "name": "beta",
            "enabled": True,
            "strategies": [{"name": "userWithId", "parameters": {"userIds": "u1"}}],
        },
        {
            "name": "eu-only",
            "enabled": True,
            "strategies": [
                {
                    "name": "default",
                    "constraints": [
                        {"contextName": "region", "operator": "IN", "values": ["eu"]},
                        {"contextName": "environment", "operator": "IN", "values": ["prod"]},
                    ],
                }
            ],
        },
        {
            "name": "off",
            "enabled": False,
            "strategies": [],
            "variants": [{"name": "x", "weight": 1}],
        },
        {"name": "bare", "enabled": True, "strategies": []},
        _variant_flag("color", "string", "blue"),
        _variant_flag("named", None),
        _variant_flag("limit", "number", "25"),
        _variant_flag("ratio", "number", "0.75"),
        _variant_flag("not-a-number", "number", "lots"),
        _variant_flag("settings", "json", '{"retries": 3}'),
        _variant_flag("bad-json", "json", "{nope"),
        _variant_flag("scalar-json", "json", "3"),
        _variant_flag("regions", "csv", "eu, us"),
    ]
}


@pytest.fixture
def client() -> Iterator[Any]:
    api.set_provider(SafeshipProvider(FlagSet.from_unleash(STATE)), "safeship-test")
    yield api.get_client("safeship-test")
    api.shutdown()


def test_boolean_flags_use_the_targeting_key_as_user_id(client: Any) -> None:
    assert client.get_boolean_value("beta", False, EvaluationContext("u1")) is True
    assert client.get_boolean_value("beta", False, EvaluationContext("u2")) is False
    details = client.get_boolean_details("beta", False, EvaluationContext("u1"))
    assert details.reason == Reason.TARGETING_MATCH


def test_attributes_reach_the_rules(client: Any) -> None:
    context = EvaluationContext("u1", {"region": "eu", "environment": "prod"})
    assert client.get_boolean_value("eu-only", False, context) is True
    nested = EvaluationContext(None, {"properties": {"region": "eu"}, "environment": "prod"})
    assert client.get_boolean_value("eu-only", False, nested) is True
    assert (
        client.get_boolean_value("eu-only", False, EvaluationContext("u1", {"region": "us"}))
        is False
    )


def test_unknown_flags_are_flag_not_found(client: Any) -> None:
    details = client.get_boolean_details("ghost", True)
    assert details.value is True
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert client.get_string_details("ghost", "dflt").error_code == ErrorCode.FLAG_NOT_FOUND


def test_string_values_come_from_the_payload_or_the_variant_name(client: Any) -> None:
    details = client.get_string_details("color", "red")
    assert (details.value, details.variant, details.reason) == (
        "blue",
        "color-variant",
        Reason.SPLIT,
    )
    assert client.get_string_value("named", "x") == "named-variant"


def test_flags_that_are_off_or_without_variants_give_the_default(client: Any) -> None:
    off = client.get_string_details("off", "dflt")
    assert (off.value, off.reason, off.error_code) == ("dflt", Reason.DISABLED, None)
    bare = client.get_string_details("bare", "dflt")
    assert (bare.value, bare.reason) == ("dflt", Reason.DEFAULT)


def test_numbers_objects_and_their_errors(client: Any) -> None:
    assert client.get_integer_value("limit", 0) == 25
    assert client.get_float_value("ratio", 0.0) == 0.75
    assert client.get_integer_details("ratio", 0).error_code == ErrorCode.TYPE_MISMATCH
    assert client.get_float_details("not-a-number", 1.0).error_code == ErrorCode.PARSE_ERROR
    assert client.get_float_details("color", 1.0).error_code == ErrorCode.TYPE_MISMATCH
    assert client.get_object_value("settings", {}) == {"retries": 3}
    assert client.get_object_value("regions", []) == ["eu", "us"]
    assert client.get_object_details("bad-json", {}).error_code == ErrorCode.PARSE_ERROR
    assert client.get_object_details("scalar-json", {}).error_code == ErrorCode.TYPE_MISMATCH
    assert client.get_object_details("limit", {}).error_code == ErrorCode.TYPE_MISMATCH


def test_unexpected_failures_are_general_errors() -> None:
    class Exploding:
        def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
            raise RuntimeError("boom")

        def variant(self, name: str, context: Any = None) -> Any:
            raise RuntimeError("boom")

        def __contains__(self, name: object) -> bool:
            return True

    provider = SafeshipProvider(Exploding())
    assert (
        provider.resolve_boolean_details(flag_key="x", default_value=True).error_code
        == ErrorCode.GENERAL
    )
    assert provider.resolve_string_details(flag_key="x", default_value="d").value == "d"


def test_metadata_is_one_cached_object() -> None:
    provider = SafeshipProvider(FlagSet.empty(), name="mine")
    assert provider.get_metadata() is provider.get_metadata()
    assert provider.get_metadata().name == "mine"


async def test_async_evaluation_works_too(client: Any) -> None:
    assert await client.get_boolean_value_async("beta", False, EvaluationContext("u1")) is True
    assert await client.get_string_value_async("color", "red") == "blue"


def test_the_provider_follows_a_source_that_swaps_snapshots() -> None:
    class Live:
        def __init__(self) -> None:
            self.current = FlagSet.from_unleash({"features": [{"name": "f", "enabled": False}]})

        def is_enabled(self, name: str, context: Any = None, default: bool = False) -> bool:
            return self.current.is_enabled(name, context, default)

        def variant(self, name: str, context: Any = None) -> Any:
            return self.current.variant(name, context)

        def __contains__(self, name: object) -> bool:
            return name in self.current

    live = Live()
    provider = SafeshipProvider(live)
    assert provider.resolve_boolean_details(flag_key="f", default_value=False).value is False
    live.current = FlagSet.from_unleash({"features": [{"name": "f", "enabled": True}]})
    assert provider.resolve_boolean_details(flag_key="f", default_value=False).value is True


def test_without_the_sdk_the_import_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['openfeature'] = None\n"
        "try:\n    import safeship.flags.openfeature\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install safeship[openfeature]" in result.stdout
