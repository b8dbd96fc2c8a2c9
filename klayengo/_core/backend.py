"""The state that may be shared between processes, behind three small interfaces.

Layers never hold cross-process state themselves. What *may* be shared lives behind
the interfaces below, and a *backend* hands a client one implementation of each:

- :class:`BreakerSignals`: a breaker's **open signal** and its **half-open probe
  lease**. Failure accounting stays local to each process (a sliding window per
  host in the breaker layer); only the decision "this host is open until ..." and
  the right to send a half-open probe are shared.
- :class:`RateLimits`: a GCRA limiter's *theoretical arrival time* per key, so all
  processes draw on one quota.
- :class:`CacheStore`: opaque cached entries (bytes) with a time to live.

:class:`MemoryBackend` (the default) keeps everything in this process;
``klayengo.RedisBackend`` keeps it in Redis and falls back to in-memory state
(:class:`MemoryState`) while Redis fails. A layer only ever sees the interfaces, never the backend.

Time base. Every answer is a *relative* duration in seconds (``remaining``,
``wait``, ``opened_ago``) and every argument is one too (``open_for``,
``lease_ttl``, ``ttl``, pause ``seconds``). Each implementation reads "now" from its
own clock: the memory backend from the client's :class:`~klayengo._core.clock.Clock`
(monotonic: one process), Redis from the Redis server's ``TIME`` (one clock for all
processes, so skewed host clocks agree). Callers add the durations to their own
monotonic clock and never compare absolute times across processes.

Every method has a sync form and an async form (``a``-prefixed, as in httpx's
``aclose``); the layers' sync transports call the first, their async twins the
second. The memory implementation's async forms never suspend.

Binding. A backend object is created by the user (or by the client for the default)
and may serve several clients. ``backend.bind(clock=..., events=...)`` returns the
:class:`Stores` one client uses: the clock is that client's, and ``events`` is where
the backend reports ``backend_error(operation)`` (and, for the memory cache,
``cache_evicted`` / ``cache_size``).

How a layer uses them (one client, host key ``h``; the policy fields are the
layer's own):

- Breaker, per request: ``signal = signals.get_signal(h)``. None: decide locally.
  ``"open"``: fail fast with ``retry_after=signal.remaining``. ``"half_open"``:
  ``token = signals.acquire_probe(h, half_open_max_calls, lease_ttl)``; None means
  fail fast, otherwise send the request as a probe and ``release_probe`` after it.
  When the local window trips, or a probe fails: ``publish_open(h, open_duration)``;
  when ``success_threshold`` probes succeeded: ``publish_closed(h)``. Remembering the
  last ``generation`` seen tells a new opening (a transition to report) from one
  already acted on.
- Limiter, per attempt: ``r = limits.reserve(key, per / rate, burst, max_wait)``;
  admitted: sleep ``r.wait`` (outside any lock) and go; refused: raise
  ``RateLimitExceeded(retry_after=r.wait)``. On a 429/503 with Retry-After:
  ``limits.pause(key, min(retry_after, max_pause))``. (The same arithmetic as
  ``_core.ratelimit.GCRALimiter``, without its in-process queue: no give-back of
  a cancelled reservation, and a pause does not re-plan reservations already made.)
- Cache: serialize an entry to bytes, ``cache.set(key, blob, ttl=freshness +
  stale window)`` only when it fits ``max_entry_bytes``; ``cache.get(key)`` and
  deserialize; ``cache.delete(key)`` on invalidation. Coalescing stays in-process.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .clock import Clock
from .events import Events

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_PROBE_LEASE_TTL",
    "SIGNAL_RETENTION",
    "Backend",
    "BreakerSignal",
    "BreakerSignals",
    "CacheStore",
    "MemoryBackend",
    "MemoryState",
    "RateLimits",
    "Reservation",
    "Stores",
    "bind_memory",
    "gcra_reserve",
]

#: A suggested probe lease for callers without a better bound (the request's own
#: timeout is a better one): a prober that crashed frees its slot after this long.
DEFAULT_PROBE_LEASE_TTL = 30.0
#: How long a breaker signal record outlives the end of its open period when no
#: process probes it (so an abandoned signal cannot stay half-open forever).
SIGNAL_RETENTION = 600.0
#: Bounds of the in-memory cache store (the same defaults as ``CachePolicy``).
DEFAULT_CACHE_MAX_ENTRIES = 1024
DEFAULT_CACHE_MAX_BYTES = 64 * 2**20
#: Float slack when comparing a wait with ``max_wait``, so that asking again exactly
#: ``retry_after`` later is admitted despite rounding (Redis works in whole microseconds).
_WAIT_EPSILON = 1e-9
#: The limiter table drops expired keys when it grows past this many.
_LIMITER_SWEEP_AT = 10_000


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerSignal:
    """The shared open signal of one breaker, as read now.

    Attributes:
        state: ``"open"`` while ``remaining > 0``, then ``"half_open"`` (probes may be
            leased) until someone publishes the outcome. A closed breaker has no signal.
        generation: increases with every ``publish_open`` of the key, so a reader can
            tell a new opening from one it has already acted on.
        opened_ago: seconds since the signal was (last) published open.
        remaining: seconds until the signal turns half-open (0.0 once it has).
    """

    state: Literal["open", "half_open"]
    generation: int
    opened_ago: float
    remaining: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer of a rate-limit reservation.

    Attributes:
        admitted: True when a slot was reserved; the caller must wait ``wait``
            seconds, then start (the slot is spent even if the caller gives up).
            False when the wait would exceed ``max_wait``; nothing was reserved.
        wait: the delay before the request's start (admitted), or the delay it
            would have had (refused: a ``Retry-After``).
    """

    admitted: bool
    wait: float


