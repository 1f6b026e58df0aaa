"""Pure pieces: key parsing, payload fingerprints, per-caller scoping (property tests)."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.idempotency._model import MAX_KEY_LENGTH, fingerprint, parse_key, scoped_key

JSON = "application/json"
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), values, max_size=6), st.randoms())
def test_a_json_body_in_any_key_order_or_spacing_has_one_fingerprint(
    body: dict[str, Any], rng: Any
) -> None:
    items = list(body.items())
    rng.shuffle(items)
    compact = json.dumps(body).encode()
    spaced = json.dumps(dict(items), indent=2).encode()
    assert fingerprint("POST", "/o", JSON, [compact]) == fingerprint("POST", "/o", JSON, [spaced])


@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_a_json_body_has_one_fingerprint_in_every_encoding_json_reads(body: dict[str, Any]) -> None:
    text = json.dumps(body, ensure_ascii=False)
    utf8 = fingerprint("POST", "/o", JSON, [text.encode()])
    for data in (
        codecs.BOM_UTF8 + text.encode(),
        text.encode("utf-16-le"),
        text.encode("utf-16"),  # with its BOM
        text.encode("utf-32-be"),
    ):
        assert fingerprint("POST", "/o", JSON, [data]) == utf8


def test_a_body_that_is_not_json_is_hashed_byte_for_byte() -> None:
    for data in (b"{", b"\xff{}", b"[1]x", b"\x00\x00"):
        assert fingerprint("POST", "/o", JSON, [data]) == fingerprint("POST", "/o", "x/y", [data])


def test_a_json_string_with_a_lone_surrogate_has_a_fingerprint_of_its_own() -> None:
    escaped = [fingerprint("POST", "/o", JSON, [b'{"a":"\\u%s"}' % c]) for c in (b"d800", b"dfff")]
    raw = fingerprint("POST", "/o", JSON, [b'{"a":"\xed\xa0\x80"}'])  # \ud800 as bytes
    assert escaped[0] != escaped[1]
    assert raw == escaped[0]  # the same string, however it was written


@given(values, values)
def test_different_json_payloads_have_different_fingerprints(a: Any, b: Any) -> None:
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    fa = fingerprint("POST", "/o", JSON, [json.dumps(a).encode()])
    fb = fingerprint("POST", "/o", JSON, [json.dumps(b).encode()])
    assert (fa == fb) == same


def test_method_target_and_raw_bodies_are_part_of_the_fingerprint() -> None:
    base = fingerprint("POST", "/orders", "text/plain", [b"a"])
    assert base == fingerprint("post", "/orders", "text/plain", [b"", b"a"])
    assert base != fingerprint("PUT", "/orders", "text/plain", [b"a"])
    assert base != fingerprint("POST", "/orders?x=1", "text/plain", [b"a"])
    assert base != fingerprint("POST", "/orders", "text/plain", [b"a "])


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
)
def test_scoped_keys_of_different_callers_or_keys_never_collide(
    p1: str, k1: str, p2: str, k2: str
) -> None:
    assert (scoped_key(p1, k1) == scoped_key(p2, k2)) == ((p1, k1) == (p2, k2))


def test_keys_follow_the_draft_and_bad_ones_say_why() -> None:
    assert (
        parse_key('"8e03978e-40d5-43e8-bc93-6894a57f9324"')
        == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )
    assert parse_key("bare-token") == "bare-token"
    assert parse_key(r'"a\"b"') == 'a"b'
    for bad, reason in [
        ("", "empty"),
        ('""', "empty"),
        ("k" * (MAX_KEY_LENGTH + 1), "longer"),
        ("caf\u00e9", "printable"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_key(bad)


def test_stored_key_names_and_fingerprints_do_not_change_between_versions() -> None:
    # A record written before an upgrade must be found after it (a retry spanning a
    # deploy would otherwise run again): these names are the format, kept as they are.
    assert (
        scoped_key("http:h:abc", "8e03978e-40d5-43e8-bc93-6894a57f9324")
        == "04a612fb80f8c50cb2283a54ec0b187a4b5139a28b19c2008575eed99ac96f0a"
    )
    assert (
        scoped_key("once:orders", "é")
        == "2aa0de9730b6cab4c8dfb88b05c25f6fbf42ba8437c07e746c3b0a551f0197e2"
    )
    # and so are fingerprints: a retry after an upgrade must match its first request
    assert (
        fingerprint(
            "POST",
            "/orders?x=1",
            "application/json; charset=utf-8",
            [b'{"b": 1, ', b'"a": "\xc3\xa9"}'],
        )
        == "c59096b95ba6456869412c4ec9d5cbaa861daedbf0147cb45fe1d06a0eb538e5"
    )
    assert (
        fingerprint("POST", "/orders", "text/plain", [b"hello"])
        == "738b23ae9df099da3e45433681da1372ff4336ae6dd6c421a2611a228f8a7c86"
    )
