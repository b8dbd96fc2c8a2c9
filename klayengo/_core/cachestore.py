"""Where cached responses live: a small store interface and its in-memory implementation.

The cache transport only ever calls :class:`CacheStore`'s ``get``/``set``/``delete``
on opaque string keys, so another implementation (e.g. Redis) can replace
:class:`MemoryStore` without the transport knowing.

:class:`MemoryStore` is a cachetools ``TLRUCache``: each record expires on its own
(``keep_until``: freshness plus the longest stale window, so stale entries survive
for ``stale-if-error`` and revalidation), least recently used records are evicted
first, and both bounds hold at all times:

- ``max_entries`` records;
- ``max_bytes`` accounted bytes, where a record is charged its body, its header
  bytes, its key (twice: the cache and its LRU index each hold it) and
  ``ENTRY_OVERHEAD`` for the Python objects around them. Memory used by the store
  therefore stays close to ``max_bytes`` however many URLs pass through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import TLRUCache

from .cache import CacheEntry, VaryIndex
from .events import NULL_EVENTS, Events

__all__ = ["CacheStore", "MemoryStore", "Record"]

#: What a store holds under a key.
Record = CacheEntry | VaryIndex


class CacheStore(Protocol):
    """The storage the cache transport needs; keys are opaque strings."""

    def get(self, key: str) -> Record | None:
        """The live record under ``key``, or None."""

    def set(self, key: str, record: Record) -> None:
        """Store ``record`` under ``key`` (silently dropped when it cannot fit)."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""


if TYPE_CHECKING:
    _Base = TLRUCache[str, Record]
else:  # cachetools < 6 is not subscriptable at run time
    _Base = TLRUCache


def _ttu(_key: str, record: Record, _now: float) -> float:
    return record.keep_until


def _sizeof(record: Record) -> int:
    return record.size


class _BoundedTLRU(_Base):
    """A TLRUCache that counts the records it evicts for space (not the expired ones)."""

    evicted: int = 0

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evicted += 1
        return item


class MemoryStore:
    """A bounded, thread-safe in-memory :class:`CacheStore` (see the module docstring).

    Args:
        max_entries: records kept at most.
        max_bytes: accounted bytes kept at most.
        timer: monotonic seconds, the clock ``keep_until`` is expressed in.
        events: receives ``cache_size`` after each change and ``cache_evicted``.
    """

    __slots__ = ("_cache", "_events", "_lock", "max_entries")

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        timer: Callable[[], float],
        events: Events = NULL_EVENTS,
    ) -> None:
        self.max_entries = max_entries
        self._cache = _BoundedTLRU(maxsize=max_bytes, ttu=_ttu, timer=timer, getsizeof=_sizeof)
        self._events = events
        self._lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return int(self._cache.maxsize)

    def __len__(self) -> int:
        with self._lock:
            self._cache.expire()
            return len(self._cache)

    @property
    def nbytes(self) -> int:
        """Accounted bytes of the live records."""
        with self._lock:
            self._cache.expire()
            return int(self._cache.currsize)

    def get(self, key: str) -> Record | None:
        try:
            with self._lock:
                return self._cache[key]
        except KeyError:
            return None

    def set(self, key: str, record: Record) -> None:
        cache = self._cache
        with self._lock:
            evicted = 0
            if record.size > cache.maxsize:
                self._delete_locked(key)
            else:
                before = cache.evicted
                cache.expire()
                if len(cache) >= self.max_entries and key not in cache:
                    while len(cache) >= self.max_entries:
                        cache.popitem()
                cache[key] = record
                evicted = cache.evicted - before
            entries, nbytes = len(cache), int(cache.currsize)
        if evicted:
            self._events.cache_evicted(evicted)
        self._events.cache_size(entries, nbytes)

    def delete(self, key: str) -> None:
        with self._lock:
            removed = self._delete_locked(key)
            entries, nbytes = len(self._cache), int(self._cache.currsize)
        if removed:
            self._events.cache_size(entries, nbytes)

    def _delete_locked(self, key: str) -> bool:
        try:
            del self._cache[key]
        except KeyError:  # absent, or present but already expired (now removed)
            return False
        return True

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
        self._events.cache_size(0, 0)
