"""One cached value with its times, and the pure rules that judge it (XFetch, staleness).

Times are wall-clock seconds (``clock()``), because a Redis entry is read by other
processes. ``early_from`` is where XFetch's refresh probability becomes noticeable: before
it the hit path compares one float and returns.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from safeship.cache._errors import CacheError

__all__ = ["Entry", "decode_envelope", "early_from", "encode_envelope", "xfetch_due"]

#: Past this many ``delta * beta`` before expiry, XFetch's probability is below e**-20.
_HORIZON = 20.0
_MAGIC = b"ss2"
_HEAD = struct.Struct(">dddHH")
_LEN = struct.Struct(">H")


class Entry:
    """A value, the full key it was stored under, and when it stops being fresh/servable."""

    __slots__ = (
        "argtype", "delta", "early_from", "expires", "key", "size", "stale_until", "tags",
        "used", "value",
    )  # fmt: skip

    def __init__(
        self,
        key: str,
        value: Any,
        *,
        expires: float,
        stale_until: float,
        delta: float,
        beta: float,
        tags: tuple[str, ...] = (),
        size: int = 0,
    ) -> None:
        self.key = key
        self.value = value
        self.expires = expires
        self.stale_until = max(stale_until, expires)
        self.delta = delta
        self.early_from = early_from(expires, delta, beta)
        self.tags = tags
        self.size = size
        self.used = False  # the CLOCK bit: read since the eviction hand last passed
        self.argtype: type | None = None  # the argument's type, once in an argument index


def early_from(expires: float, delta: float, beta: float) -> float:
    """The time from which an XFetch early refresh may happen (``expires`` when disabled)."""
    if beta <= 0 or delta <= 0:
        return expires
    return expires - _HORIZON * delta * beta


def xfetch_due(now: float, expires: float, delta: float, beta: float, draw: float) -> bool:
    """XFetch (Vattani et al., 2015): refresh early when ``now - delta*beta*ln(draw)``
    reaches the expiry; ``draw`` is uniform in (0, 1]. The closer to expiry and the slower
    the recomputation, the likelier the refresh, so one caller refreshes before the crowd."""
    if now >= expires:
        return True
    if beta <= 0 or delta <= 0:
        return False
    return now - delta * beta * math.log(max(draw, 1e-300)) >= expires


def encode_envelope(entry: Entry, payload: bytes) -> bytes:
    """The bytes stored in Redis: a binary header (times, the full key, the tags, each
    length-prefixed), then the serialized value. Reading checks the key, so a foreign or
    colliding value is a miss."""
    key = entry.key.encode()
    tags = [tag.encode() for tag in entry.tags]
    parts = [
        _MAGIC,
        _HEAD.pack(entry.expires, entry.stale_until, entry.delta, len(key), len(tags)),
        key,
    ]
    for tag in tags:
        parts += (_LEN.pack(len(tag)), tag)
    parts.append(payload)
    return b"".join(parts)


def decode_envelope(data: bytes) -> tuple[str, float, float, float, tuple[str, ...], bytes]:
    """(key, expires, stale_until, delta, tags, payload); CacheError when it is not ours."""
    if not data.startswith(_MAGIC):
        raise CacheError("the Redis value is not a safeship cache envelope")
    try:
        expires, stale_until, delta, key_size, count = _HEAD.unpack_from(data, len(_MAGIC))
        at = len(_MAGIC) + _HEAD.size
        key = data[at : at + key_size].decode()
        at += key_size
        tags = []
        for _ in range(count):
            (size,) = _LEN.unpack_from(data, at)
            tags.append(data[at + 2 : at + 2 + size].decode())
            at += 2 + size
    except (struct.error, UnicodeDecodeError) as exc:
        raise CacheError("the Redis cache envelope header is malformed") from exc
    return key, expires, stale_until, delta, tuple(tags), data[at:]