# -- the interfaces the layers use ----------------------------------------------------


@runtime_checkable
class BreakerSignals(Protocol):
    """The shared part of a circuit breaker (keys are host keys).

    Hot path: one ``get_signal`` per request (one round trip for Redis). The other
    calls happen on transitions only.
    """

    def get_signal(self, key: str) -> BreakerSignal | None:
        """The signal now, or None when the breaker is closed (or was never opened)."""

    def publish_open(self, key: str, open_for: float) -> BreakerSignal:
        """Open the breaker for everyone for ``open_for`` seconds from now.

        Starts a new generation and drops every probe lease of the previous one.
        """

    def publish_closed(self, key: str) -> None:
        """Close the breaker for everyone (the probes succeeded); drops the leases."""

    def acquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        """Atomically lease one of ``max_calls`` half-open probe slots.

        Returns a token to pass to :meth:`release_probe`, or None when every slot is
        leased or the signal is (again) open with time remaining. Leases expire
        after ``lease_ttl`` seconds, so a prober that crashed cannot wedge the
        breaker. When the breaker was closed meanwhile, a slot is still granted:
        that probe merely confirms the verdict.
        """

    def release_probe(self, key: str, token: str) -> None:
        """Give back a probe slot (a no-op if it expired or a new generation began)."""

    async def aget_signal(self, key: str) -> BreakerSignal | None: ...

    async def apublish_open(self, key: str, open_for: float) -> BreakerSignal: ...

    async def apublish_closed(self, key: str) -> None: ...

    async def aacquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None: ...

    async def arelease_probe(self, key: str, token: str) -> None: ...


@runtime_checkable
class RateLimits(Protocol):
    """GCRA reservations (keys name one quota: a host key or a client scope).

    ``interval`` is ``per / rate`` seconds and ``burst`` the number of requests that
    may start at once; in any window of length T at most ``burst + T / interval``
    reservations start. One atomic call (one round trip for Redis) per request;
    reservations are served in the order they were made.
    """

    def reserve(self, key: str, interval: float, burst: int, max_wait: float | None) -> Reservation:
        """Reserve the next start slot, unless it is more than ``max_wait`` away.

        ``max_wait=None`` admits whatever the wait; ``0`` admits only an immediate start.
        """

    def pause(self, key: str, seconds: float) -> None:
        """No reservation made from now on starts within ``seconds`` (a server's
        Retry-After; the caller applies its cap). Never shortens an earlier pause;
        reservations already made keep their start."""

    async def areserve(
        self, key: str, interval: float, burst: int, max_wait: float | None
    ) -> Reservation: ...

    async def apause(self, key: str, seconds: float) -> None: ...


