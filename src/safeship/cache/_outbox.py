"""Cache invalidation for other services, through the outbox.

A service that writes rows another service caches stages an invalidation event in the
same transaction as the write (:func:`stage_invalidation`): it is published only if the
transaction commits, and the relay delivers it at least once. The consumer applies it with
:func:`apply_invalidation` (``invalidate_tags`` on its caches of that namespace); applying
one twice only invalidates twice, so redelivery is harmless.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from safeship.cache._core import check_tags
from safeship.cache._keys import _check_name

if TYPE_CHECKING:
    from safeship.cache._api import Cache

__all__ = [
    "INVALIDATION_TYPE",
    "aapply_invalidation",
    "apply_invalidation",
    "astage_invalidation",
    "stage_invalidation",
]

#: The outbox event type of a cache invalidation (aggregate type ``cache``, aggregate id
#: the namespace, so one namespace's invalidations keep their order).
INVALIDATION_TYPE = "cache.invalidate"
#: The most tags one event carries.
MAX_TAGS = 1_000


def _event(namespace: str, tags: Iterable[str]) -> dict[str, Any]:
    checked = check_tags(tags)
    if not checked or len(checked) > MAX_TAGS:
        raise ValueError(f"stage_invalidation needs 1-{MAX_TAGS} tags")
    return {
        "aggregate_type": "cache",
        "aggregate_id": _check_name("namespace", namespace),
        "type": INVALIDATION_TYPE,
        "payload": {"namespace": namespace, "tags": list(checked)},
    }


def stage_invalidation(conn: Any, *, namespace: str, tags: Iterable[str]) -> uuid.UUID:
    """Stage "invalidate ``tags`` of ``namespace``" in ``conn``'s transaction (any
    connection :func:`safeship.outbox.stage` takes); returns the event id."""
    from safeship.outbox import stage

    return stage(conn, **_event(namespace, tags))


async def astage_invalidation(conn: Any, *, namespace: str, tags: Iterable[str]) -> uuid.UUID:
    """:func:`stage_invalidation` for async connections (:func:`safeship.outbox.astage`)."""
    from safeship.outbox import astage

    return await astage(conn, **_event(namespace, tags))


def _parse(message: Any) -> tuple[str, tuple[str, ...]] | None:
    """``(namespace, tags)`` of an invalidation, from a relayed ``Event`` or a decoded
    message body (``{"type": ..., "payload": ...}``); None for another event type."""
    if isinstance(message, Mapping):
        kind, payload = message.get("type"), message.get("payload")
    else:
        kind, payload = getattr(message, "type", None), getattr(message, "payload", None)
    if kind != INVALIDATION_TYPE:
        return None
    if isinstance(payload, bytes | str):
        payload = json.loads(payload)
    if not isinstance(payload, Mapping):
        raise ValueError("a cache invalidation's payload must be an object")
    namespace, tags = payload.get("namespace"), payload.get("tags")
    if not isinstance(namespace, str) or not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise ValueError("a cache invalidation needs a namespace and a list of tags")
    return namespace, check_tags(tags)


def _targets(caches: Cache | Iterable[Cache], namespace: str) -> list[Cache]:
    from safeship.cache._api import Cache

    found = [caches] if isinstance(caches, Cache) else list(caches)
    return [c for c in found if c.space.namespace == namespace]


def apply_invalidation(caches: Cache | Iterable[Cache], message: Any) -> bool:
    """Invalidate the message's tags on each of ``caches`` whose namespace it names;
    False when ``message`` is not a cache invalidation (ignore it), True otherwise."""
    parsed = _parse(message)
    if parsed is None:
        return False
    namespace, tags = parsed
    for cache in _targets(caches, namespace):
        cache.invalidate_tags(*tags)
    return True


async def aapply_invalidation(caches: Cache | Iterable[Cache], message: Any) -> bool:
    """:func:`apply_invalidation` with the caches' async Redis clients."""
    parsed = _parse(message)
    if parsed is None:
        return False
    namespace, tags = parsed
    for cache in _targets(caches, namespace):
        await cache.ainvalidate_tags(*tags)
    return True
