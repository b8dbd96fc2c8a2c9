"""Rate limits in Redis: a GCRA limiter per key (``klayengo._core.backend.LimitStore``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._core.backend import ADMITTED, DEFAULT_LIMIT_MAX_KEYS, Reservation
from ._ops import NOW, Op, RedisStore, Script, from_us, ignore, reply_text, to_us

__all__ = ["RedisLimits"]

# Mirrors gcra_reserve().
_RESERVE = (
    NOW
    + """
local interval = tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 't', 'p')
local tat = tonumber(v[1] or 0)
local paused = tonumber(v[2] or 0)
if tat < now then tat = now end
local start = tat - (tonumber(ARGV[2]) - 1) * interval
if start < now then start = now end
if start < paused then start = paused end
local wait = start - now
local max_wait = tonumber(ARGV[3])
if max_wait >= 0 and wait > max_wait then return {0, wait} end
if start > tat then tat = start end
tat = tat + interval
redis.call('HSET', KEYS[1], 't', string.format('%d', tat))
local last = tat
if paused > last then last = paused end
redis.call('PEXPIRE', KEYS[1], math.floor((last - now) / 1000) + 1)
return {1, wait, string.format('%d', tat), string.format('%d', start)}
"""
)

# KEYS: limiter. ARGV: tat_us (what the reservation set), start_us, interval_us.
# Gives a cancelled reservation's slot back when no later reservation was made
# (the tat is still the one it set) and its start has not come: the limiter is
# then where it would be without it. -> 1 given back, 0 not.
_CANCEL = (
    NOW
    + """
local t = redis.call('HGET', KEYS[1], 't')
if not t or t ~= ARGV[1] or now >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 't', string.format('%d', tonumber(t) - tonumber(ARGV[3])))
return 1
"""
)

# KEYS: limiter. ARGV: pause_us. Never shortens an earlier pause.
_PAUSE = (
    NOW
    + """
local v = redis.call('HMGET', KEYS[1], 't', 'p')
local untl = now + tonumber(ARGV[1])
if untl <= tonumber(v[2] or 0) then return 0 end
redis.call('HSET', KEYS[1], 'p', string.format('%d', untl))
local last = tonumber(v[1] or 0)
if untl > last then last = untl end
redis.call('PEXPIRE', KEYS[1], math.floor((last - now) / 1000) + 1)
return 1
"""
)


_S_RESERVE = Script.of(_RESERVE, 1)
_S_PAUSE = Script.of(_PAUSE, 1)
_S_CANCEL = Script.of(_CANCEL, 1)


class _RedisTicket:
    """A reservation's fixed start; cancelling gives the slot back when it is the
    latest one and its start has not come (one round trip)."""

    __slots__ = ("_cancel", "_deadline", "_limits")

    def __init__(self, limits: RedisLimits, deadline: float, cancel: Op[None]) -> None:
        self._limits = limits
        self._deadline = deadline
        self._cancel = cancel

    def set_waker(self, waker: Callable[[], object] | None) -> None:
        return None  # the start never moves

    def remaining(self, before: Callable[[], object] | None = None) -> float:
        if before is not None:
            before()
        return self._deadline - self._limits._clock.monotonic()

    def finish(self) -> None:
        return None

    def cancel(self) -> None:
        self._limits._run(self._cancel)

    async def acancel(self) -> None:
        await self._limits._arun(self._cancel)


class RedisLimits(RedisStore):
    __slots__ = ()

    def _reserve(
        self, key: str, interval: float, burst: int, max_wait: float | None, max_keys: int
    ) -> Op[Reservation]:
        rkey = self._backend.key("rl", key)
        interval_us = max(1, to_us(interval))

        def parse(reply: Any) -> Reservation:
            admitted, wait_us = int(reply[0]), int(reply[1])
            wait = from_us(wait_us)
            if admitted != 1:
                return Reservation(admitted=False, wait=wait)
            if wait_us <= 0:
                return ADMITTED
            cancel = Op(
                "limit_cancel",
                _S_CANCEL,
                (rkey, reply_text(reply[2]), reply_text(reply[3]), interval_us),
                ignore,
                lambda local, clock: None,  # the fallback knows nothing of this slot
            )
            return Reservation(
                # The deadline counts from the reply (a little late, never early).
                admitted=True,
                wait=wait,
                ticket=_RedisTicket(self, self._clock.monotonic() + wait, cancel),
            )

        return Op(
            "limit_reserve",
            _S_RESERVE,
            (rkey, interval_us, burst, -1 if max_wait is None else to_us(max_wait)),
            parse,
            lambda local, clock: local.reserve(key, interval, burst, max_wait, clock, max_keys),
        )

    def _pause(self, key: str, seconds: float) -> Op[None]:
        return Op(
            "limit_pause",
            _S_PAUSE,
            (self._backend.key("rl", key), to_us(seconds)),
            ignore,
            lambda local, clock: local.pause(key, seconds, clock.monotonic()),
        )

    def reserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        return self._run(self._reserve(key, interval, burst, max_wait, max_keys))

    def pause(self, key: str, seconds: float) -> None:
        self._run(self._pause(key, seconds))

    async def areserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        return await self._arun(self._reserve(key, interval, burst, max_wait, max_keys))

    async def apause(self, key: str, seconds: float) -> None:
        await self._arun(self._pause(key, seconds))
