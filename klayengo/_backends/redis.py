"""``RedisBackend``: breaker signals, rate limits and cache entries shared through Redis.

Every operation is one round trip: a Lua script (run by SHA, sent in full only
when the server does not know it, e.g. after ``SCRIPT FLUSH``) or one plain
command. Scripts read the server's ``TIME``, so processes with skewed clocks agree;
answers are relative durations (see ``klayengo._core.backend``).

Fail-open. Every call goes through :meth:`RedisBackend._call`: on a Redis error or
timeout the operation is answered locally instead (rate limits and cache by a
:class:`~klayengo._core.backend.MemoryState`; breaker signals as the memory backend
does: no signal, every probe lease granted, so each process's own breakers decide),
``events.backend_error(operation)`` is reported, one WARNING is logged per outage,
and Redis is not tried again for ``cooldown`` seconds (then by one caller at a
time), so no request waits on a dead Redis longer than the timeout. When a call
succeeds again, sharing resumes and the local state is discarded.

Clients: one sync client (one connection pool) for the sync transports and for
trio (there redis-py's asyncio client cannot run, so the sync client runs in a
worker thread, and a call that waited a whole timeout for a thread answers
locally); one ``redis.asyncio`` client per running asyncio event loop (connections
cannot cross loops), closed when that loop shuts down. redis-py's own retries are
disabled: a second attempt would double the worst-case wait.

Credentials: the URL's userinfo and query are redacted in every repr, log record
and exception raised here; redis-py's messages are scrubbed of the password too.

Cache: records are serialized (:func:`~klayengo._core.cachestore.encode_record`)
under a digest of their key (no URL or query string in Redis's keyspace, ``MONITOR``
or slow log) with a time to live of ``keep_until - now``; a read returns the value
and its remaining TTL in one round trip, so every process rebuilds the deadlines on
its own clock. The salt of the cache's credential and Vary digests must be the same
in every process: derived from ``cache_secret`` when given (then it is never in
Redis, and it also keys the key digests), else a random one stored once in Redis
(``SET NX``) and read back with every lookup, so a flushed salt is put back by the
first process that reads, with the value every running process already uses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import sniffio

from .._core.backend import (
    ADMITTED,
    DEFAULT_CACHE_BOUNDS,
    DEFAULT_LIMIT_MAX_KEYS,
    LOCAL_SIGNALS,
    SIGNAL_RETENTION,
    BreakerSignal,
    CacheBounds,
    MemoryState,
    Reservation,
    Stores,
    memory_cache,
)
from .._core.cache import HTTPTypes
from .._core.cachestore import KEY_SALT_BYTES, MemoryStore, Record, decode_record, encode_record
from .._core.clock import Clock
from .._core.events import NULL_EVENTS, Events

if TYPE_CHECKING:
    import asyncio

# asyncio and anyio's thread pool are imported when first used, so that
# ``import klayengo`` stays as light as it is without this module.

__all__ = ["DEFAULT_COOLDOWN", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisBackend", "redact_url"]

_log = logging.getLogger("klayengo")

T = TypeVar("T")

#: Seconds each Redis call may take (connect, and then reply) before it fails open.
DEFAULT_TIMEOUT = 0.05
#: Seconds Redis is left alone after a failure before one caller tries it again.
DEFAULT_COOLDOWN = 1.0
#: The prefix of every key klayengo writes.
DEFAULT_PREFIX = "klayengo:"
_US = 1_000_000

# -- Lua: every time below is integer microseconds of the server's clock ----------------
# (integers, because Lua numbers returned to Redis are truncated to integers and
# tostring() keeps only 14 significant digits; '%d' keeps all of them).

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: signal. -> {now, generation, opened, until} (until = 0: closed)
_SIGNAL_GET = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'gen', 'opened', 'until')
if not v[3] then return {now, 0, 0, 0} end
return {now, tonumber(v[1]), tonumber(v[2]), tonumber(v[3])}
"""
)

