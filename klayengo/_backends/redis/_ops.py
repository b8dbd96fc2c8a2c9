"""Operations: one round trip each (a Lua script run by SHA, or one plain command),
with how to read the reply and the local answer when Redis is unavailable; and the
base of the stores that run them through the backend's fail-open call."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..._core.backend import MemoryState
from ..._core.clock import Clock
from ..._core.events import Events

if TYPE_CHECKING:
    from ._backend import RedisBackend

__all__ = [
    "NOW",
    "Op",
    "RedisStore",
    "Script",
    "aexecute",
    "execute",
    "ignore",
    "from_us",
    "reply_text",
    "to_us",
]

T = TypeVar("T")

_US = 1_000_000

# -- Lua: every time in the scripts is integer microseconds of the server's clock -------
# (integers, because Lua numbers returned to Redis are truncated to integers and
# tostring() keeps only 14 significant digits; '%d' keeps all of them).

#: The prologue of every script that reads the server's clock.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""


@dataclass(frozen=True, slots=True)
class Script:
    text: str
    nkeys: int
    sha: str

    @classmethod
    def of(cls, text: str, nkeys: int) -> Script:
        return cls(text, nkeys, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One backend operation: what to send to Redis, how to read the reply, and the
    local answer when Redis is unavailable."""

    name: str
    script: Script | None
    args: tuple[Any, ...]
    parse: Callable[[Any], T]
    local: Callable[[MemoryState, Clock], T]


def to_us(seconds: float) -> int:
    """``seconds`` in whole microseconds, as the scripts take them."""
    return round(seconds * _US)


def from_us(value: Any) -> float:
    """A script's microseconds in seconds (never negative)."""
    return max(0.0, int(value) / _US)


def reply_text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def ignore(reply: Any) -> None:
    return None


def execute(client: Any, op: Op[Any], redis: Any) -> Any:
    script = op.script
    if script is None:
        return client.execute_command(*op.args)
    try:
        return client.evalsha(script.sha, script.nkeys, *op.args)
    except redis.exceptions.NoScriptError:
        # Flushed or a new server: EVAL sends the body once and caches it again.
        return client.eval(script.text, script.nkeys, *op.args)


async def aexecute(client: Any, op: Op[Any], redis: Any) -> Any:
    script = op.script
    if script is None:
        return await client.execute_command(*op.args)
    try:
        return await client.evalsha(script.sha, script.nkeys, *op.args)
    except redis.exceptions.NoScriptError:
        return await client.eval(script.text, script.nkeys, *op.args)


class RedisStore:
    __slots__ = ("_backend", "_clock", "_events")

    def __init__(self, backend: RedisBackend, clock: Clock, events: Events) -> None:
        self._backend = backend
        self._clock = clock
        self._events = events

    def _run(self, op: Op[T]) -> T:
        return self._backend._call(op, self._clock, self._events)

    async def _arun(self, op: Op[T]) -> T:
        return await self._backend._acall(op, self._clock, self._events)
