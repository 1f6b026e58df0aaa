"""Canonical, collision-free cache keys: ``env:namespace:version:sha256(arguments)``.

Each value is encoded with a type tag and a length prefix, so the encoding is prefix-free
and therefore injective: ``("svc.user", "s_list")`` and ``("svc.users", "_list")`` encode
differently, ``1``, ``1.0`` and ``True`` encode differently, and nothing falls back to
``repr`` (whose memory addresses would make every call a miss, or whose truncation would
make two calls share a key). A type without an encoding is refused with
:class:`CacheKeyError`; give it a ``__cache_key__()`` method returning an encodable value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from safeship.cache._errors import CacheConfigError, CacheKeyError

__all__ = ["KeySpace", "args_digest", "encode"]

MAX_DEPTH = 32
MAX_ENCODED_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _sized(tag: bytes, payload: bytes) -> bytes:
    return tag + str(len(payload)).encode() + b":" + payload


def _str(value: Any, depth: int) -> bytes:
    return _sized(b"s", value.encode("utf-8", "surrogatepass"))


def _int(value: Any, depth: int) -> bytes:
    return _sized(b"i", str(int(value)).encode())


def _float(value: Any, depth: int) -> bytes:
    return _sized(b"f", float(value).hex().encode())  # hex keeps -0.0 apart from 0.0


def _bytes(value: Any, depth: int) -> bytes:
    return _sized(b"b", bytes(value))


def _none(value: Any, depth: int) -> bytes:
    return b"N"


def _bool(value: Any, depth: int) -> bytes:
    return b"T" if value else b"F"


def _sequence(tag: bytes) -> Callable[[Any, int], bytes]:
    def encode_items(value: Any, depth: int) -> bytes:
        return _sized(tag, b"".join(_encode(item, depth + 1) for item in value))

    return encode_items


def _unordered(tag: bytes) -> Callable[[Any, int], bytes]:
    def encode_items(value: Any, depth: int) -> bytes:
        return _sized(tag, b"".join(sorted(_encode(item, depth + 1) for item in value)))

    return encode_items


def _mapping(value: Any, depth: int) -> bytes:
    pairs = sorted(_encode(k, depth + 1) + _encode(v, depth + 1) for k, v in value.items())
    return _sized(b"d", b"".join(pairs))


def _text(tag: bytes) -> Callable[[Any, int], bytes]:
    def encode_text(value: Any, depth: int) -> bytes:
        return _sized(tag, str(value).encode())

    return encode_text


def _uuid(value: Any, depth: int) -> bytes:
    return _sized(b"u", value.bytes)


def _datetime(value: Any, depth: int) -> bytes:
    return _sized(b"w", value.isoformat().encode())  # an aware time keeps its offset


_EXACT: dict[type, Callable[[Any, int], bytes]] = {
    str: _str,
    int: _int,
    float: _float,
    bytes: _bytes,
    type(None): _none,
    bool: _bool,
    tuple: _sequence(b"t"),
    list: _sequence(b"l"),
    dict: _mapping,
    frozenset: _unordered(b"z"),
    set: _unordered(b"S"),
    decimal.Decimal: _text(b"D"),
    uuid.UUID: _uuid,
    dt.datetime: _datetime,
    dt.date: _text(b"a"),
    dt.time: _text(b"h"),
    dt.timedelta: _text(b"k"),
}
#: Bases a subclass is encoded as, after its qualified type name (namedtuples, str subclasses).
_BASES = (bool, int, float, str, bytes, tuple, list, dict, frozenset, set)


def _qualname(kind: type) -> bytes:
    return f"{kind.__module__}.{kind.__qualname__}".encode()


def _other(value: Any, depth: int) -> bytes:
    kind = type(value)
    hook = getattr(value, "__cache_key__", None)
    if hook is not None and callable(hook):
        return _sized(b"o", _sized(b"n", _qualname(kind)) + _encode(hook(), depth + 1))
    if isinstance(value, enum.Enum):
        return _sized(b"e", _sized(b"n", _qualname(kind)) + _encode(value.name, depth + 1))
    for base in _BASES:
        if isinstance(value, base):
            return _sized(b"x", _sized(b"n", _qualname(kind)) + _EXACT[base](value, depth))
    raise CacheKeyError(
        f"a {kind.__qualname__} argument has no canonical cache-key encoding: pass str, int, "
        "float, bytes, bool, None, tuple, list, dict, set, Decimal, UUID, date/time or Enum "
        "values, give the type a __cache_key__() method, or pass key= to the decorator"
    )


def _encode(value: Any, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise CacheKeyError(f"cache-key arguments nest deeper than {MAX_DEPTH} levels")
    encoder = _EXACT.get(type(value))
    return encoder(value, depth) if encoder is not None else _other(value, depth)


def encode(value: Any) -> bytes:
    """The canonical bytes of ``value``: equal for equal values of the same types, distinct
    otherwise. Refuses encodings above 1 MiB (a key is not a payload)."""
    data = _encode(value, 0)
    if len(data) > MAX_ENCODED_BYTES:
        raise CacheKeyError(f"cache-key arguments encode to {len(data)} bytes, above 1 MiB")
    return data


def args_digest(function: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The SHA-256 hex digest of one call: the function's name, its positional arguments
    and its keyword arguments (order-free), each canonically encoded."""
    payload = _sized(b"n", function.encode()) + encode(args) + encode(dict(kwargs))
    return hashlib.sha256(payload).hexdigest()


def _check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise CacheConfigError(
            f"Cache {field}={value!r}: use 1-64 letters, digits, '_', '.' or '-' (no ':')"
        )
    return value


class KeySpace:
    """Where a cache's keys live: ``env:namespace:version:`` then a SHA-256 digest. Bumping
    ``version`` moves every key of the namespace at once (old entries age out)."""

    __slots__ = ("env", "namespace", "prefix", "version")

    def __init__(self, *, env: str, namespace: str, version: int) -> None:
        self.env = _check_name("env", env)
        self.namespace = _check_name("namespace", namespace)
        if type(version) is not int or not 0 <= version < 1 << 31:
            raise CacheConfigError(f"Cache version={version!r}: use an int in [0, 2**31)")
        self.version = version
        self.prefix = f"{env}:{namespace}:{version}:"

    def call_key(self, function: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The full key of one call of a decorated function."""
        return self.prefix + args_digest(function, args, kwargs)

    def item_key(self, key: Any) -> str:
        """The full key of one ``get``/``set``/``delete`` key (any encodable value)."""
        return self.prefix + hashlib.sha256(_sized(b"k", encode(key))).hexdigest()

    def tag_key(self, tag: str) -> str:
        """The Redis set that lists the keys carrying ``tag`` (per env and namespace)."""
        return f"{self.env}:{self.namespace}:tag:{hashlib.sha256(tag.encode()).hexdigest()}"