# KEYS: signal, probes. ARGV: open_for_us, retention_ms.
_SIGNAL_OPEN = (
    _NOW
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
    _NOW
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
# Mirrors gcra_reserve().
_RESERVE = (
    _NOW
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
    _NOW
    + """
local t = redis.call('HGET', KEYS[1], 't')
if not t or t ~= ARGV[1] or now >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 't', string.format('%d', tonumber(t) - tonumber(ARGV[3])))
return 1
"""
)

# KEYS: limiter. ARGV: pause_us. Never shortens an earlier pause.
_PAUSE = (
    _NOW
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


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    nkeys: int
    sha: str

    @classmethod
    def of(cls, text: str, nkeys: int) -> _Script:
        return cls(text, nkeys, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


_S_SIGNAL_GET = _Script.of(_SIGNAL_GET, 1)
_S_SIGNAL_OPEN = _Script.of(_SIGNAL_OPEN, 2)
_S_SIGNAL_CLOSE = _Script.of(_SIGNAL_CLOSE, 2)
_S_PROBE_ACQUIRE = _Script.of(_PROBE_ACQUIRE, 2)
_S_RESERVE = _Script.of(_RESERVE, 1)
_S_PAUSE = _Script.of(_PAUSE, 1)
_S_CANCEL = _Script.of(_CANCEL, 1)
_S_CACHE_GET = _Script.of(_CACHE_GET, 1)
_S_CACHE_GET_SALTED = _Script.of(_CACHE_GET, 2)


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    """One backend operation: what to send to Redis, how to read the reply, and the
    local answer when Redis is unavailable."""

    name: str
    script: _Script | None
    args: tuple[Any, ...]
    parse: Callable[[Any], T]
    local: Callable[[MemoryState, Clock], T]


def _us(seconds: float) -> int:
    return round(seconds * _US)


def _seconds(us: Any) -> float:
    return max(0.0, int(us) / _US)


def _parse_signal(reply: Any) -> BreakerSignal | None:
    now, generation, opened, until = (int(x) for x in reply)
    if until == 0:
        return None
    remaining = _seconds(until - now)
    return BreakerSignal(
        state="open" if remaining > 0 else "half_open",
        generation=generation,
        opened_ago=_seconds(now - opened),
        remaining=remaining,
    )


def _parse_open(reply: Any) -> BreakerSignal:
    signal = _parse_signal(reply)
    if signal is None:
        raise ValueError(f"unexpected reply {reply!r}")
    return signal


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _ignore(reply: Any) -> None:
    return None


# -- credentials --------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without userinfo and query (where redis-py also accepts a password).

    ``redis://user:secret@host:6379/0?password=x`` -> ``redis://***@host:6379/0``.
    Never raises: an unparsable URL becomes ``"<redis url>"``.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        return f"{parts.scheme}://{netloc}{parts.path}"
    except (ValueError, TypeError):
        return "<redis url>"


def _secrets_of(url: str) -> tuple[str, ...]:
    """The strings a message must not contain: the URL's userinfo parts, raw and decoded."""
    try:
        parts = urlsplit(url)
        found = {parts.password, parts.username}
        for name, _, value in (item.partition("=") for item in parts.query.split("&")):
            if name.lower() in {"password", "username"}:
                found.add(value)
    except (ValueError, TypeError):
        return ()
    secrets = {s for s in found if s} | {unquote(s) for s in found if s}
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted(secrets, key=len, reverse=True))


def _describe(error: BaseException, secrets: Sequence[str]) -> str:
    text = f"{type(error).__name__}: {error}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- the backend ----------------------------------------------------------------------


_SKIP, _NORMAL, _TRIAL = 0, 1, 2


class _Health:
    """Whether to try Redis now: always while it works; after a failure, one caller
    per ``cooldown`` (a *trial*) tries again while the others use local state."""

    __slots__ = ("_cooldown", "_down", "_lock", "_retry_at")

    def __init__(self, cooldown: float) -> None:
        self._cooldown = cooldown
        self._down = False
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> int:
        """``_NORMAL`` (no outage), ``_TRIAL`` (this caller probes Redis) or ``_SKIP``."""
        if not self._down:
            return _NORMAL
        now = time.monotonic()
        with self._lock:
            if not self._down:
                return _NORMAL
            if now < self._retry_at:
                return _SKIP
            self._retry_at = now + self._cooldown
            return _TRIAL

    def failed(self) -> bool:
        """Record a failure; True when it starts an outage."""
        with self._lock:
            started = not self._down
            self._down = True
            self._retry_at = time.monotonic() + self._cooldown
            return started

    def succeeded(self, mode: int) -> bool:
        """Record a success; True when it ends an outage. Only a trial ends one: a
        call sent before the outage began and answered late proves nothing."""
        if not self._down or mode != _TRIAL:
            return False
        with self._lock:
            ended = self._down
            self._down = False
            return ended


class RedisBackend:
    """Shares breaker open signals, probe leases, rate limits and cache entries in Redis.

    Pass it as ``ResilientClient(backend=klayengo.RedisBackend(url))``. Needs the
    ``redis`` extra (``pip install 'klayengo[redis]'``). Creating it does no I/O;
    connections open on first use.

    Args:
        url: a redis-py URL (``redis://``, ``rediss://``, ``unix://``). Credentials
            in it are used to connect and never shown.
        prefix: the prefix of every key (separate applications sharing one Redis
            use different prefixes).
        timeout: seconds a call may wait for its reply (and, separately, for a new
            connection) before it fails open to local state.
        connect_timeout: seconds to establish a connection (default: ``timeout``).
        cooldown: seconds Redis is left alone after a failure.
        max_connections: bound of each connection pool (None: redis-py's default).
        cache_secret: keys the cache's digests (credentials, Vary, key names) in
            every process that shares this Redis and prefix, without being stored
            in Redis. None (default): a random salt is stored in Redis once and
            shared; anyone who can read the Redis can then read it too (see
            SECURITY.md).

    Raises:
        ImportError: redis-py is not installed.
        ValueError: an invalid argument or URL (the message shows the redacted URL).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
        max_connections: int | None = None,
        cache_secret: str | bytes | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not cooldown >= 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
        if cache_secret is not None and not isinstance(cache_secret, str | bytes):
            raise TypeError(
                f"cache_secret must be str, bytes or None, got {type(cache_secret).__name__}"
            )
        if cache_secret is not None and not cache_secret:
            raise ValueError("cache_secret must not be empty")
        try:
            import redis
            import redis.asyncio
        except ImportError:
            raise ImportError(
                "klayengo.RedisBackend needs redis-py: pip install 'klayengo[redis]'"
            ) from None
        self._redis = redis
        self._url = url
        self.redacted_url = redact_url(url)
        self._secrets = _secrets_of(url)
        self.prefix = prefix
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else timeout)
        self.cooldown = float(cooldown)
        self._max_connections = max_connections
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
            ValueError,
            TypeError,
            IndexError,
        )
        self._health = _Health(self.cooldown)
        self._local = MemoryState()
        self._cache_salt_key = f"{prefix}cache-salt"
        if cache_secret is None:
            # Proposed to Redis by the first lookup; replaced by the stored one.
            self._cache_salt = os.urandom(KEY_SALT_BYTES)
            self._cache_names = b""
            self._salt_shared = True
        else:
            secret = cache_secret.encode() if isinstance(cache_secret, str) else cache_secret
            self._cache_salt = _derive(secret, b"klayengo:salt", KEY_SALT_BYTES)
            self._cache_names = _derive(secret, b"klayengo:names", 32)
            self._salt_shared = False
        self._lock = threading.Lock()
        self._sync: Any = None
        # Per running asyncio loop: its client and the generator that closes it.
        self._async: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]] = {}
        # Built now (redis-py connects lazily) so that a bad URL fails here.
        self._sync = self._build(redis.Redis)

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self.redacted_url!r}, prefix={self.prefix!r}, timeout={self.timeout!r})"
        )

    # clients --------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "health_check_interval": 0,
        }
        if self._max_connections is not None:
            kwargs["max_connections"] = self._max_connections
        return kwargs

    def _build(self, factory: Any, retry: Any = None) -> Any:
        redis = self._redis
        if retry is None:
            retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        try:
            return factory.from_url(self._url, retry=retry, **self._client_kwargs())
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"invalid Redis URL {self.redacted_url}: {_describe(exc, self._secrets)}"
            ) from None

    def _sync_client(self) -> Any:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._build(self._redis.Redis)
                client = self._sync
        return client

    async def _asyncio_client(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is not None:
            return found[0]
        with self._lock:
            found = self._async.get(loop)
            if found is not None:
                return found[0]
            from redis.asyncio.retry import Retry as AsyncRetry

            # A closed loop's client was closed by its keeper (or can never be).
            for closed in [known for known in self._async if known.is_closed()]:
                del self._async[closed]
            client = self._build(
                self._redis.asyncio.Redis, AsyncRetry(self._redis.backoff.NoBackoff(), 0)
            )
            keeper = _close_with_loop(client)
            self._async[loop] = (client, keeper)
        # Started, the keeper is one of the loop's async generators, which
        # ``asyncio.run`` (and every asyncio.Runner) closes before closing the loop:
        # its ``finally`` then closes the client's connections on their own loop.
        await keeper.__anext__()
        return client

    def close(self) -> None:
        """Close the sync connection pool (connections reopen if used again)."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the sync pool and the current event loop's async client."""
        self.close()
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            with self._lock:
                found = self._async.pop(asyncio.get_running_loop(), None)
            if found is not None:
                await found[1].aclose()

    def __enter__(self) -> RedisBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # binding ----------------------------------------------------------------------
    def bind(
        self,
        *,
        clock: Clock,
        events: Events,
        cache_bounds: CacheBounds = DEFAULT_CACHE_BOUNDS,
        http: HTTPTypes | None = None,
    ) -> Stores:
        """The stores one client uses: ``clock`` serves the local fallback (and turns
        cache deadlines into durations), ``cache_bounds`` bounds the cache records
        this client keeps locally while Redis is unavailable, ``http`` (the client's
        ``httpx`` or ``httpx2`` module) is what cache records are read back into."""
        return Stores(
            signals=_RedisSignals(self, clock, events),
            limits=_RedisLimits(self, clock, events),
            cache=_RedisCache(self, clock, events, cache_bounds, http),
        )

    def key(self, kind: str, key: str) -> str:
        """The Redis key of ``key`` in ``kind``; the ``{...}`` hash tag keeps one
        breaker's keys in one Redis Cluster slot."""
        return f"{self.prefix}{kind}:{{{key}}}"

    # the fail-open wrapper ----------------------------------------------------------
    def _call(self, op: _Op[T], clock: Clock, events: Events) -> T:
        mode = self._health.should_try()
        if mode != _SKIP:
            try:
                reply = _execute(self._sync_client(), op, self._redis)
                result = op.parse(reply)
            except self._errors as exc:
                self._failed(op, exc, events)
            else:
                self._succeeded(mode)
                return result
        return op.local(self._local, clock)

    async def _acall(self, op: _Op[T], clock: Clock, events: Events) -> T:
        mode = self._health.should_try()
        if mode != _SKIP:
            try:
                if sniffio.current_async_library() == "asyncio":
                    reply = await _aexecute(await self._asyncio_client(), op, self._redis)
                else:
                    import anyio.to_thread

                    # redis.asyncio runs on asyncio only: trio gets the sync client
                    # in a worker thread, bounded by the same socket timeouts.
                    reply = await anyio.to_thread.run_sync(
                        self._execute_unless_late, op, time.monotonic()
                    )
                result = op.parse(reply)
            except self._errors as exc:
                self._failed(op, exc, events)
            else:
                self._succeeded(mode)
                return result
        return op.local(self._local, clock)

    def _execute_unless_late(self, op: _Op[Any], submitted: float) -> Any:
        """``_execute`` in a worker thread, unless waiting for the thread already took
        the whole timeout (many tasks, few threads): then the caller answers locally."""
        if time.monotonic() - submitted > self.timeout:
            raise TimeoutError("no worker thread free within the timeout")
        return _execute(self._sync_client(), op, self._redis)

    def _failed(self, op: _Op[Any], error: BaseException, events: Events) -> None:
        started = self._health.failed()
        try:
            events.backend_error(op.name)
        except Exception:  # a sink must not turn a fallback into a failure
            _log.debug("klayengo events.backend_error raised", exc_info=True)
        if started:
            _log.warning(
                "klayengo: Redis backend %s failed on %s (%s); using local state, "
                "retrying every %.3g s",
                self.redacted_url,
                op.name,
                _describe(error, self._secrets),
                self.cooldown,
                extra={"backend": self.redacted_url, "operation": op.name},
            )
        elif _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "klayengo: Redis backend %s still failing on %s (%s)",
                self.redacted_url,
                op.name,
                _describe(error, self._secrets),
            )

    def _succeeded(self, mode: int) -> None:
        if self._health.succeeded(mode):
            # What happened locally during the outage is not carried over.
            self._local = MemoryState()
            _log.info(
                "klayengo: Redis backend %s is reachable again; sharing resumed",
                self.redacted_url,
                extra={"backend": self.redacted_url},
            )


async def _close_with_loop(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


def _execute(client: Any, op: _Op[Any], redis: Any) -> Any:
    script = op.script
    if script is None:
        return client.execute_command(*op.args)
    try:
        return client.evalsha(script.sha, script.nkeys, *op.args)
    except redis.exceptions.NoScriptError:
        # Flushed or a new server: EVAL sends the body once and caches it again.
        return client.eval(script.text, script.nkeys, *op.args)


async def _aexecute(client: Any, op: _Op[Any], redis: Any) -> Any:
    script = op.script
    if script is None:
        return await client.execute_command(*op.args)
    try:
        return await client.evalsha(script.sha, script.nkeys, *op.args)
    except redis.exceptions.NoScriptError:
        return await client.eval(script.text, script.nkeys, *op.args)


class _RedisStore:
    __slots__ = ("_backend", "_clock", "_events")

    def __init__(self, backend: RedisBackend, clock: Clock, events: Events) -> None:
        self._backend = backend
        self._clock = clock
        self._events = events

    def _run(self, op: _Op[T]) -> T:
        return self._backend._call(op, self._clock, self._events)

    async def _arun(self, op: _Op[T]) -> T:
        return await self._backend._acall(op, self._clock, self._events)


_RETENTION_MS = round(SIGNAL_RETENTION * 1000)


class _RedisSignals(_RedisStore):
    __slots__ = ()

    def _keys(self, key: str) -> tuple[str, str]:
        return self._backend.key("cb", key), self._backend.key("cbp", key)

    def _get(self, key: str) -> _Op[BreakerSignal | None]:
        return _Op(
            "signal_get",
            _S_SIGNAL_GET,
            self._keys(key)[:1],
            _parse_signal,
            lambda local, clock: LOCAL_SIGNALS.get_signal(key),
        )

    def _open(self, key: str, open_for: float) -> _Op[BreakerSignal]:
        return _Op(
            "signal_open",
            _S_SIGNAL_OPEN,
            (*self._keys(key), _us(open_for), _RETENTION_MS),
            _parse_open,
            lambda local, clock: LOCAL_SIGNALS.publish_open(key, open_for),
        )

    def _close(self, key: str) -> _Op[None]:
        return _Op(
            "signal_close",
            _S_SIGNAL_CLOSE,
            (*self._keys(key), _RETENTION_MS),
            _ignore,
            lambda local, clock: LOCAL_SIGNALS.publish_closed(key),
        )

    def _acquire(self, key: str, max_calls: int, lease_ttl: float) -> _Op[str | None]:
        token = uuid.uuid4().hex
        return _Op(
            "probe_acquire",
            _S_PROBE_ACQUIRE,
            (*self._keys(key), max_calls, max(1, _us(lease_ttl)), token),
            lambda reply: token if int(reply) == 1 else None,
            lambda local, clock: LOCAL_SIGNALS.acquire_probe(key, max_calls, lease_ttl),
        )

    def _release(self, key: str, token: str) -> _Op[None]:
        return _Op(
            "probe_release",
            None,
            ("ZREM", self._keys(key)[1], token),
            _ignore,
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


class _RedisTicket:
    """A reservation's fixed start; cancelling gives the slot back when it is the
    latest one and its start has not come (one round trip)."""

    __slots__ = ("_cancel", "_deadline", "_limits")

    def __init__(self, limits: _RedisLimits, deadline: float, cancel: _Op[None]) -> None:
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


class _RedisLimits(_RedisStore):
    __slots__ = ()

    def _reserve(
        self, key: str, interval: float, burst: int, max_wait: float | None, max_keys: int
    ) -> _Op[Reservation]:
        rkey = self._backend.key("rl", key)
        interval_us = max(1, _us(interval))

        def parse(reply: Any) -> Reservation:
            admitted, wait_us = int(reply[0]), int(reply[1])
            wait = _seconds(wait_us)
            if admitted != 1:
                return Reservation(admitted=False, wait=wait)
            if wait_us <= 0:
                return ADMITTED
            cancel = _Op(
                "limit_cancel",
                _S_CANCEL,
                (rkey, _text(reply[2]), _text(reply[3]), interval_us),
                _ignore,
                lambda local, clock: None,  # the fallback knows nothing of this slot
            )
            return Reservation(
                # The deadline counts from the reply (a little late, never early).
                admitted=True,
                wait=wait,
                ticket=_RedisTicket(self, self._clock.monotonic() + wait, cancel),
            )

        return _Op(
            "limit_reserve",
            _S_RESERVE,
            (rkey, interval_us, burst, -1 if max_wait is None else _us(max_wait)),
            parse,
            lambda local, clock: local.reserve(key, interval, burst, max_wait, clock, max_keys),
        )

    def _pause(self, key: str, seconds: float) -> _Op[None]:
        return _Op(
            "limit_pause",
            _S_PAUSE,
            (self._backend.key("rl", key), _us(seconds)),
            _ignore,
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


def _derive(secret: bytes, person: bytes, size: int) -> bytes:
    return hashlib.blake2b(secret, digest_size=size, person=person).digest()


class _RedisCache(_RedisStore):
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

    def _get(self, key: str) -> _Op[Record | None]:
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

        return _Op("cache_get", script, args, parse, lambda local, clock: self._fallback().get(key))

    def _set(self, key: str, record: Record) -> _Op[None]:
        encoded = encode_record(record, self._clock.monotonic())
        if encoded is None:
            return self._delete(key)
        value, keep_ms = encoded
        return _Op(
            "cache_set",
            None,
            ("SET", self._key(key), value, "PX", keep_ms),
            _ignore,
            lambda local, clock: self._fallback().set(key, record),
        )

    def _delete(self, key: str) -> _Op[None]:
        return _Op(
            "cache_delete",
            None,
            ("DEL", self._key(key)),
            _ignore,
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
