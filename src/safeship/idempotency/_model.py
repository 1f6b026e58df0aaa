"""Pure pieces of idempotency: key parsing, payload fingerprints, stored records.

No I/O and no clock here: the stores decide expiry with their own clock (Redis TTLs, the
database's ``now()``), and these values travel between the stores and the middleware.
"""

from __future__ import annotations

import base64
import codecs
import enum
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from safeship.idempotency._errors import IdempotencyConfigError

__all__ = [
    "MAX_KEY_LENGTH",
    "Claim",
    "Record",
    "State",
    "StoredResponse",
    "fingerprint",
    "parse_key",
    "scoped_key",
]

#: Longest key accepted in ``Idempotency-Key`` (a UUID is 36; the draft suggests UUIDs).
MAX_KEY_LENGTH = 255


class State(enum.Enum):
    """Where a key's first request stands."""

    IN_FLIGHT = "in_flight"  # running, its lease alive
    DONE = "done"  # finished, response stored
    UNKNOWN = "unknown"  # raised or died mid-request: nobody knows whether it acted


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a replay sends: status, the headers that matter, and the whole body.

    ``body_kept`` is False when the body passed the size cap: the replay then serves the
    status and ``Location`` (a reference to the result), never a truncated body.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    body_kept: bool = True

    def encode(self) -> dict[str, object]:
        return {
            "s": self.status,
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "b": base64.b64encode(self.body).decode("ascii"),
            "k": self.body_kept,
        }

    @classmethod
    def decode(cls, data: dict[str, object]) -> StoredResponse:
        headers = data.get("h") or []
        assert isinstance(headers, list)
        return cls(
            status=int(str(data["s"])),
            headers=tuple((str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in headers),
            body=base64.b64decode(str(data.get("b") or "")),
            body_kept=bool(data.get("k", True)),
        )


@dataclass(frozen=True, slots=True)
class Record:
    """A key's stored state.  ``retry_after`` (seconds) is set while the lease is alive."""

    state: State
    fingerprint: str
    response: StoredResponse | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: ``token`` is set when this caller owns the key now;
    otherwise ``existing`` says what the key already holds."""

    token: str | None
    existing: Record | None = field(default=None)

    @property
    def claimed(self) -> bool:
        return self.token is not None


def parse_key(raw: str) -> str:
    """The key of an ``Idempotency-Key`` header value.

    The draft makes it a structured-field string (``"8e03978e-..."``); a bare token is
    accepted too, since most clients send one.  Empty, over-long or non-printable keys
    are refused with a ValueError that says why.
    """
    value = raw.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not value:
        raise ValueError("the Idempotency-Key header is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"the Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    if not (value.isascii() and value.isprintable()):  # printable ASCII: 0x20..0x7e
        raise ValueError("the Idempotency-Key may hold printable ASCII characters only")
    return value


def scoped_key(principal: str, key: str) -> str:
    """The store key for ``key`` sent by ``principal``: one caller never reaches another's.

    Both parts are hashed together with a length prefix, so no choice of principal and
    key can collide with another pair, and the stored name has a fixed length.
    """
    if not principal:
        raise IdempotencyConfigError("principal: an idempotency key needs a non-empty scope")
    first, second = principal.encode(), key.encode()
    return hashlib.sha256(
        b"%b%b%b%b" % (len(first).to_bytes(8, "big"), first, len(second).to_bytes(8, "big"), second)
    ).hexdigest()


#: One encoder for every fingerprint (making one per call costs as much as the encoding).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_json(body: bytes) -> bytes | None:
    try:
        if body.startswith(codecs.BOM_UTF8) or b"\0" in body[:4]:
            value = json.loads(body)  # a BOM or UTF-16/32: json's sniffing finds which
        else:  # UTF-8, as JSON on the wire is: decoded here (as json would), unsniffed
            value = json.loads(body.decode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    # A lone surrogate ("\ud800", escaped or raw) is JSON that UTF-8 cannot encode
    # strictly: passed through, it hashes as itself.
    return _CANONICAL.encode(value).encode("utf-8", "surrogatepass")


def fingerprint(method: str, target: str, content_type: str, chunks: Iterable[bytes]) -> str:
    """SHA-256 of the request's method, target and body, the body canonicalised.

    A JSON body (``application/json`` or ``+json``) is hashed in canonical form (sorted
    keys, no insignificant whitespace), so ``{"a":1, "b":2}`` and ``{"b": 2, "a": 1}``
    are the same payload; any other body is hashed byte for byte.  The caller bounds the
    body's size before it gets here.
    """
    digest = hashlib.sha256()
    for part in (method.upper(), target):
        digest.update(part.encode())
        digest.update(b"\0")
    body = b"".join(chunks)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        canonical = _canonical_json(body)
        if canonical is not None:
            digest.update(b"json\0")
            digest.update(canonical)
            return digest.hexdigest()
    digest.update(b"raw\0")
    digest.update(body)
    return digest.hexdigest()
