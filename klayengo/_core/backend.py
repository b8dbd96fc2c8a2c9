"""The state that may be shared between processes, behind three small interfaces.

Layers never hold cross-process state themselves. What *may* be shared lives behind
the interfaces below, and a *backend* hands a client one implementation of each:

- :class:`BreakerSignals`: a breaker's **open signal** and its **half-open probe
  lease**. Failure accounting stays local to each process (a sliding window per
  origin in the breaker layer); only the decision "this origin is open until ..."
  and the right to send a half-open probe are shared.
- :class:`RateLimits`: GCRA reservations per key, so all processes draw on one quota.
- :class:`CacheStore`: the cache's records (stored responses and Vary indexes),
  each kept until its own ``keep_until``.

:class:`MemoryBackend` (the default) keeps everything in this process;
``klayengo.RedisBackend`` keeps it in Redis and falls back to in-memory state
(:class:`MemoryState`, and a bounded cache store per client) while Redis fails. A
layer only ever sees the interfaces, never the backend.

In one process the local breaker *is* the shared state, so the memory
:class:`BreakerSignals` has nothing to add: it reports no signal and grants every
probe lease (the local breaker already bounds its probes). The memory
:class:`RateLimits` is the limiter core itself
(:class:`~klayengo._core.ratelimit.GCRALimiter` in a
:class:`~klayengo._core.ratelimit.LimiterRegistry`): FIFO waiters, a cancelled
waiter gives its slot back and the ones behind it move up, a pause re-plans the
waiters not yet due. Redis answers each reservation with a fixed start instead.

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
and may serve several clients. ``backend.bind(clock=..., events=..., cache_bounds=...)``
returns the :class:`Stores` one client uses: the clock is that client's, ``events``
is where the backend reports ``backend_error(operation)`` (and, for the memory
cache, ``cache_evicted`` / ``cache_size``), and ``cache_bounds`` (the client's
``CachePolicy.max_entries`` / ``max_bytes``) bounds the cache records kept in this
process: the memory store, or Redis's local fallback.

How the layers use them (one client; the policy fields are the layer's own):

- Breaker (key: the origin, ``scheme://host[:port]``). A local permit first (an
  open local breaker fails fast with no round trip); then, per admitted request,
  ``signal = signals.get_signal(key)``. None: decide locally. A signal of a
  generation this process has not acted on yet (another process opened the
  origin): the local breaker adopts it (open for ``signal.remaining``, or
  half-open) and decides again. Half-open: ``token = signals.acquire_probe(key,
  half_open_max_calls, lease_ttl)``; None means fail fast, otherwise send the
  request as a probe and ``release_probe`` after it. When the local window trips,
  or a probe fails: ``publish_open(key, open_duration)``; when
  ``success_threshold`` probes succeeded: ``publish_closed(key)``.
- Limiter, per attempt: ``r = limits.reserve(key, per / rate, burst, max_wait,
  max_keys)``; refused: raise ``RateLimitExceeded(retry_after=r.wait)``; admitted
  with ``r.ticket`` None: go after ``r.wait`` (0 on the hot path); with a ticket:
  sleep (outside any lock) until ``ticket.remaining()`` is not positive, then
  ``ticket.finish()``; on cancellation ``ticket.cancel()``. On a 429/503 with
  Retry-After: ``limits.pause(key, min(retry_after, max_pause))``.
- Cache: ``cache.get(key)`` (the primary key, then a Vary/credential secondary
  key digested with ``cache.key_salt``); ``cache.set(key, record)`` only for a body
  within ``max_entry_bytes``, kept until ``record.keep_until`` (freshness plus the
  longest stale window; longer for a revalidatable entry); ``cache.delete(key)`` on
  invalidation. The memory store keeps the record objects; Redis serializes them
  (:func:`~klayengo._core.cachestore.encode_record`). Coalescing stays in-process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

from .cache import HTTPTypes
from .cachestore import MemoryStore, Record
from .clock import Clock
from .events import Events
from .ratelimit import ADMIT_NOW, GCRALimiter, LimiterRegistry, Reject
from .ratelimit import Reservation as _Waiter

__all__ = [
    "ADMITTED",
    "DEFAULT_CACHE_BOUNDS",
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_LIMIT_MAX_KEYS",
    "DEFAULT_PROBE_LEASE_TTL",
    "SIGNAL_RETENTION",
    "Backend",
    "BreakerSignal",
    "BreakerSignals",
    "CacheBounds",
    "CacheStore",
    "MemoryBackend",
    "MemoryState",
    "RateLimits",
    "Reservation",
    "Stores",
    "Ticket",
    "bind_memory",
    "memory_cache",
]

#: A probe lease for callers without a better bound (the request's own timeouts are
#: a better one): a prober that crashed frees its slot after this long.
DEFAULT_PROBE_LEASE_TTL = 30.0
#: How long a breaker signal record outlives the end of its open period when no
#: process probes it (so an abandoned signal cannot stay half-open forever).
SIGNAL_RETENTION = 600.0
#: Bounds of the in-process cache records (the same defaults as ``CachePolicy``).
DEFAULT_CACHE_MAX_ENTRIES = 1024
DEFAULT_CACHE_MAX_BYTES = 64 * 2**20
#: Limiters the memory store keeps when the caller states no bound.
DEFAULT_LIMIT_MAX_KEYS = 1000
#: The token the memory store grants for every probe lease.
_LOCAL_TOKEN: Final = "local"

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


class Ticket(Protocol):
    """A waiter's place in a limiter's queue (admitted with a wait).

    The memory store's slots can move: earlier when a waiter ahead gives up, later
    when a pause re-plans the queue; it then calls the waker so the waiter reads
    :meth:`remaining` again. Redis's start is fixed when reserved.
    """

    def set_waker(self, waker: Callable[[], object] | None) -> None:
        """Called (from any thread) when the slot moved; None clears it."""

    def remaining(self, before: Callable[[], object] | None = None) -> float:
        """Seconds until the slot (<= 0: start now); the waiter sleeps until then.

        ``before`` runs atomically with the read (to reset a wake-up flag).
        """

    def finish(self) -> None:
        """The waiter starts now (lets a waiter that moved up learn it)."""

    def cancel(self) -> None:
        """The waiter gave up: give the slot back when nothing depends on it."""

    async def acancel(self) -> None:
        """:meth:`cancel` from async code."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer of a rate-limit reservation.

    Attributes:
        admitted: True when a slot was reserved (spent even if the caller gives
            up, unless it cancels its ticket). False when the wait would exceed
            ``max_wait``; nothing was reserved.
        wait: the delay before the request's start as reserved (admitted), or the
            delay it would have had (refused: a ``Retry-After``).
        ticket: set when admitted with a wait: the waiter's place (see
            :class:`Ticket`); None when the request may start after ``wait``
            with nothing more to do.
    """

    admitted: bool
    wait: float
    ticket: Ticket | None = None


#: The answer for a request that may start at once (shared: it carries no state).
ADMITTED: Final = Reservation(admitted=True, wait=0.0)


# -- the interfaces the layers use ----------------------------------------------------


@runtime_checkable
class BreakerSignals(Protocol):
    """The shared part of a circuit breaker (keys name origins: ``scheme://host[:port]``).

    Hot path: one ``get_signal`` per request (one round trip for Redis). The other
    calls happen on transitions and half-open probes only. A store that shares
    nothing (the memory one) never reports a signal, answers ``publish_open`` with
    generation 0 (nothing to remember) and grants every probe lease.
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
    """GCRA reservations (keys name one quota: an origin or a client-wide scope).

    ``interval`` is ``per / rate`` seconds and ``burst`` the number of requests that
    may start at once; in any window of length T at most ``burst + T / interval``
    reservations start. One atomic call (one round trip for Redis) per request;
    reservations are served in the order they were made. ``max_keys`` bounds the
    keys an in-process store keeps (a store that expires keys by itself ignores it).
    """

    def reserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        """Reserve the next start slot, unless it is more than ``max_wait`` away.

        ``max_wait=None`` admits whatever the wait; ``0`` admits only an immediate start.
        """

    def pause(self, key: str, seconds: float) -> None:
        """No request starts within ``seconds`` from now (a server's Retry-After;
        the caller applies its cap). Never shortens an earlier pause. Redis keeps
        the starts of reservations already made; the memory store re-plans its
        waiters not yet due (see :meth:`GCRALimiter.pause`)."""

    async def areserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation: ...

    async def apause(self, key: str, seconds: float) -> None: ...


@runtime_checkable
class CacheStore(Protocol):
    """The cache's records: stored responses and Vary indexes, under opaque keys.

    The cache layer chooses the keys (method and URL; for Vary and credentials, a
    digest keyed with :attr:`key_salt`), enforces the per-entry size limit before
    any ``set``, and states in each record how long it may be kept
    (``record.keep_until``, monotonic). A store may drop a record earlier (bounds,
    eviction, a flushed server) and never returns one past its ``keep_until``.

    Implementations: the memory store keeps the record objects, bounded by the
    client's ``max_entries``/``max_bytes``; Redis serializes them with a time to live
    of ``keep_until - now`` (bounded by those TTLs and the server's ``maxmemory``
    policy) and keeps a bounded local store for when Redis is unavailable.
    """

    @property
    def key_salt(self) -> bytes:
        """The salt of the key digests: random per client in memory; the same in
        every process sharing a Redis. Read after a ``get``: a store may learn it
        from its first one (an unlearned salt only costs misses, never a wrong hit)."""

    def get(self, key: str) -> Record | None:
        """The record under ``key``, or None."""

    def set(self, key: str, record: Record) -> None:
        """Store ``record`` until its ``keep_until`` (dropped when already past)."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (a no-op when absent)."""

    def close(self) -> None:
        """The client closed: free what this store holds in this process (records
        shared with other processes stay)."""

    async def aget(self, key: str) -> Record | None: ...

    async def aset(self, key: str, record: Record) -> None: ...

    async def adelete(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheBounds:
    """How many cache records, and accounted bytes, one client keeps in this process."""

    max_entries: int = DEFAULT_CACHE_MAX_ENTRIES
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {self.max_entries!r}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes!r}")


DEFAULT_CACHE_BOUNDS: Final = CacheBounds()


@dataclass(frozen=True, slots=True)
class Stores:
    """The three stores one client uses (from ``backend.bind``)."""

    signals: BreakerSignals
    limits: RateLimits
    cache: CacheStore


@runtime_checkable
class Backend(Protocol):
    """What ``ResilientClient(backend=...)`` accepts."""

    def bind(
        self,
        *,
        clock: Clock,
        events: Events,
        cache_bounds: CacheBounds = DEFAULT_CACHE_BOUNDS,
        http: HTTPTypes | None = None,
    ) -> Stores:
        """The stores for one client, reading its clock and reporting to its events;
        ``cache_bounds`` bounds the cache records it keeps in this process; ``http``
        is the client's HTTP library (the ``httpx`` or ``httpx2`` module), whose types
        a store that deserializes cache records builds them with."""

    def close(self) -> None:
        """Release connections (sync side)."""

    async def aclose(self) -> None:
        """Release connections (async side)."""


# -- the in-memory implementation ------------------------------------------------------


class MemoryState:
    """The in-memory limiters, thread-safe; methods take the caller's clock.

    :class:`MemoryBackend` binds it to a client's clock; ``RedisBackend`` uses one
    as its local fallback. (Cache records live in a
    :class:`~klayengo._core.cachestore.MemoryStore` per client.)
    """

    def __init__(self) -> None:
        self.limiters = LimiterRegistry()

    # rate limits ------------------------------------------------------------------
    def _limiter(
        self, key: str, interval: float, burst: int, max_keys: int, now: float
    ) -> GCRALimiter:
        limiter = self.limiters.host(key)
        if limiter is None:
            limiter = self.limiters.add(key, interval, burst, max_keys, now, name=key)
        return limiter

    def reserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        clock: Clock,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        monotonic, lookup = clock.monotonic, self.limiters.host
        while True:
            limiter = lookup(key)
            if limiter is None:  # the clock is read for a creation only: the hot path reads it once
                limiter = self.limiters.add(key, interval, burst, max_keys, monotonic(), name=key)
            # acquire/release, not `with`: half the cost on the path every request takes.
            lock = limiter.lock
            lock.acquire()
            try:
                if limiter.evicted:  # dropped after the lookup: look again
                    continue
                if limiter.interval != interval or limiter.burst != burst:
                    limiter.configure(interval, burst)  # created by a pause, or a new policy
                decision = limiter.reserve(monotonic(), max_wait)
            finally:
                lock.release()
            break
        if decision is ADMIT_NOW:
            return ADMITTED
        if isinstance(decision, Reject):
            return Reservation(admitted=False, wait=decision.retry_after)
        if decision.reservation is None:
            return Reservation(admitted=True, wait=decision.delay)
        return Reservation(
            admitted=True,
            wait=decision.delay,
            ticket=_MemoryTicket(limiter, decision.reservation, clock),
        )

    def pause(self, key: str, seconds: float, now: float) -> None:
        while True:
            # A limiter dropped since the reservation: pause its successor (created
            # with placeholder parameters; the next reservation sets them).
            limiter = self._limiter(key, 0.0, 1, DEFAULT_LIMIT_MAX_KEYS, now)
            with limiter.lock:
                if limiter.evicted:
                    continue
                limiter.pause(now, seconds)
                return


class _MemoryTicket:
    """A waiter in a :class:`GCRALimiter`'s queue."""

    __slots__ = ("_clock", "_limiter", "_waiter")

    def __init__(self, limiter: GCRALimiter, waiter: _Waiter, clock: Clock) -> None:
        self._limiter = limiter
        self._waiter = waiter
        self._clock = clock

    def set_waker(self, waker: Callable[[], object] | None) -> None:
        self._waiter.waker = waker

    def remaining(self, before: Callable[[], object] | None = None) -> float:
        with self._limiter.lock:
            if before is not None:
                before()
            start = self._limiter.arm(self._waiter)
        return start - self._clock.monotonic()

    def finish(self) -> None:
        with self._limiter.lock:
            wake = self._limiter.finish(self._waiter)
        if wake is not None:
            wake.wake()

    def cancel(self) -> None:
        with self._limiter.lock:
            wake = self._limiter.cancel(self._waiter, self._clock.monotonic())
        if wake is not None:
            wake.wake()

    async def acancel(self) -> None:
        self.cancel()


class _LocalSignals:
    """Breaker signals of one process: the local breaker is the whole state."""

    __slots__ = ()

    #: The async methods never wait for anything: an async layer may call the sync
    #: ones directly and save a coroutine per request.
    local: Final = True

    def get_signal(self, key: str) -> BreakerSignal | None:
        return None

    def publish_open(self, key: str, open_for: float) -> BreakerSignal:
        return BreakerSignal(state="open", generation=0, opened_ago=0.0, remaining=open_for)

    def publish_closed(self, key: str) -> None:
        return None

    def acquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return _LOCAL_TOKEN

    def release_probe(self, key: str, token: str) -> None:
        return None

    async def aget_signal(self, key: str) -> BreakerSignal | None:
        return None

    async def apublish_open(self, key: str, open_for: float) -> BreakerSignal:
        return self.publish_open(key, open_for)

    async def apublish_closed(self, key: str) -> None:
        return None

    async def aacquire_probe(self, key: str, max_calls: int, lease_ttl: float) -> str | None:
        return _LOCAL_TOKEN

    async def arelease_probe(self, key: str, token: str) -> None:
        return None


#: Stateless: one instance serves every client (and the Redis fallback).
LOCAL_SIGNALS: Final = _LocalSignals()


class _MemoryLimits:
    __slots__ = ("_clock", "_state")

    #: The async methods never wait for anything: an async layer may call the sync
    #: ones directly and save a coroutine per request.
    local: Final = True

    def __init__(self, state: MemoryState, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def reserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        return self._state.reserve(key, interval, burst, max_wait, self._clock, max_keys)

    def pause(self, key: str, seconds: float) -> None:
        self._state.pause(key, seconds, self._clock.monotonic())

    async def areserve(
        self,
        key: str,
        interval: float,
        burst: int,
        max_wait: float | None,
        max_keys: int = DEFAULT_LIMIT_MAX_KEYS,
    ) -> Reservation:
        return self._state.reserve(key, interval, burst, max_wait, self._clock, max_keys)

    async def apause(self, key: str, seconds: float) -> None:
        self.pause(key, seconds)


def memory_cache(clock: Clock, events: Events, bounds: CacheBounds) -> MemoryStore:
    """One client's in-memory cache store, reporting its size to ``events``."""
    return MemoryStore(
        max_entries=bounds.max_entries,
        max_bytes=bounds.max_bytes,
        timer=clock.monotonic,
        events=events,
    )


def bind_memory(
    state: MemoryState, clock: Clock, events: Events, cache_bounds: CacheBounds
) -> Stores:
    """The :class:`Stores` over ``state``, reading ``clock``, with a cache of its own."""
    return Stores(
        signals=LOCAL_SIGNALS,
        limits=_MemoryLimits(state, clock),
        cache=memory_cache(clock, events, cache_bounds),
    )


class MemoryBackend:
    """The default backend: state in this process only.

    One instance may be bound by several clients of one process: they then share
    rate-limit quotas (same key) and must use the same clock. Breakers stay each
    client's own (in one process there is no signal to share), and so does each
    client's cache (bounded by its own policy, keyed with its own random salt).
    """

    def __init__(self) -> None:
        self.state = MemoryState()

    def bind(
        self,
        *,
        clock: Clock,
        events: Events,
        cache_bounds: CacheBounds = DEFAULT_CACHE_BOUNDS,
        http: HTTPTypes | None = None,
    ) -> Stores:
        return bind_memory(self.state, clock, events, cache_bounds)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "MemoryBackend()"
