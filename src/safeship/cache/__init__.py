"""A memoizing cache that never stampedes, never collides keys and invalidates on commit.

``Cache("catalog")`` is an in-process LRU/TTL cache; with ``redis_url=`` it is two-level
(memory in front of Redis, coherent through Redis pub/sub). ``@cache(ttl=...)`` memoizes
sync and async functions; ``get``/``set``/``delete`` and their ``a``-prefixed twins store
by key. See docs/cache.md.
"""

from safeship.cache._api import Cache
from safeship.cache._entry import xfetch_due
from safeship.cache._errors import CacheConfigError, CacheError, CacheKeyError
from safeship.cache._keys import KeySpace, args_digest, encode
from safeship.cache._outbox import (
    INVALIDATION_TYPE,
    aapply_invalidation,
    apply_invalidation,
    astage_invalidation,
    stage_invalidation,
)
from safeship.cache._report import CacheReporter
from safeship.cache._serializers import JsonSerializer, PickleSerializer, Serializer
from safeship.cache._stats import CacheCollector

__all__ = [
    "INVALIDATION_TYPE",
    "Cache",
    "CacheCollector",
    "CacheConfigError",
    "CacheError",
    "CacheKeyError",
    "CacheReporter",
    "JsonSerializer",
    "KeySpace",
    "PickleSerializer",
    "Serializer",
    "aapply_invalidation",
    "apply_invalidation",
    "args_digest",
    "astage_invalidation",
    "encode",
    "stage_invalidation",
    "xfetch_due",
]
