"""Cache records in Redis (``klayengo._core.backend.CacheStore``)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ..._core.backend import CacheBounds, memory_cache
from ..._core.cache import HTTPTypes
from ..._core.cachestore import MemoryStore, Record, decode_record, encode_record
from ..._core.clock import Clock
from ..._core.events import NULL_EVENTS, Events
from ._ops import Op, RedisStore, Script, ignore

if TYPE_CHECKING:
    from ._backend import RedisBackend

__all__ = ["RedisCache"]

# KEYS: entry[, salt]. ARGV: the salt this process proposes (with the salt key).
# -> {value or nil, its PTTL, the salt every process uses or nil}. The SET NX puts
# back a salt that was flushed or evicted, with the one the caller already uses.
_CACHE_GET = """
local salt = false
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[1], 'NX')
  salt = redis.call('GET', KEYS[2])
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), salt}
"""


_S_CACHE_GET = Script.of(_CACHE_GET, 1)
_S_CACHE_GET_SALTED = Script.of(_CACHE_GET, 2)


class RedisCache(RedisStore):
    """Cache records in Redis, under a digest of the cache key: bounded key names,
    and no URL (query strings included) readable in Redis's keyspace, ``MONITOR``
    or slow log. While Redis is unavailable, a bounded local store of this client
    answers (emptied when an outage begins: it may have missed invalidations)."""

    __slots__ = ("_http", "_local", "_local_of")

    def __init__(
        self,
        backend: RedisBackend,
        clock: Clock,
        events: Events,
        bounds: CacheBounds,
        http: HTTPTypes | None,
    ) -> None:
        super().__init__(backend, clock, events)
        self._http = http
        # Its sizes are not reported: Redis's are not either.
        self._local = memory_cache(clock, NULL_EVENTS, bounds)
        self._local_of = backend._local

    @property
    def key_salt(self) -> bytes:
        return self._backend._cache_salt

    def _fallback(self) -> MemoryStore:
        backend_local = self._backend._local
        if self._local_of is not backend_local:  # Redis came back since: start afresh
            self._local_of = backend_local
            self._local.clear()
        return self._local

    def _key(self, key: str) -> str:
        digest = hashlib.blake2b(
            key.encode("utf-8", "surrogatepass"), digest_size=20, key=self._backend._cache_names
        )
        return self._backend.key("c", digest.hexdigest())

    def _get(self, key: str) -> Op[Record | None]:
        backend = self._backend
        if backend._salt_shared:
            script = _S_CACHE_GET_SALTED
            args: tuple[Any, ...] = (self._key(key), backend._cache_salt_key, backend._cache_salt)
        else:
            script, args = _S_CACHE_GET, (self._key(key),)

        def parse(reply: Any) -> Record | None:
            value, remaining, salt = reply
            if isinstance(salt, bytes) and salt and salt != backend._cache_salt:
                backend._cache_salt = salt  # the one every process uses
            if value is None:
                return None
            if not isinstance(value, bytes):
                raise TypeError(f"unexpected reply type {type(value).__name__}")
            if self._http is None:
                raise TypeError("a cache store bound without http= cannot read records back")
            return decode_record(key, value, int(remaining), self._clock.monotonic(), self._http)

        return Op("cache_get", script, args, parse, lambda local, clock: self._fallback().get(key))

    def _set(self, key: str, record: Record) -> Op[None]:
        encoded = encode_record(record, self._clock.monotonic())
        if encoded is None:
            return self._delete(key)
        value, keep_ms = encoded
        return Op(
            "cache_set",
            None,
            ("SET", self._key(key), value, "PX", keep_ms),
            ignore,
            lambda local, clock: self._fallback().set(key, record),
        )

    def _delete(self, key: str) -> Op[None]:
        return Op(
            "cache_delete",
            None,
            ("DEL", self._key(key)),
            ignore,
            lambda local, clock: self._fallback().delete(key),
        )

    def get(self, key: str) -> Record | None:
        return self._run(self._get(key))

    def set(self, key: str, record: Record) -> None:
        self._run(self._set(key, record))

    def delete(self, key: str) -> None:
        self._run(self._delete(key))

    def close(self) -> None:
        self._local.clear()

    async def aget(self, key: str) -> Record | None:
        return await self._arun(self._get(key))

    async def aset(self, key: str, record: Record) -> None:
        await self._arun(self._set(key, record))

    async def adelete(self, key: str) -> None:
        await self._arun(self._delete(key))
