"""Where cached responses live: the in-memory store, and the serialized form for others.

The cache layer stores *records* (:class:`~klayengo._core.cache.CacheEntry` and
:class:`~klayengo._core.cache.VaryIndex`) through the one
:class:`~klayengo._core.backend.CacheStore` interface of the client's backend; it
never knows which implementation it has. Two implement it:

- :class:`MemoryStore` (the memory backend, and ``RedisBackend``'s local fallback)
  keeps the record objects themselves: a hit re-parses nothing.
- ``RedisBackend`` serializes each record with :func:`encode_record` and reads it
  back with :func:`decode_record`, both pure functions here.

:class:`MemoryStore` is a cachetools ``TLRUCache``: each record expires on its own
(``keep_until``: freshness plus the longest stale window, so stale entries survive
for ``stale-if-error`` and revalidation), least recently used records are evicted
first, and both bounds hold at all times:

- ``max_entries`` records;
- ``max_bytes`` accounted bytes, where a record is charged its body, its header
  bytes, its key (twice: the cache and its LRU index each hold it) and
  ``ENTRY_OVERHEAD`` for the Python objects around them. Memory used by the store
  therefore stays close to ``max_bytes`` however many URLs pass through.

The serialized form. Processes do not share a monotonic clock, so a record's
deadlines cross the boundary as durations: everything is relative to the moment it
was written, and the writer also states how long the record is kept (``keep_ms``,
the store's time to live). A reader learns how much of that is left (Redis's
``PTTL``, counted on the server's clock, the one clock every process shares), so
``keep_ms - remaining_ms`` is the time since the write, whatever the hosts' clocks
say. Layout: ``b"klc1"``, a 4-byte big-endian length, that many bytes of JSON
metadata (status, raw header bytes as latin-1, the relative deadlines, the flags),
then the body as is. No pickle: a tampered or foreign value can at worst be
unreadable, and an unreadable value is a miss (:func:`decode_record` never raises).
The cache key itself (method, URL with its query, credential digest) is not in the
value: the reader already knows it.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from cachetools import Cache, TLRUCache

from .cache import CacheEntry, HTTPTypes, VaryIndex
from .events import NULL_EVENTS, Events

__all__ = ["KEY_SALT_BYTES", "MemoryStore", "Record", "decode_record", "encode_record"]

#: What a store holds under a key.
Record = CacheEntry | VaryIndex

#: The size of the salt keying the cache's credential and Vary digests.
KEY_SALT_BYTES: Final = 16
_MAGIC: Final = b"klc1"
_LENGTH: Final = struct.Struct(">I")


if TYPE_CHECKING:
    _Base = TLRUCache[str, Record]
else:  # cachetools < 6 is not subscriptable at run time
    _Base = TLRUCache


#: ``key in cache`` without TLRUCache's expiry check: a plain dict lookup.
_stored: Final = Cache.__contains__


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
    """A bounded, thread-safe in-memory ``CacheStore`` (see the module docstring).

    Its ``key_salt`` is random: digests made with it mean nothing outside this store,
    which nothing outside this process reads.

    Args:
        max_entries: records kept at most.
        max_bytes: accounted bytes kept at most.
        timer: monotonic seconds, the clock ``keep_until`` is expressed in.
        events: receives ``cache_size`` after each change and ``cache_evicted``.
    """

    __slots__ = ("_cache", "_events", "_lock", "key_salt", "max_entries")

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
        self.key_salt = os.urandom(KEY_SALT_BYTES)

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
        cache = self._cache
        with self._lock:
            # A miss is the common case on the way upstream: answer it with one dict
            # lookup (the base class's `in`, expired records included) instead of the
            # two KeyErrors TLRUCache raises and catches on a missing key.
            if not _stored(cache, key):
                return None
            try:
                return cache[key]
            except KeyError:  # present but expired (now removed)
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

    def close(self) -> None:
        """The client is done: free the memory (and zero the size gauges)."""
        self.clear()

    # The async forms never suspend: nothing here waits.
    async def aget(self, key: str) -> Record | None:
        return self.get(key)

    async def aset(self, key: str, record: Record) -> None:
        self.set(key, record)

    async def adelete(self, key: str) -> None:
        self.delete(key)


# -- the serialized form (see the module docstring) ------------------------------------


def encode_record(record: Record, now: float) -> tuple[bytes, int] | None:
    """``(value, keep_ms)`` for ``record`` written at monotonic ``now``, or None when
    nothing is left to keep (or it cannot be represented).

    ``keep_ms`` (the time to live to give the value) is rounded down, so a reader
    never sees a record past its ``keep_until``.
    """
    keep_ms = math.floor((record.keep_until - now) * 1000)
    if keep_ms <= 0:
        return None
    meta: dict[str, Any]
    if isinstance(record, VaryIndex):
        meta = {"kind": "vary", "keep_ms": keep_ms, "vary": list(record.vary)}
        body = b""
    else:
        meta = {
            "kind": "entry",
            "keep_ms": keep_ms,
            "host": record.host,
            "status": record.status,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in record.headers.raw],
            "extensions": {
                name: value.decode("latin-1")
                for name, value in record.extensions.items()
                if isinstance(value, bytes)
            },
            "vary": list(record.vary),
            "stored_ago": now - record.stored_at,
            "initial_age": record.initial_age,
            "lifetime": record.lifetime,
            "fresh_for": record.fresh_until - now,
            "stale_if_error_for": record.stale_if_error_until - now,
            "stale_while_revalidate_for": record.stale_while_revalidate_until - now,
            "no_stale": record.no_stale,
            "no_cache": record.no_cache,
            "etag": record.etag,
            "last_modified": record.last_modified,
            "size": record.size,
            "plain": record.plain,
        }
        body = record.body
    try:
        head = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, TypeError):  # a non-finite time: not worth sharing
        return None
    return b"".join((_MAGIC, _LENGTH.pack(len(head)), head, body)), keep_ms


def decode_record(
    key: str, value: bytes, remaining_ms: int, now: float, http: HTTPTypes
) -> Record | None:
    """The record :func:`encode_record` wrote, as of monotonic ``now``, or None when
    ``value`` is not one (foreign, corrupt, another format version). Never raises.

    Args:
        key: the key it was stored under (becomes the entry's ``key``).
        value: the stored bytes.
        remaining_ms: the value's remaining time to live; with the ``keep_ms`` in
            it, this says how long ago it was written.
        now: the reader's monotonic time.
        http: the HTTP library whose ``Headers`` and ``ByteStream`` the entry is made of.
    """
    try:
        return _decode(key, value, remaining_ms, now, http)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error):
        return None


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a bool")
    return value


def _text_or_none(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("not a str")
    return value


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise TypeError("not a list of names")
    return tuple(value)


def _decode(
    key: str, value: bytes, remaining_ms: int, now: float, http: HTTPTypes
) -> Record | None:
    if value[:4] != _MAGIC or remaining_ms <= 0:
        return None
    (length,) = _LENGTH.unpack_from(value, 4)
    start = 4 + _LENGTH.size
    meta = json.loads(value[start : start + length])
    body = bytes(value[start + length :])
    keep_ms = int(_number(meta["keep_ms"]))
    # When it was written, on this process's clock (never in the future).
    written = now - max(0, keep_ms - remaining_ms) / 1000
    keep_until = now + min(keep_ms, remaining_ms) / 1000
    if meta["kind"] == "vary":
        return VaryIndex(_names(meta["vary"]), keep_until)
    if meta["kind"] != "entry":
        return None
    raw = meta["headers"]
    if not isinstance(raw, list):
        raise TypeError("headers")
    headers = http.Headers(
        [(name.encode("latin-1"), field.encode("latin-1")) for name, field in raw]
    )
    extensions = meta["extensions"]
    if not isinstance(extensions, dict):
        raise TypeError("extensions")
    status = meta["status"]
    host = meta["host"]
    if not isinstance(status, int) or not 100 <= status <= 999 or not isinstance(host, str):
        raise ValueError("status or host")
    fresh_until = written + _number(meta["fresh_for"])
    return CacheEntry(
        key=key,
        host=host,
        status=status,
        headers=headers,
        body=body,
        stream=http.ByteStream(body),
        extensions={name: text.encode("latin-1") for name, text in extensions.items()},
        vary=_names(meta["vary"]),
        stored_at=written - _number(meta["stored_ago"]),
        initial_age=_number(meta["initial_age"]),
        lifetime=_number(meta["lifetime"]),
        fresh_until=fresh_until,
        no_stale=_flag(meta["no_stale"]),
        no_cache=_flag(meta["no_cache"]),
        stale_if_error_until=written + _number(meta["stale_if_error_for"]),
        stale_while_revalidate_until=written + _number(meta["stale_while_revalidate_for"]),
        keep_until=keep_until,
        etag=_text_or_none(meta["etag"]),
        last_modified=_text_or_none(meta["last_modified"]),
        size=int(_number(meta["size"])),
        plain=_flag(meta["plain"]),
    )
