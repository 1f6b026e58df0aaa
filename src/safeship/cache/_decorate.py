"""The decorated function: a hit is a dict lookup and a float comparison in the wrapper.

Calls whose positional arguments are all ``str``, ``int``, ``bool``, ``bytes`` or
``None`` use the argument tuple and its types as the memory-tier key: equal values of
those exact types are the same value, so no two distinct calls share it (floats stay
out: ``0.0 == -0.0``). Every other call, and every miss, uses the canonical SHA-256 key.
A one-argument hit reads the function's argument index (``MemoryTier.arg_index``) with
the argument itself and checks the entry's ``argtype``, so it builds no tuple.

The wrappers keep the miss path in a separate function: the lambdas it passes on close
over ``args`` and ``kwargs``, which inside the wrapper would make every call, hits
included, allocate two cells.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from safeship.cache._core import check_tags
from safeship.cache._errors import CacheConfigError
from safeship.cache._policy import Policy

if TYPE_CHECKING:
    from safeship.cache._api import Cache

__all__ = ["TagSpec", "decorate"]

TagSpec = Iterable[str] | Callable[..., Iterable[str]] | None
_SCALARS = frozenset({str, int, bool, bytes, type(None)})
_MAX_SIGNATURES = 64
_MAX_KNOWN = 4096
_SLOTS = itertools.count()


def _tag_resolver(fn: Callable[..., Any], tags: TagSpec) -> Callable[..., tuple[str, ...]]:
    """``tags`` as a function of the call: templates like ``"product:{product_id}"`` are
    formatted with the bound arguments; a callable gets the call's arguments."""
    if tags is None:
        return lambda *args, **kwargs: ()
    if callable(tags):
        produce = tags
        return lambda *args, **kwargs: check_tags(produce(*args, **kwargs))
    if isinstance(tags, str):
        raise CacheConfigError("tags= takes a list of tag templates, not one str")
    templates = check_tags(tags)
    signature = inspect.signature(fn)

    def resolve(*args: Any, **kwargs: Any) -> tuple[str, ...]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(t.format(**bound.arguments) for t in templates)

    return resolve


def decorate(
    cache: Cache,
    fn: Callable[..., Any],
    policy: Policy,
    tags: TagSpec,
    key: Callable[..., Any] | None,
) -> Callable[..., Any]:
    """Wrap ``fn`` (sync or async) so calls are served from ``cache``."""
    if not callable(fn):
        raise CacheConfigError(f"@cache decorates a function, got {fn!r}")
    name = f"{fn.__module__}.{fn.__qualname__}"
    slot = next(_SLOTS)
    data: Any = cache.memory.data if cache.memory is not None else {}
    mine: Any = cache.memory.arg_index(slot) if cache.memory is not None else {}
    stats, clock, space = cache.stats, cache.clock, cache.space
    fast: set[tuple[type, ...]] = set()
    known: dict[Any, str] = {}
    tags_for = _tag_resolver(fn, tags)

    def locate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        if key is None and not kwargs and len(args) == 1 and type(args[0]) in _SCALARS:
            local = (slot, args[0], type(args[0]))
            full = known.get(local)  # one-argument calls: the SHA-256 key is remembered
            if full is None:
                if len(known) >= _MAX_KNOWN:
                    known.clear()
                full = known[local] = canonical(args, kwargs)[0]
            return full, local
        return canonical(args, kwargs)

    def canonical(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        if key is not None:
            full = space.call_key(name, (key(*args, **kwargs),), {})
            return full, full
        full = space.call_key(name, args, kwargs)
        if kwargs:
            return full, full
        types = tuple(map(type, args))
        if types not in fast:
            if not all(t in _SCALARS for t in types) or len(fast) >= _MAX_SIGNATURES:
                return full, full
            fast.add(types)
        if len(args) == 1:  # the same shapes the wrappers build (a 1-tuple's is cheaper)
            return full, (slot, args[0], types[0])
        return full, (slot, args, types)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not kwargs:
                if len(args) == 1:
                    only = args[0]
                    try:
                        entry = mine.get(only)
                    except TypeError:  # an unhashable argument: the canonical key serves it
                        entry = None
                    if (
                        entry is not None
                        and entry.argtype is type(only)
                        and clock() < entry.early_from
                    ):
                        stats.hits += 1
                        entry.used = True
                        return entry.value
                else:
                    try:
                        entry = data.get((slot, args, (*map(type, args),)))
                    except TypeError:
                        entry = None
                    if entry is not None and clock() < entry.early_from:
                        stats.hits += 1
                        entry.used = True
                        return entry.value
            return await miss_async(args, kwargs)

        async def miss_async(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            full, located = locate(args, kwargs)
            return await cache.lookup_async(
                full, located, lambda: fn(*args, **kwargs), policy,
                lambda: tags_for(*args, **kwargs),
            )  # fmt: skip

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not kwargs:
                if len(args) == 1:
                    only = args[0]
                    try:
                        entry = mine.get(only)
                    except TypeError:  # an unhashable argument: the canonical key serves it
                        entry = None
                    if (
                        entry is not None
                        and entry.argtype is type(only)
                        and clock() < entry.early_from
                    ):
                        stats.hits += 1
                        entry.used = True
                        return entry.value
                else:
                    try:
                        entry = data.get((slot, args, (*map(type, args),)))
                    except TypeError:
                        entry = None
                    if entry is not None and clock() < entry.early_from:
                        stats.hits += 1
                        entry.used = True
                        return entry.value
            return miss_sync(args, kwargs)

        def miss_sync(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            full, located = locate(args, kwargs)
            return cache.lookup_sync(
                full, located, lambda: fn(*args, **kwargs), policy,
                lambda: tags_for(*args, **kwargs),
            )  # fmt: skip

        wrapper = sync_wrapper

    def key_of(*args: Any, **kwargs: Any) -> str:
        """The full cache key of this call."""
        return locate(args, kwargs)[0]

    wrapper.cache = cache
    wrapper.key = key_of
    wrapper.invalidate = lambda *args, **kwargs: cache.delete_keys([key_of(*args, **kwargs)])
    wrapper.ainvalidate = lambda *args, **kwargs: cache.adelete_keys([key_of(*args, **kwargs)])
    return wrapper  # type: ignore[no-any-return]
