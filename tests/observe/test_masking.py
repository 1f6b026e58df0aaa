"""PII masking: no configured secret survives, at any nesting depth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.observe._masking import DEFAULT_MASK_KEYS, PiiMasker

MASKER = PiiMasker()
SECRET = "S3cr3t-Value-9f8e7d"

safe_keys = st.text(alphabet="abcdefghijklmnoqrvwxyz", min_size=1, max_size=8).filter(
    lambda k: not MASKER.is_sensitive_key(k)
)
sensitive_keys = st.sampled_from(
    [*DEFAULT_MASK_KEYS, "user_password", "X-Api-Key", "AUTHORIZATION", "refresh_token"]
)
leaves = st.one_of(st.integers(), st.text(alphabet="abc xyz", max_size=10), st.none())


def with_secret(secret: Any) -> st.SearchStrategy[Any]:
    """Trees of dicts/lists/tuples in which ``secret`` sits under a sensitive key."""
    base = st.builds(lambda k: {k: secret}, sensitive_keys)
    return st.recursive(
        base,
        lambda children: st.one_of(
            st.builds(
                lambda k, c, extra: {**extra, k: c},
                safe_keys,
                children,
                st.dictionaries(safe_keys, leaves, max_size=3),
            ),
            st.builds(lambda c, extra: [*extra, c], children, st.lists(leaves, max_size=3)),
            st.builds(lambda c: (c,), children),
        ),
        max_leaves=12,
    )


@given(with_secret(SECRET))
def test_secret_under_sensitive_key_never_survives(event: Any) -> None:
    rendered = json.dumps(MASKER.mask(event), default=str)
    assert SECRET not in rendered


@given(with_secret({"nested": [SECRET, {"deep": SECRET}]}))
def test_whole_subtree_under_sensitive_key_is_masked(event: Any) -> None:
    assert SECRET not in json.dumps(MASKER.mask(event), default=str)


emails = st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}@[a-z]{2,8}\.(com|org|io)", fullmatch=True)


@given(emails, st.recursive(leaves, lambda c: st.lists(c, max_size=3), max_leaves=5))
def test_email_values_are_masked_anywhere(email: str, noise: Any) -> None:
    event = {"msg": f"user {email} signed up", "items": [noise, {"note": email}]}
    assert email not in json.dumps(MASKER.mask(event), default=str)


def test_input_is_not_modified() -> None:
    event = {"password": "x", "inner": {"token": "y"}}
    MASKER.mask(event)
    assert event == {"password": "x", "inner": {"token": "y"}}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "eyJhbGciOiJIUzI1NiJ9"),
        ("card 4111-1111-1111-1111 charged", "4111-1111-1111-1111"),
        ("card 4242424242424242", "4242424242424242"),
        ("call +44 20 7946 0958 now", "7946 0958"),
        ("call (555) 123-4567", "123-4567"),
        ("mail a.b+c@sub.example.co.uk", "a.b+c@sub.example.co.uk"),
    ],
)
def test_value_patterns(text: str, secret: str) -> None:
    assert secret not in MASKER.mask_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123 shipped",  # fails the Luhn check: not a card
        "at 2024-05-01 12:30:00",
        "took 1500 ms",
        "request 9f8e7d6c",
    ],
)
def test_ordinary_values_are_kept(text: str) -> None:
    assert MASKER.mask_text(text) == text


def test_objects_are_masked_through_repr_only_when_needed() -> None:
    class User:
        def __repr__(self) -> str:
            return "User(email='x@example.com')"

    class Plain:
        pass

    plain = Plain()
    assert MASKER.mask({"u": User()})["u"] == "User(email='***')"
    assert MASKER.mask({"p": plain})["p"] is plain


def test_custom_keys_and_replacement() -> None:
    masker = PiiMasker(keys=["iban"], replacement="[redacted]")
    assert masker.mask({"IBAN": "DE89", "password": "kept"}) == {
        "IBAN": "[redacted]",
        "password": "kept",
    }


def test_bad_replacement_is_rejected() -> None:
    with pytest.raises(ValueError, match="replacement"):
        PiiMasker(replacement="leak@example.com")


def test_depth_is_bounded() -> None:
    deep: Any = SECRET + "@example.com"
    for _ in range(100):
        deep = [deep]
    assert "example.com" not in json.dumps(PiiMasker(max_depth=10).mask(deep))


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=3, max_size=12).filter(
        lambda k: k.strip("_-")
    ),
    st.text(min_size=1, max_size=30),
    st.integers(0, 6),
)
def test_any_configured_key_masks_any_value_at_any_depth(key: str, secret: str, depth: int) -> None:
    masker = PiiMasker(keys=[key])
    event: Any = {key.upper(): secret, f"x_{key}_y": {"v": secret}}
    for level in range(depth):
        event = {"level": level, "child": [event, (None, event)]}
    masked = masker.mask(event)

    def values(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [v for item in node.values() for v in values(item)]
        if isinstance(node, list | tuple):
            return [v for item in node for v in values(item)]
        return [node]

    assert secret not in values(masked)


def test_trace_ids_and_generated_request_ids_are_never_masked() -> None:
    from safeship.observe._masking import PiiMasker
    from safeship.web._request_id import _random_id

    masker = PiiMasker()
    trace = "4111111111111111" + "0" * 16  # a Luhn-valid run of digits inside a trace id
    assert masker.mask({"trace_id": trace})["trace_id"] == trace
    assert masker.mask({"card": "4111 1111 1111 1111"})["card"] == "***"
    ids = {_random_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Hex ids hold digit runs: as a request id, a Luhn-valid run is written as it is.
    rid = "4111111111111111" + "abcdef0123456789"
    assert masker.mask({"request_id": rid})["request_id"] == rid
    assert all(masker.mask({"request_id": i})["request_id"] == i for i in ids)
