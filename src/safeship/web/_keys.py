"""API-key hashing and timing-safe verification, usable on its own.

Keys are stored and compared as SHA-256 digests: every comparison is between two
fixed-length values, so neither a key's content nor its length leaks through timing,
and any ``str`` input (non-ASCII, lone surrogates) is accepted without raising.
SHA-256 without salt is right for long random keys (see `generate_key`); it is not a
password hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

DIGEST_HEX_LENGTH = 64
#: The request header an API key is read from first (lower-case bytes, as in ASGI).
API_KEY_HEADER = b"x-api-key"


def _digest(key: str) -> bytes:
    # One constructor call: fewer instructions than copying a prepared empty state and
    # updating it (callgrind, OpenSSL 3: ~6.6k against ~7.2k for a 52-character key).
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def hash_key(key: str) -> str:
    """Return the hex SHA-256 digest to store instead of ``key``."""
    if not isinstance(key, str) or not key:
        raise ValueError("hash_key: the key must be a non-empty string")
    return _digest(key).hex()


def is_digest(value: str) -> bool:
    """Whether ``value`` looks like a digest made by `hash_key`."""
    if len(value) != DIGEST_HEX_LENGTH:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _stored_bytes(stored_digest: str) -> bytes:
    """The raw 32 bytes of a stored digest; a malformed one becomes a value no key matches."""
    try:
        raw = bytes.fromhex(stored_digest)
    except (ValueError, TypeError):
        raw = b""
    return raw if len(raw) == 32 else b"\x00" * 31 + b"\x01"


def verify_key(presented: str, stored_digest: str) -> bool:
    """Whether ``presented`` hashes to ``stored_digest``, in constant time."""
    return hmac.compare_digest(_digest(presented), _stored_bytes(stored_digest))


def verify_any(presented: str, stored_digests: Iterable[str]) -> bool:
    """Whether ``presented`` matches any digest; every digest is compared, no early exit."""
    return DigestSet(stored_digests).matches(presented)


class DigestSet:
    """Stored digests decoded once, for checking a presented key on every request.

    `matches` is `verify_any` without decoding the hex digests each time: the presented
    key is hashed and compared with every digest in constant time, no early exit.
    """

    __slots__ = ("_raw",)

    def __init__(self, stored_digests: Iterable[str]) -> None:
        self._raw = tuple(_stored_bytes(stored) for stored in stored_digests)

    def __len__(self) -> int:
        return len(self._raw)

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` hashes to one of the digests."""
        candidate = _digest(presented)
        matched = False
        for stored in self._raw:
            matched |= hmac.compare_digest(candidate, stored)
        return matched


def presented_key(
    headers: Iterable[tuple[bytes, bytes]],
    header: bytes = API_KEY_HEADER,
    *,
    raw_authorization: bool = False,
) -> str | None:
    """The API key a request presents: its first ``header`` (``X-API-Key``) when that is
    non-empty, else the token of its first ``Authorization: Bearer`` header; None when it
    presents neither. ``headers`` are ASGI request headers (lower-case names); the key is
    decoded as latin-1 (never raises) and stripped of surrounding whitespace.

    The one place safeship reads a presented API key: the `ApiKeyAuth` layer, the
    decision `protect` takes without it (`ApiKeyAuth.passes`) and the control plane.
    With ``raw_authorization`` a non-Bearer ``Authorization`` value is the key itself, as
    Unleash SDKs send their token.
    """
    name: bytes | None = header
    authorization: bytes | None = None
    for key, value in headers:
        if key == name:
            if value:
                return bytes(value).decode("latin-1").strip()
            name = None  # an empty first value: fall back to Authorization
        elif key == b"authorization" and authorization is None:
            authorization = bytes(value)
    if authorization and authorization[:7].lower() == b"bearer ":
        return authorization[7:].decode("latin-1").strip() or None
    if authorization and raw_authorization:
        return authorization.decode("latin-1").strip() or None
    return None


def generate_key(prefix: str = "ss_", nbytes: int = 32) -> str:
    """A new random API key (``nbytes`` of entropy, URL-safe) with a recognisable prefix."""
    if nbytes < 16:
        raise ValueError("generate_key: nbytes must be >= 16")
    return prefix + secrets.token_urlsafe(nbytes)