@runtime_checkable
class CacheStore(Protocol):
    """Opaque cached entries.

    The cache layer serializes its entries, chooses the keys (Vary, credential
    digest), enforces the per-entry size limit and passes ``ttl`` = freshness +
    the longest stale window it may serve. The store may drop an entry earlier
    (bounds, eviction); a ``get`` never returns an entry older than its ``ttl``.
    """

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (``ttl <= 0`` deletes)."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (a no-op when absent)."""

    async def aget(self, key: str) -> bytes | None: ...

    async def aset(self, key: str, value: bytes, ttl: float) -> None: ...

    async def adelete(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The three stores one client uses (from ``backend.bind``)."""

    signals: BreakerSignals
    limits: RateLimits
    cache: CacheStore


@runtime_checkable
class Backend(Protocol):
    """What ``ResilientClient(backend=...)`` accepts."""

    def bind(self, *, clock: Clock, events: Events) -> Stores:
        """The stores for one client, reading its clock and reporting to its events."""

    def close(self) -> None:
        """Release connections (sync side)."""

    async def aclose(self) -> None:
        """Release connections (async side)."""


# -- pure GCRA (the Redis script computes exactly this, in integer microseconds) -------


def gcra_reserve(
    tat: float,
    paused_until: float,
    now: float,
    interval: float,
    burst: int,
    max_wait: float | None,
) -> tuple[float, Reservation]:
    """One GCRA decision: ``(new_tat, reservation)``.

    ``tat`` is the key's theoretical arrival time and ``paused_until`` the end of its
    pause (anything <= ``now`` means none). The request may start at
    ``max(max(tat, now) - (burst - 1) * interval, now, paused_until)``; reserving
    moves ``tat`` to ``max(tat, now, start) + interval``. A refusal changes nothing.
    """
    tat = max(tat, now)
    start = max(tat - (burst - 1) * interval, now, paused_until)
    wait = start - now
    if max_wait is not None and wait > max_wait + _WAIT_EPSILON:
        return tat, Reservation(admitted=False, wait=wait)
    return max(tat, start) + interval, Reservation(admitted=True, wait=wait)


# -- the in-memory implementation ------------------------------------------------------


class MemoryState:
    """All in-memory state, as methods of ``(key, ..., now)``; thread-safe.

    ``now`` is the caller's monotonic clock. :class:`MemoryBackend` binds it to a
    clock; ``RedisBackend`` uses one as its local fallback.
    """

    def __init__(
        self,
        *,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
    ) -> None:
        if cache_max_entries < 1:
            raise ValueError(f"cache_max_entries must be >= 1, got {cache_max_entries!r}")
        if cache_max_bytes < 1:
            raise ValueError(f"cache_max_bytes must be >= 1, got {cache_max_bytes!r}")
        self._lock = threading.Lock()
        self._generations = itertools.count(1)
        # key -> (generation, opened_at, until)
        self._signals: dict[str, tuple[int, float, float]] = {}
        # key -> {token: lease expiry}
        self._probes: dict[str, dict[str, float]] = {}
        self._tokens = itertools.count(1)
        # key -> (tat, paused_until)
        self._limits: dict[str, tuple[float, float]] = {}
        # key -> (value, expiry); most recently used last
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._cache_bytes = 0
        self.cache_max_entries = cache_max_entries
        self.cache_max_bytes = cache_max_bytes

    # breaker signal ---------------------------------------------------------------
    def get_signal(self, key: str, now: float) -> BreakerSignal | None:
        found = self._signals.get(key)
        return None if found is None else _signal_at(found, now)

    def publish_open(self, key: str, open_for: float, now: float) -> BreakerSignal:
        with self._lock:
            record = (next(self._generations), now, now + open_for)
            self._signals[key] = record
            self._probes.pop(key, None)
        return _signal_at(record, now)

    def publish_closed(self, key: str) -> None:
        with self._lock:
            self._signals.pop(key, None)
            self._probes.pop(key, None)

    def acquire_probe(self, key: str, max_calls: int, lease_ttl: float, now: float) -> str | None:
        with self._lock:
            signal = self._signals.get(key)
            if signal is not None and signal[2] > now:
                return None
            leases = self._probes.setdefault(key, {})
            for token in [token for token, expiry in leases.items() if expiry <= now]:
                del leases[token]
            if len(leases) >= max_calls:
                return None
            token = f"m{next(self._tokens)}"
            leases[token] = now + lease_ttl
            return token

    def release_probe(self, key: str, token: str) -> None:
        with self._lock:
            leases = self._probes.get(key)
            if leases is not None:
                leases.pop(token, None)
                if not leases:
                    del self._probes[key]

    # rate limits ------------------------------------------------------------------
    def reserve(
        self, key: str, interval: float, burst: int, max_wait: float | None, now: float
    ) -> Reservation:
        with self._lock:
            tat, paused_until = self._limits.get(key, (now, now))
            tat, reservation = gcra_reserve(tat, paused_until, now, interval, burst, max_wait)
            if reservation.admitted:
                self._limits[key] = (tat, paused_until)
                if len(self._limits) > _LIMITER_SWEEP_AT:
                    self._limits = {k: v for k, v in self._limits.items() if max(v) > now}
        return reservation

    def pause(self, key: str, seconds: float, now: float) -> None:
        with self._lock:
            tat, paused_until = self._limits.get(key, (now, now))
            self._limits[key] = (tat, max(paused_until, now + seconds))

    # cache ------------------------------------------------------------------------
    def cache_get(self, key: str, now: float) -> bytes | None:
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                return None
            if found[1] <= now:
                self._cache_drop(key)
                return None
            self._cache.move_to_end(key)
            return found[0]

    def cache_set(self, key: str, value: bytes, ttl: float, now: float) -> tuple[int, int, int]:
        """Store; returns ``(evicted, entries, nbytes)`` for the caller to report."""
        value = bytes(value)
        with self._lock:
            self._cache_drop(key)
            evicted = 0
            if ttl > 0 and len(value) <= self.cache_max_bytes:
                while self._cache and (
                    len(self._cache) >= self.cache_max_entries
                    or self._cache_bytes + len(value) > self.cache_max_bytes
                ):
                    self._cache_drop(next(iter(self._cache)))
                    evicted += 1
                self._cache[key] = (value, now + ttl)
                self._cache_bytes += len(value)
            return evicted, len(self._cache), self._cache_bytes

    def cache_delete(self, key: str) -> tuple[int, int]:
        """Forget ``key``; returns ``(entries, nbytes)``."""
        with self._lock:
            self._cache_drop(key)
            return len(self._cache), self._cache_bytes

    def _cache_drop(self, key: str) -> None:
        found = self._cache.pop(key, None)
        if found is not None:
            self._cache_bytes -= len(found[0])


def _signal_at(record: tuple[int, float, float], now: float) -> BreakerSignal:
    generation, opened_at, until = record
    remaining = max(0.0, until - now)
    return BreakerSignal(
        state="open" if remaining > 0 else "half_open",
        generation=generation,
        opened_ago=max(0.0, now - opened_at),
        remaining=remaining,
    )


class _MemorySignals:
    __slots__ = ("_clock", "_state")

    def __init__(self, state: MemoryState, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def get_signal(self, key: str) -> BreakerSignal | None:
        return self._state.get_signal(key, self._clock.monotonic())

    def publish_open(self, key: str, open_for: float) -> BreakerSignal:
        return self._state.publish_open(key, open_for, self._clock.monotonic())

    def publish_closed(self, key: str) -> None:
        self._state.publish_closed(key)

    def acquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return self._state.acquire_probe(key, max_calls, lease_ttl, self._clock.monotonic())

    def release_probe(self, key: str, token: str) -> None:
        self._state.release_probe(key, token)

    async def aget_signal(self, key: str) -> BreakerSignal | None:
        return self.get_signal(key)

    async def apublish_open(self, key: str, open_for: float) -> BreakerSignal:
        return self.publish_open(key, open_for)

    async def apublish_closed(self, key: str) -> None:
        self.publish_closed(key)

    async def aacquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return self.acquire_probe(key, max_calls, lease_ttl)

    async def arelease_probe(self, key: str, token: str) -> None:
        self.release_probe(key, token)


class _MemoryLimits:
    __slots__ = ("_clock", "_state")

    def __init__(self, state: MemoryState, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def reserve(self, key: str, interval: float, burst: int, max_wait: float | None) -> Reservation:
        return self._state.reserve(key, interval, burst, max_wait, self._clock.monotonic())

    def pause(self, key: str, seconds: float) -> None:
        self._state.pause(key, seconds, self._clock.monotonic())

    async def areserve(
        self, key: str, interval: float, burst: int, max_wait: float | None
    ) -> Reservation:
        return self.reserve(key, interval, burst, max_wait)

    async def apause(self, key: str, seconds: float) -> None:
        self.pause(key, seconds)


class _MemoryCache:
    __slots__ = ("_clock", "_events", "_state")

    def __init__(self, state: MemoryState, clock: Clock, events: Events) -> None:
        self._state = state
        self._clock = clock
        self._events = events

    def get(self, key: str) -> bytes | None:
        return self._state.cache_get(key, self._clock.monotonic())

    def set(self, key: str, value: bytes, ttl: float) -> None:
        evicted, entries, nbytes = self._state.cache_set(key, value, ttl, self._clock.monotonic())
        if evicted:
            self._events.cache_evicted(evicted)
        self._events.cache_size(entries, nbytes)

    def delete(self, key: str) -> None:
        self._events.cache_size(*self._state.cache_delete(key))

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aset(self, key: str, value: bytes, ttl: float) -> None:
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)


def bind_memory(state: MemoryState, clock: Clock, events: Events) -> Stores:
    """The :class:`Stores` over ``state``, reading ``clock``."""
    return Stores(
        signals=_MemorySignals(state, clock),
        limits=_MemoryLimits(state, clock),
        cache=_MemoryCache(state, clock, events),
    )


class MemoryBackend:
    """The default backend: state in this process only.

    One instance may be bound by several clients of one process (they then share
    breaker signals, limits and cache entries); they must use the same clock.

    Args:
        cache_max_entries: bound of the cache store (least recently used go first).
        cache_max_bytes: bound of the cache store's total value bytes.
    """

    def __init__(
        self,
        *,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
    ) -> None:
        self.state = MemoryState(
            cache_max_entries=cache_max_entries, cache_max_bytes=cache_max_bytes
        )

    def bind(self, *, clock: Clock, events: Events) -> Stores:
        return bind_memory(self.state, clock, events)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "MemoryBackend()"
