"""What an outbox event may hold, checked once at ``stage()`` before anything is written.

The rules are the intersection of what every store and every bundled sink can carry, so an
event that stages is one the relay can publish, on SQLite and PostgreSQL alike:

- keys (``aggregate_type``, ``aggregate_id``, ``type``): 1-255 characters of valid Unicode,
  no NUL (PostgreSQL ``text`` refuses it);
- the payload: JSON (no NaN or Infinity, no other types), valid Unicode (no lone
  surrogates), no NUL in any string (PostgreSQL ``jsonb`` refuses ``\\u0000``), not nested
  deeper than the JSON encoder can go;
- headers: at most :data:`MAX_HEADERS` names of HTTP token characters (what NATS and HTTP
  accept) mapped to text of at most :data:`MAX_HEADER_VALUE` characters without control
  characters (a CR or LF would end a NATS or HTTP header line);
- the whole event as a sink sends it (payload, headers, keys and
  :data:`SINK_OVERHEAD_BYTES` for what the sink adds) at most ``max_event_bytes``,
  :data:`DEFAULT_MAX_EVENT_BYTES` unless the caller raises it, which keeps it under NATS's
  default ``max_payload`` of 1 MiB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from safeship.errors import SafeshipError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE",
    "MAX_KEY",
    "SINK_OVERHEAD_BYTES",
    "OutboxPayloadError",
    "check_headers",
    "check_key",
    "check_max_event_bytes",
    "check_size",
    "encode_json",
    "event_size",
    "headers_problem",
]

#: The default cap on an event's encoded size, in bytes (see :func:`event_size`).
DEFAULT_MAX_EVENT_BYTES = 1_000_000
#: Bytes counted for what a sink adds to every event: its id, its own headers, framing.
SINK_OVERHEAD_BYTES = 512
MAX_KEY = 255
MAX_HEADERS = 64
MAX_HEADER_NAME = 255
MAX_HEADER_VALUE = 8192
_HIGHEST_CAP = 1 << 30

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# ``\u0000`` in encoded JSON, not preceded by an escaped backslash (``\\u0000`` is text).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class OutboxPayloadError(SafeshipError, ValueError):
    """An event ``stage()`` refuses: the message names the field, the problem, what is allowed.

    Raised before anything is written, so the caller's transaction is untouched.
    """


def _valid_unicode(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OutboxPayloadError(
            f"outbox {field} is not valid Unicode: lone surrogate {text[exc.start]!r} at "
            f"character {exc.start}. Text must be encodable as UTF-8; decode bytes with "
            f"errors='replace' or drop the character."
        ) from None


def check_key(name: str, value: object) -> str:
    """Validate an aggregate type, aggregate id or event type: 1-255 characters of valid
    Unicode, no NUL."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY:
        shown = f"a str of {len(value)} characters" if isinstance(value, str) else repr(value)
        raise OutboxPayloadError(
            f"outbox {name} must be a non-empty str of at most {MAX_KEY} characters, "
            f"got {shown[:80]}"
        )
    if "\x00" in value:
        raise OutboxPayloadError(
            f"outbox {name} contains a NUL character (\\x00), which PostgreSQL cannot store"
        )
    _valid_unicode(value, name)
    return value


def encode_json(value: Any, *, field: str) -> str:
    """Serialize ``value`` to compact JSON that every store accepts, or raise
    :class:`OutboxPayloadError` naming what is wrong."""
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise OutboxPayloadError(
            f"outbox {field} is nested too deeply to encode as JSON (RecursionError); "
            f"flatten it or send a reference to the data instead"
        ) from None
    except (TypeError, ValueError) as exc:
        raise OutboxPayloadError(
            f"outbox {field} must be JSON-serializable (dict, list, str, int, float, bool, "
            f"None; no NaN or Infinity): {exc}. Convert it before stage(), e.g. str() for "
            f"UUID/Decimal, .isoformat() for datetimes."
        ) from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise OutboxPayloadError(
            f"outbox {field} contains a NUL character (\\u0000) in a string, which "
            f"PostgreSQL jsonb cannot store; remove it or encode the data (e.g. base64)"
        )
    return text


def headers_problem(headers: object) -> str | None:
    """Why ``headers`` cannot be sent as event headers, or None when they can."""
    if not isinstance(headers, Mapping):
        return f"headers must be a mapping of str to str, got {type(headers).__name__}"
    if len(headers) > MAX_HEADERS:
        return f"at most {MAX_HEADERS} headers are allowed, got {len(headers)}"
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            return f"header {name!r} must map str to str, got {type(value).__name__}"
        if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
            return (
                f"header name {name[:80]!r} must be 1-{MAX_HEADER_NAME} HTTP token characters "
                f"(letters, digits and !#$%&'*+-.^_`|~)"
            )
        if len(value) > MAX_HEADER_VALUE:
            return f"header {name!r} is {len(value)} characters, at most {MAX_HEADER_VALUE}"
        if _CONTROL.search(value):
            return f"header {name!r} contains a control character (CR, LF, NUL, ...)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"header {name!r} is not valid Unicode (a lone surrogate)"
    return None


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise :class:`OutboxPayloadError` when :func:`headers_problem` finds one."""
    problem = headers_problem(headers)
    if problem is not None:
        raise OutboxPayloadError(f"outbox headers: {problem}")


def event_size(payload_json: str, headers: Mapping[str, str], *keys: str) -> int:
    """Bytes a sink sends for one event: UTF-8 payload, ``name: value`` header lines, the
    keys, and :data:`SINK_OVERHEAD_BYTES`."""
    size = len(_valid_unicode(payload_json, "payload")) + SINK_OVERHEAD_BYTES
    size += sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return size + sum(len(key.encode()) for key in keys)


def check_max_event_bytes(value: object) -> int:
    """Validate a ``max_event_bytes`` setting."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= _HIGHEST_CAP:
        raise ValueError(f"max_event_bytes must be an int in [1024, {_HIGHEST_CAP}], got {value!r}")
    return value


def check_size(size: int, limit: int) -> None:
    """Raise :class:`OutboxPayloadError` when an event of ``size`` bytes exceeds ``limit``."""
    if size > limit:
        raise OutboxPayloadError(
            f"outbox event is {size} bytes encoded (payload, headers and keys), over the "
            f"{limit}-byte cap (max_event_bytes): brokers refuse messages this large "
            f"(NATS's default max_payload is 1 MiB). Store the data elsewhere and send a "
            f"reference, or raise max_event_bytes together with the broker's limit."
        )
