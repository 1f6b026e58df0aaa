"""Key hashing and verification: fixed-length digests, never raising."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safeship.web import _keys as keys
from safeship.web._keys import generate_key, hash_key, verify_key


def test_hash_key_is_hex_sha256() -> None:
    assert hash_key("secret") == hashlib.sha256(b"secret").hexdigest()


def test_verify_accepts_right_key_and_rejects_others() -> None:
    stored = hash_key("ss_right")
    assert verify_key("ss_right", stored)
    assert not verify_key("ss_wrong", stored)
    assert not verify_key("", stored)
    assert not verify_key("ss_right" * 100, stored)


def test_verify_accepts_uppercase_digest() -> None:
    assert verify_key("k", hash_key("k").upper())


@given(st.text())
def test_verify_never_raises_on_any_text(presented: str) -> None:
    assert verify_key(presented, hash_key("ss_key")) == (presented == "ss_key")


@pytest.mark.parametrize("stored", ["", "zz", "é" * 64, "0" * 63, "0" * 65])
def test_malformed_stored_digest_matches_nothing(stored: str) -> None:
    assert not verify_key("anything", stored)
    assert not verify_key("", stored)


def test_lone_surrogates_do_not_raise() -> None:
    assert not verify_key("\ud800abc", hash_key("abc"))


def test_hash_key_rejects_empty() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        hash_key("")


def test_generated_keys_are_random_and_prefixed() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert first.startswith("ss_")
    assert len(first) > 40


def test_comparison_is_between_fixed_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Structural timing test: whatever the input, compare_digest sees two 32-byte values."""
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module keys.py calls
    stored = hash_key("ss_correct_key")
    for presented in ("", "x", "ss_correct_ke", "ss_correct_key", "é" * 1000, "ss_correct_keyZ"):
        verify_key(presented, stored)
    keys.verify_any("x", [stored, hash_key("other")])
    assert seen
    assert set(seen) == {(32, 32)}
