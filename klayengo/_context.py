"""What the layers of one client share: policies, clock, sleepers, events, state.

One :class:`LayerContext` exists per client (or per standalone layer). Every stack
the client builds (its own transport, each mount, each proxy) gets the same
context, so per-host state (breakers, limiters, retry budgets, the cache) is shared
by all of them and there is exactly one clock and one metrics sink.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._core.backend import Backend, CacheBounds, MemoryBackend, Stores
from ._core.clock import SYSTEM_CLOCK, Clock
from ._core.events import NULL_EVENTS, Events
from ._core.hosts import PolicyResolver

if TYPE_CHECKING:
    from ._core.cache import HTTPTypes
from ._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    RateLimitPolicy,
    RetryPolicy,
)

__all__ = ["LayerContext"]

T = TypeVar("T")


class LayerContext:
    """Shared wiring for the layers of one client.

    Attributes:
        name: the client's name (the ``client`` metrics label).
        resolver: the client's policies and ``hosts=`` overrides.
        clock: monotonic and wall time.
        sleep: the blocking sleeper (``time.sleep``).
        async_sleep: the async sleeper (``anyio.sleep``: cancellable, trio-safe).
        events: where layers report what they did.
        backend: the shared-state backend (``None``: a :class:`MemoryBackend` of
            this context's own).
        stores: the backend's stores bound to this context (see :meth:`bind`).
        http: the HTTP library (the ``httpx`` or ``httpx2`` module) of the layers
            using this context.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        resolver: PolicyResolver | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        events: Events = NULL_EVENTS,
        backend: Backend | None = None,
        http: HTTPTypes | None = None,
    ) -> None:
        self.name = name
        self.http = http
        self.resolver = resolver if resolver is not None else PolicyResolver()
        self.clock = clock
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.events = events
        self.backend = backend
        self._shared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._stores: Stores | None = None

    @classmethod
    def standalone(
        cls,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreakerPolicy | None = None,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
        http: HTTPTypes | None = None,
    ) -> LayerContext:
        """A context for one layer used on its own with a plain httpx client."""
        return cls(
            resolver=PolicyResolver(
                retry=retry, breaker=breaker, rate_limit=rate_limit, cache=cache, hosts=hosts
            ),
            http=http,
        )

    @property
    def stores(self) -> Stores:
        """The stores the layers keep their shareable state in (bound on first use)."""
        found = self._stores
        return found if found is not None else self.bind()

    def bind(self) -> Stores:
        """Bind ``backend`` (once) to this context's clock, events and cache bounds.

        The backend reports to a sink that forwards to whatever ``events`` is when
        it reports, so metrics attached later still receive its events.
        """
        with self._lock:
            if self._stores is None:
                backend = self.backend if self.backend is not None else MemoryBackend()
                self._stores = backend.bind(
                    clock=self.clock,
                    events=_ContextEvents(self),
                    cache_bounds=cache_bounds(self.resolver),
                    http=self.http,
                )
            return self._stores

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """Get the per-client object stored under ``key``, creating it once."""
        found = self._shared.get(key)
        if found is None:
            with self._lock:
                found = self._shared.get(key)
                if found is None:
                    found = factory()
                    self._shared[key] = found
        return found

    def peek(self, key: str) -> Any:
        """The object stored under ``key``, or None if no layer created it."""
        return self._shared.get(key)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the client closes (once)."""
        with self._lock:
            self._closers.append(closer)

    def close(self) -> None:
        with self._lock:
            closers, self._closers = self._closers, []
        for closer in closers:
            closer()


def cache_bounds(resolver: PolicyResolver) -> CacheBounds:
    """What bounds a client's one cache store: its own ``CachePolicy``, else the
    largest bounds among its ``hosts=`` overrides, else the defaults."""
    if resolver.default.cache is not None:
        policy = resolver.default.cache
        return CacheBounds(max_entries=policy.max_entries, max_bytes=policy.max_bytes)
    found = [hp.cache for hp in resolver.patterns.values() if isinstance(hp.cache, CachePolicy)]
    if not found:
        return CacheBounds()
    return CacheBounds(
        max_entries=max(p.max_entries for p in found),
        max_bytes=max(p.max_bytes for p in found),
    )


class _ContextEvents(Events):
    """What a backend reports, forwarded to the context's current events sink."""

    __slots__ = ("_context",)

    def __init__(self, context: LayerContext) -> None:
        self._context = context

    def cache_size(self, entries: int, nbytes: int) -> None:
        self._context.events.cache_size(entries, nbytes)

    def cache_evicted(self, count: int) -> None:
        self._context.events.cache_evicted(count)

    def backend_error(self, operation: str) -> None:
        self._context.events.backend_error(operation)
