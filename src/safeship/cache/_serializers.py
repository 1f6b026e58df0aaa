"""How values become bytes in Redis. JSON by default: reading a pickle runs code, so a
pickle serializer is opt-in for a Redis only trusted writers reach."""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer"]


class Serializer(Protocol):
    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Compact JSON (tuples come back as lists)."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class PickleSerializer:
    """Any picklable value. Only for a Redis that no untrusted party can write to."""

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 - opted into for a trusted Redis
