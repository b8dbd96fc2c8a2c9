"""``RedisBackend``: the clients, the fail-open call every operation goes through, and
the stores it binds for each client."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, TypeVar

import sniffio

from ..._core.backend import DEFAULT_CACHE_BOUNDS, CacheBounds, MemoryState, Stores
from ..._core.cache import HTTPTypes
from ..._core.cachestore import KEY_SALT_BYTES
from ..._core.clock import Clock
from ..._core.events import Events
from ._cache import RedisCache
from ._health import SKIP, Health
from ._limits import RedisLimits
from ._ops import Op, aexecute, execute
from ._signals import RedisSignals
from ._url import describe, redact_url, secrets_of

if TYPE_CHECKING:
    import asyncio

# asyncio and anyio's thread pool are imported when first used, so that
# ``import klayengo`` stays as light as it is without this module.

__all__ = ["DEFAULT_COOLDOWN", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisBackend"]

_log = logging.getLogger("klayengo")

T = TypeVar("T")

#: Seconds each Redis call may take (connect, and then reply) before it fails open.
DEFAULT_TIMEOUT = 0.05
#: Seconds Redis is left alone after a failure before one caller tries it again.
DEFAULT_COOLDOWN = 1.0
#: The prefix of every key klayengo writes.
DEFAULT_PREFIX = "klayengo:"


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
        self._secrets = secrets_of(url)
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
        self._health = Health(self.cooldown)
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
                f"invalid Redis URL {self.redacted_url}: {describe(exc, self._secrets)}"
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
            signals=RedisSignals(self, clock, events),
            limits=RedisLimits(self, clock, events),
            cache=RedisCache(self, clock, events, cache_bounds, http),
        )

    def key(self, kind: str, key: str) -> str:
        """The Redis key of ``key`` in ``kind``; the ``{...}`` hash tag keeps one
        breaker's keys in one Redis Cluster slot."""
        return f"{self.prefix}{kind}:{{{key}}}"

    # the fail-open wrapper ----------------------------------------------------------
    def _call(self, op: Op[T], clock: Clock, events: Events) -> T:
        mode = self._health.should_try()
        if mode != SKIP:
            try:
                reply = execute(self._sync_client(), op, self._redis)
                result = op.parse(reply)
            except self._errors as exc:
                self._failed(op, exc, events)
            else:
                self._succeeded(mode)
                return result
        return op.local(self._local, clock)

    async def _acall(self, op: Op[T], clock: Clock, events: Events) -> T:
        mode = self._health.should_try()
        if mode != SKIP:
            try:
                if sniffio.current_async_library() == "asyncio":
                    reply = await aexecute(await self._asyncio_client(), op, self._redis)
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

    def _execute_unless_late(self, op: Op[Any], submitted: float) -> Any:
        """``_execute`` in a worker thread, unless waiting for the thread already took
        the whole timeout (many tasks, few threads): then the caller answers locally."""
        if time.monotonic() - submitted > self.timeout:
            raise TimeoutError("no worker thread free within the timeout")
        return execute(self._sync_client(), op, self._redis)

    def _failed(self, op: Op[Any], error: BaseException, events: Events) -> None:
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
                describe(error, self._secrets),
                self.cooldown,
                extra={"backend": self.redacted_url, "operation": op.name},
            )
        elif _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "klayengo: Redis backend %s still failing on %s (%s)",
                self.redacted_url,
                op.name,
                describe(error, self._secrets),
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


def _derive(secret: bytes, person: bytes, size: int) -> bytes:
    return hashlib.blake2b(secret, digest_size=size, person=person).digest()
