"""Breaker signals and probe leases in Redis (``klayengo._core.backend.SignalStore``)."""

from __future__ import annotations

import uuid
from typing import Any

from ..._core.backend import LOCAL_SIGNALS, SIGNAL_RETENTION, BreakerSignal
from ._ops import NOW, Op, RedisStore, Script, from_us, ignore, to_us

__all__ = ["RedisSignals"]

# KEYS: signal. -> {now, generation, opened, until} (until = 0: closed)
_SIGNAL_GET = (
    NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'gen', 'opened', 'until')
if not v[3] then return {now, 0, 0, 0} end
return {now, tonumber(v[1]), tonumber(v[2]), tonumber(v[3])}
"""
)

# KEYS: signal, probes. ARGV: open_for_us, retention_ms.
_SIGNAL_OPEN = (
    NOW
    + """
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
local untl = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'opened', string.format('%d', now), 'until', string.format('%d', untl))
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[1]) / 1000) + tonumber(ARGV[2]))
redis.call('DEL', KEYS[2])
return {now, gen, now, untl}
"""
)

# KEYS: signal, probes. ARGV: retention_ms. The generation counter survives.
_SIGNAL_CLOSE = """
redis.call('HDEL', KEYS[1], 'opened', 'until')
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: signal, probes (a sorted set token -> lease expiry). ARGV: max_calls,
# lease_us, token. -> 1 granted, 0 refused.
_PROBE_ACQUIRE = (
    NOW
    + """
local untl = redis.call('HGET', KEYS[1], 'until')
if untl and tonumber(untl) > now then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[2])), ARGV[3])
local ttl = math.floor(tonumber(ARGV[2]) / 1000) + 1
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""
)

# KEYS: limiter (a hash: t = tat, p = paused until). ARGV: interval_us, burst,
# max_wait_us (-1: no limit). -> {1, wait_us} admitted, {0, wait_us} refused.


_S_SIGNAL_GET = Script.of(_SIGNAL_GET, 1)
_S_SIGNAL_OPEN = Script.of(_SIGNAL_OPEN, 2)
_S_SIGNAL_CLOSE = Script.of(_SIGNAL_CLOSE, 2)
_S_PROBE_ACQUIRE = Script.of(_PROBE_ACQUIRE, 2)


def _parse_signal(reply: Any) -> BreakerSignal | None:
    now, generation, opened, until = (int(x) for x in reply)
    if until == 0:
        return None
    remaining = from_us(until - now)
    return BreakerSignal(
        state="open" if remaining > 0 else "half_open",
        generation=generation,
        opened_ago=from_us(now - opened),
        remaining=remaining,
    )


def _parse_open(reply: Any) -> BreakerSignal:
    signal = _parse_signal(reply)
    if signal is None:
        raise ValueError(f"unexpected reply {reply!r}")
    return signal


_RETENTION_MS = round(SIGNAL_RETENTION * 1000)


class RedisSignals(RedisStore):
    __slots__ = ()

    def _keys(self, key: str) -> tuple[str, str]:
        return self._backend.key("cb", key), self._backend.key("cbp", key)

    def _get(self, key: str) -> Op[BreakerSignal | None]:
        return Op(
            "signal_get",
            _S_SIGNAL_GET,
            self._keys(key)[:1],
            _parse_signal,
            lambda local, clock: LOCAL_SIGNALS.get_signal(key),
        )

    def _open(self, key: str, open_for: float) -> Op[BreakerSignal]:
        return Op(
            "signal_open",
            _S_SIGNAL_OPEN,
            (*self._keys(key), to_us(open_for), _RETENTION_MS),
            _parse_open,
            lambda local, clock: LOCAL_SIGNALS.publish_open(key, open_for),
        )

    def _close(self, key: str) -> Op[None]:
        return Op(
            "signal_close",
            _S_SIGNAL_CLOSE,
            (*self._keys(key), _RETENTION_MS),
            ignore,
            lambda local, clock: LOCAL_SIGNALS.publish_closed(key),
        )

    def _acquire(self, key: str, max_calls: int, lease_ttl: float) -> Op[str | None]:
        token = uuid.uuid4().hex
        return Op(
            "probe_acquire",
            _S_PROBE_ACQUIRE,
            (*self._keys(key), max_calls, max(1, to_us(lease_ttl)), token),
            lambda reply: token if int(reply) == 1 else None,
            lambda local, clock: LOCAL_SIGNALS.acquire_probe(key, max_calls, lease_ttl),
        )

    def _release(self, key: str, token: str) -> Op[None]:
        return Op(
            "probe_release",
            None,
            ("ZREM", self._keys(key)[1], token),
            ignore,
            lambda local, clock: LOCAL_SIGNALS.release_probe(key, token),
        )

    def get_signal(self, key: str) -> BreakerSignal | None:
        return self._run(self._get(key))

    def publish_open(self, key: str, open_for: float) -> BreakerSignal:
        return self._run(self._open(key, open_for))

    def publish_closed(self, key: str) -> None:
        self._run(self._close(key))

    def acquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return self._run(self._acquire(key, max_calls, lease_ttl))

    def release_probe(self, key: str, token: str) -> None:
        self._run(self._release(key, token))

    async def aget_signal(self, key: str) -> BreakerSignal | None:
        return await self._arun(self._get(key))

    async def apublish_open(self, key: str, open_for: float) -> BreakerSignal:
        return await self._arun(self._open(key, open_for))

    async def apublish_closed(self, key: str) -> None:
        await self._arun(self._close(key))

    async def aacquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return await self._arun(self._acquire(key, max_calls, lease_ttl))

    async def arelease_probe(self, key: str, token: str) -> None:
        await self._arun(self._release(key, token))
