"""The in-process tier: a map bounded by entry count and by bytes, with TTLs.

Eviction is LRU approximated by CLOCK (second chance): a hit only sets the entry's
``used`` bit, which costs less than reordering a linked list; the eviction hand walks
from the oldest insertion, giving a used entry one more round and evicting the first
unused one.

Reads happen inline in the decorated function (a dict lookup and a float comparison);
writes, evictions and invalidations take a lock, so threads share one tier safely. Entries
are indexed by full key and by tag, so a pub/sub invalidation from another process or a
tag invalidation finds them.

A decorated function's one-argument calls (a ``str``, ``int``, ``bytes`` or ``None``) are
also indexed by the argument alone, one index per function (``arg_index``), so a hit hashes
the argument rather than a tuple built per call. Equal arguments of those types are the
same value, except an ``int`` and an equal ``float``, ``bool`` or subclass; the entry
carries the argument's type and a hit checks it (``bool`` arguments are not indexed, since
``True == 1``). The index follows ``data`` under the lock: an entry is in it exactly while
it is in ``data``.
"""

from __future__ import annotations

import pickle
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from safeship.cache._entry import Entry
from safeship.cache._errors import CacheConfigError

__all__ = ["MemoryTier", "approximate_size"]

_INDEXED = frozenset({str, int, bytes, type(None)})


def approximate_size(value: Any) -> int:
    """Bytes a value occupies, as its pickle size (shallow ``sys.getsizeof`` when it does not
    pickle). Measured once per store, on the miss path."""
    try:
        return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - any unpicklable value still gets a size
        return sys.getsizeof(value)


class MemoryTier:
    """CLOCK/LRU + TTL map. ``data`` is read by the hot path directly; writes lock."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        sizer: Callable[[Any], int] = approximate_size,
    ) -> None:
        if type(max_entries) is not int or not 0 <= max_entries <= 100_000_000:
            raise CacheConfigError(f"max_entries={max_entries!r}: use an int in [0, 1e8]")
        if type(max_bytes) is not int or max_bytes < 0:
            raise CacheConfigError(f"max_bytes={max_bytes!r}: use a non-negative int")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.sizer = sizer
        self.data: dict[Any, Entry] = {}
        self.bytes = 0
        self.evictions = 0
        self._by_key: dict[str, Any] = {}
        self._by_tag: dict[str, set[str]] = {}
        self._args: dict[int, dict[Any, Entry]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.data)

    def arg_index(self, slot: int) -> dict[Any, Entry]:
        """The index of function ``slot``'s one-argument entries, by argument (read-only for
        the caller): the entry under local ``(slot, arg, type(arg))`` is ``index[arg]``, with
        ``argtype`` ``type(arg)``, for arguments of an indexed type."""
        with self._lock:
            return self._args.setdefault(slot, {})

    def _index_of(self, local: Any) -> dict[Any, Entry] | None:
        if type(local) is tuple and len(local) == 3 and local[2] in _INDEXED:
            return self._args.get(local[0])
        return None

    def lookup(self, local: Any) -> Entry | None:
        """The entry under ``local`` (LRU-touched), or None."""
        entry = self.data.get(local)
        if entry is not None:
            entry.used = True
        return entry

    def put(self, local: Any, entry: Entry) -> None:
        """Store ``entry``, evicting least recently used ones past either bound."""
        if self.max_entries == 0:
            return
        entry.size = self.sizer(entry.value) + len(entry.key)
        if entry.size > self.max_bytes:
            return  # larger than the whole tier: caching it would evict everything
        with self._lock:
            self._remove(local)
            self._remove(self._by_key.get(entry.key))
            self.data[local] = entry
            self._by_key[entry.key] = local
            index = self._index_of(local)
            if index is not None:
                entry.argtype = local[2]
                index[local[1]] = entry
            for tag in entry.tags:
                self._by_tag.setdefault(tag, set()).add(entry.key)
            self.bytes += entry.size
            while self.data and (len(self.data) > self.max_entries or self.bytes > self.max_bytes):
                self._evict_one()

    def _evict_one(self) -> None:
        data = self.data
        while True:
            oldest = next(iter(data))
            candidate = data[oldest]
            if not candidate.used:
                self._remove(oldest)
                self.evictions += 1
                return
            candidate.used = False  # second chance: to the back of the queue
            del data[oldest]
            data[oldest] = candidate

    def _remove(self, local: Any) -> None:
        if local is None:
            return
        entry = self.data.pop(local, None)
        if entry is None:
            return
        self.bytes -= entry.size
        index = self._index_of(local)
        if index is not None and index.get(local[1]) is entry:
            del index[local[1]]
        if self._by_key.get(entry.key) == local:
            del self._by_key[entry.key]
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(entry.key)
                if not keys:
                    del self._by_tag[tag]

    def drop(self, local: Any) -> None:
        with self._lock:
            self._remove(local)

    def drop_keys(self, keys: Iterable[str]) -> int:
        """Remove the entries stored under these full keys; how many were present."""
        with self._lock:
            found = [self._by_key[key] for key in keys if key in self._by_key]
            for local in found:
                self._remove(local)
        return len(found)

    def drop_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying one of ``tags``; how many were removed."""
        with self._lock:
            keys = set().union(*(self._by_tag.get(tag, ()) for tag in tags))
        return self.drop_keys(keys)

    def clear(self) -> None:
        with self._lock:
            self.data.clear()
            self._by_key.clear()
            self._by_tag.clear()
            for index in self._args.values():
                index.clear()
            self.bytes = 0
