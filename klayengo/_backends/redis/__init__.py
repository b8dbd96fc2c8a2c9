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

Modules, by concern: ``_url`` (credentials: redaction and scrubbing), ``_health``
(when to try Redis), ``_ops`` (operations, scripts and the stores' base),
``_backend`` (:class:`RedisBackend`: clients and the fail-open call), and one per
store: ``_signals``, ``_limits``, ``_cache``.
"""

from __future__ import annotations

from ._backend import DEFAULT_COOLDOWN, DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisBackend
from ._url import redact_url

__all__ = ["DEFAULT_COOLDOWN", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisBackend", "redact_url"]
