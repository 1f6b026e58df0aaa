"""Cache keys: canonical, collision-free, refused for types without an encoding."""

from __future__ import annotations

import copy as copy_module
import datetime as dt
import decimal
import enum
import uuid
from collections import namedtuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeship.cache import Cache, CacheConfigError, CacheKeyError, KeySpace, args_digest, encode

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=4), max_size=3)
    ),
    max_leaves=8,
)
calls = st.tuples(
    st.lists(values, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), values, max_size=2),
)


def _same_call(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1, 1.0 and True are different calls)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return bool(a.hex() == b.hex())
    if isinstance(a, decimal.Decimal):  # 1.0 and 1.00 are equal but keyed apart: a miss
        return str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_call(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return False
        pairs = {_canonical_key(k): k for k in b}
        return all(
            _canonical_key(k) in pairs and _same_call(a[k], b[pairs[_canonical_key(k)]]) for k in a
        )
    if isinstance(a, frozenset):
        return sorted(map(encode, a)) == sorted(map(encode, b))
    return bool(a == b)


def _canonical_key(k: Any) -> bytes:
    return encode(k)


@settings(max_examples=250, deadline=None)
@given(calls, calls, st.booleans())
def test_no_two_distinct_argument_tuples_share_a_key(one: Any, other: Any, copy: bool) -> None:
    two = copy_module.deepcopy(one) if copy else other  # equal calls half of the time
    same = _same_call(one[0], two[0]) and _same_call(one[1], two[1])
    assert same or not copy
    assert (args_digest("f", *one) == args_digest("f", *two)) == same


@settings(max_examples=200, deadline=None)
@given(calls)
def test_the_same_call_always_has_the_same_key(call: Any) -> None:
    args, kwargs = call
    reordered = dict(reversed(list(kwargs.items())))
    assert args_digest("f", args, kwargs) == args_digest("f", args, reordered)


def test_names_and_arguments_cannot_run_into_each_other() -> None:
    assert args_digest("svc.user", ("s_list",), {}) != args_digest("svc.users", ("_list",), {})
    assert encode(("ab", "c")) != encode(("a", "bc"))
    assert encode([1, 2]) != encode((1, 2))


def test_equal_numbers_of_different_types_are_different_keys() -> None:
    keys = {encode(v) for v in (1, 1.0, True, decimal.Decimal(1), "1", b"1")}
    assert len(keys) == 6
    assert encode(0.0) != encode(-0.0)


def test_rich_values_encode_by_value_not_by_address() -> None:
    Point = namedtuple("Point", "x y")

    class Colour(enum.Enum):
        RED = 1

    class Product:
        def __init__(self, pk: int) -> None:
            self.pk = pk

        def __cache_key__(self) -> int:
            return self.pk

    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for value in (Point(1, 2), Colour.RED, Product(7), stamp, uuid.UUID(int=5), {1, 2}):
        assert encode(value) == encode(value)
    assert encode(Product(7)) == encode(Product(7))
    assert encode(Point(1, 2)) != encode((1, 2))


def test_a_value_without_an_encoding_is_refused_with_what_to_do() -> None:
    with pytest.raises(CacheKeyError, match="__cache_key__"):
        encode(object())
    nested: Any = []
    for _ in range(40):
        nested = [nested]
    with pytest.raises(CacheKeyError, match="deeper"):
        encode(nested)


def test_the_full_key_names_env_namespace_and_version() -> None:
    space = KeySpace(env="prod", namespace="catalog", version=3)
    key = space.call_key("m.f", (1,), {})
    env, namespace, version, digest = key.split(":")
    assert (env, namespace, version, len(digest)) == ("prod", "catalog", "3", 64)
    bumped = KeySpace(env="prod", namespace="catalog", version=4)
    assert bumped.call_key("m.f", (1,), {}) != key
    assert KeySpace(env="staging", namespace="catalog", version=3).call_key("m.f", (1,), {}) != key


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("namespace", {"namespace": "a:b"}),
        ("env", {"namespace": "ok", "env": ""}),
        ("version", {"namespace": "ok", "version": -1}),
        ("ttl", {"namespace": "ok", "ttl": 0}),
        ("max_entries", {"namespace": "ok", "max_entries": -5}),
        ("xfetch_beta", {"namespace": "ok", "xfetch_beta": 99}),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_field(
    field: str, options: dict[str, Any]
) -> None:
    with pytest.raises(CacheConfigError, match=field):
        Cache(**options)


def test_an_envelope_keeps_key_times_tags_and_payload_and_refuses_garbage() -> None:
    from safeship.cache._entry import Entry, decode_envelope, encode_envelope
    from safeship.cache._errors import CacheError

    entry = Entry("prod:ns:1:abc", None, expires=10.5, stale_until=20.0, delta=0.25, beta=1.0,
                  tags=("product:42", "café"))  # fmt: skip
    data = encode_envelope(entry, b'{"v":1}')
    assert decode_envelope(data) == (
        "prod:ns:1:abc",
        10.5,
        20.0,
        0.25,
        ("product:42", "café"),
        b'{"v":1}',
    )
    for broken in (b"", b"ss2", data[:20], b"xx" + data):
        with pytest.raises(CacheError):
            decode_envelope(broken)
