"""The rate-limit layer: GCRA per origin or per client, bounded wait, 429 back-pressure.

Both twins do the same three steps around the wrapped transport:

1. resolve the request's :class:`RateLimitPolicy` (``None``, or
   ``extensions={"klayengo": {"rate_limit": False}}``: pass through untouched) and its
   limiter (one per origin for ``scope="host"``, one per policy for ``scope="client"``,
   kept in a registry shared by every stack of the client);
2. reserve a slot under the limiter's lock (a few float operations) and, outside the
   lock, sleep until the slot comes (``time.sleep``-like / ``anyio.sleep``). A request
   that would wait longer than ``max_wait`` raises :class:`RateLimitExceeded` at once.
   A waiter that is cancelled (anyio cancellation, ``KeyboardInterrupt``) gives its
   slot back, and the waiters behind it move up (see :mod:`klayengo._core.ratelimit`);
3. when a 429 or 503 carries a valid ``Retry-After``, pause the limiter until then
   (at most ``max_pause``). The response itself is returned unchanged, with
   ``response.extensions["klayengo"]["wait"]`` set to the seconds this attempt waited.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Final

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx

from .._core.headers import parse_retry_after
from .._core.hosts import host_key
from .._core.options import EXTENSION_KEY, request_options
from .._core.ratelimit import (
    GCRALimiter,
    LimiterRegistry,
    Reject,
    Reservation,
)
from .._core.report import report
from .._exceptions import RateLimitExceeded
from .._policies import HostPolicy, RateLimitPolicy, check_policy
from ._context import LayerContext
from ._layer import AsyncLayer, SyncLayer

__all__ = ["AsyncRateLimitTransport", "RateLimitTransport"]

_log = logging.getLogger("klayengo")

#: The :meth:`LayerContext.shared` key of the client's limiter registry.
REGISTRY_KEY: Final = "ratelimit.registry"
#: Responses whose ``Retry-After`` pauses the host's limiter.
BACK_PRESSURE_STATUSES: Final = frozenset({429, 503})


class _Limited:
    """What the limiter decided for one admitted request (the twins' shared state)."""

    __slots__ = ("host", "key", "limiter", "policy", "reservation", "reserved_at", "waited")

    def __init__(
        self,
        limiter: GCRALimiter,
        key: Hashable,
        policy: RateLimitPolicy,
        host: str,
        reserved_at: float,
        reservation: Reservation | None,
    ) -> None:
        self.limiter = limiter
        self.key = key
        self.policy = policy
        self.host = host
        self.reserved_at = reserved_at
        self.reservation = reservation
        #: Seconds the request waited for its slot (set once it was admitted).
        self.waited = 0.0


class _RateLimitMixin:
    """The twins' shared steps; only the sleeping differs between them."""

    _context: LayerContext
    _registry: LimiterRegistry

    def _reserve(self, request: httpx.Request) -> _Limited | None:
        """Reserve a slot for ``request``; None when it is not rate limited."""
        url = request.url
        policy = self._context.resolver.resolve(url).rate_limit
        if policy is None:
            return None
        if EXTENSION_KEY in request.extensions and not request_options(request).rate_limit:
            return None
        clock = self._context.clock
        registry = self._registry
        key: Hashable
        while True:
            if policy.scope == "host":
                # httpx normalizes the scheme and host to lower case and a default
                # port to None, so this triple names the origin (hosts.origin()) at
                # half the cost.
                key = (url.scheme, url.raw_host, url.port)
                limiter = registry.host(key)
                if limiter is None:
                    limiter = registry.add_host(key, policy, host_key(url), clock.monotonic())
            else:
                key = policy
                limiter = registry.for_client(policy, self._context.name)
            with limiter.lock:
                if limiter.evicted:  # dropped by the registry after our lookup: look again
                    continue
                now = clock.monotonic()
                decision = limiter.reserve(now, policy.max_wait)
            break
        host = limiter.name if policy.scope == "host" else host_key(url)
        if isinstance(decision, Reject):
            self._context.events.rate_limited(host)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug(
                    "rate limit: %s rejected, would wait %.3f s (max_wait %s s)",
                    host,
                    decision.retry_after,
                    policy.max_wait,
                    extra={"host": host, "retry_after": decision.retry_after},
                )
            raise RateLimitExceeded(
                f"rate limit for {host} would delay the request by "
                f"{decision.retry_after:.3f} s, more than max_wait={policy.max_wait} s",
                request=request,
                host=host,
                retry_after=decision.retry_after,
            )
        if decision.reservation is None:
            self._context.events.rate_limit_wait(host, 0.0)
        elif _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s waits %.3f s",
                host,
                decision.delay,
                extra={"host": host, "wait": decision.delay},
            )
        return _Limited(limiter, key, policy, host, now, decision.reservation)

    def _remaining(
        self,
        limiter: GCRALimiter,
        reservation: Reservation,
        before: Callable[[], object] | None = None,
    ) -> float:
        """Seconds until the waiter's current slot; records that it sleeps until then."""
        with limiter.lock:
            if before is not None:
                before()
            start = limiter.arm(reservation)
        return start - self._context.clock.monotonic()

    def _cancelled(self, limited: _Limited, reservation: Reservation) -> None:
        """The waiter gave up: give the slot back and wake whoever moved up."""
        limiter = limited.limiter
        with limiter.lock:
            wake = limiter.cancel(reservation, self._context.clock.monotonic())
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s waiter cancelled", limited.host, extra={"host": limited.host}
            )
        if wake is not None:
            wake.wake()

    def _finished(self, limited: _Limited, reservation: Reservation) -> None:
        """The waiter's turn came: leave the queue, hand a moved-up slot on, report."""
        limiter = limited.limiter
        with limiter.lock:
            wake = limiter.finish(reservation)
        if wake is not None:
            wake.wake()
        limited.waited = max(0.0, self._context.clock.monotonic() - limited.reserved_at)
        self._context.events.rate_limit_wait(limited.host, limited.waited)

    def _respond(self, limited: _Limited, response: httpx.Response) -> None:
        """Record the wait on the response and apply ``Retry-After`` back-pressure."""
        report(response)["wait"] = limited.waited
        if response.status_code not in BACK_PRESSURE_STATUSES:
            return
        value = response.headers.get("Retry-After")
        if value is None:
            return
        clock = self._context.clock
        seconds = parse_retry_after(value, clock.wall())
        if seconds is None or seconds <= 0.0 or limited.policy.max_pause <= 0.0:
            return  # malformed (ignored) or nothing to wait for
        limiter = limited.limiter
        if limiter.evicted:  # dropped while the request was in flight: pause its successor
            limiter = self._registry.add_host(
                limited.key, limited.policy, limited.host, clock.monotonic()
            )
        with limiter.lock:
            until = limiter.pause(clock.monotonic(), seconds)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s paused for %.3f s after %d Retry-After",
                limited.host,
                until - clock.monotonic(),
                response.status_code,
                extra={"host": limited.host, "pause": seconds},
            )


def _registry(context: LayerContext) -> LimiterRegistry:
    return context.shared(REGISTRY_KEY, LimiterRegistry)


def _standalone(
    policy: RateLimitPolicy | None, hosts: Mapping[str, HostPolicy] | None
) -> LayerContext:
    check_policy("policy", policy, RateLimitPolicy)
    return LayerContext.standalone(rate_limit=policy, hosts=hosts)


class RateLimitTransport(_RateLimitMixin, SyncLayer):
    """Rate-limit the requests sent through ``transport`` (GCRA, see ``RateLimitPolicy``).

    Usage with a plain ``httpx.Client``::

        transport = RateLimitTransport(httpx.HTTPTransport(), RateLimitPolicy(rate=10))
        client = httpx.Client(transport=transport)

    Args:
        transport: the transport that sends the requests.
        policy: the limit for every host; ``None`` limits only the hosts that
            ``hosts=`` gives a ``rate_limit`` (there is no default rate).
        hosts: per-host overrides, ``{pattern: HostPolicy(rate_limit=...)}``.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: RateLimitPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(transport, _context or _standalone(policy, hosts))
        self._registry = _registry(self._context)
        # time.sleep cannot be woken when a cancellation moves a waiter's slot earlier;
        # an Event wait sleeps the same way and can. An injected sleeper (a fake
        # clock) is used as given.
        self._wakeable = self._context.sleep is time.sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        limited = self._reserve(request)
        if limited is None:
            return self._next.handle_request(request)
        if limited.reservation is not None:
            self._wait(limited, limited.reservation)
        response = self._next.handle_request(request)
        self._respond(limited, response)
        return response

    def _wait(self, limited: _Limited, reservation: Reservation) -> None:
        limiter = limited.limiter
        try:
            if self._wakeable:
                event = threading.Event()
                reservation.waker = event.set
                # The event is cleared as the slot is read, under the lock: a move-up
                # after that sees the old slot and sets the event, ending the wait.
                while (delay := self._remaining(limiter, reservation, event.clear)) > 0.0:
                    event.wait(delay)
            else:
                while (delay := self._remaining(limiter, reservation)) > 0.0:
                    self._context.sleep(delay)
        except BaseException:  # KeyboardInterrupt and friends: give the slot back
            self._cancelled(limited, reservation)
            raise
        self._finished(limited, reservation)


class AsyncRateLimitTransport(_RateLimitMixin, AsyncLayer):
    """Rate-limit the requests sent through ``transport``; the async twin (asyncio, trio).

    Usage with a plain ``httpx.AsyncClient``::

        transport = AsyncRateLimitTransport(httpx.AsyncHTTPTransport(), RateLimitPolicy(rate=10))
        client = httpx.AsyncClient(transport=transport)

    Args:
        transport: the transport that sends the requests.
        policy: the limit for every host; ``None`` limits only the hosts that
            ``hosts=`` gives a ``rate_limit`` (there is no default rate).
        hosts: per-host overrides, ``{pattern: HostPolicy(rate_limit=...)}``.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: RateLimitPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(transport, _context or _standalone(policy, hosts))
        self._registry = _registry(self._context)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limited = self._reserve(request)
        if limited is None:
            return await self._next.handle_async_request(request)
        if limited.reservation is not None:
            await self._wait(limited, limited.reservation)
        response = await self._next.handle_async_request(request)
        self._respond(limited, response)
        return response

    async def _wait(self, limited: _Limited, reservation: Reservation) -> None:
        sleep = self._context.async_sleep
        limiter = limited.limiter
        try:
            while (delay := self._remaining(limiter, reservation)) > 0.0:
                # A move-up cancels this scope; the loop then reads the slot again. No
                # other task runs between the read and the sleep, so none is missed.
                with anyio.CancelScope() as scope:
                    reservation.waker = _waker(scope)
                    await sleep(delay)
        except BaseException:  # cancelled: give the slot back
            self._cancelled(limited, reservation)
            raise
        self._finished(limited, reservation)


def _waker(scope: anyio.CancelScope) -> Callable[[], None]:
    # A cancel scope may only be cancelled from its event loop's thread; a wake-up
    # from another thread (a sync waiter sharing the limiter, another event loop) is
    # handed to that loop. Without anyio's event loop tokens (anyio < 4.11) it cannot
    # be, and the moved-up waiter keeps sleeping until its old slot.
    thread = threading.get_ident()
    current_token = getattr(anyio.lowlevel, "current_token", None)
    token = current_token() if current_token is not None else None

    def wake() -> None:
        if threading.get_ident() == thread:
            scope.cancel()
        elif token is not None:
            # If that event loop has finished, there is nobody left to wake.
            with contextlib.suppress(Exception):
                anyio.from_thread.run_sync(scope.cancel, token=token)

    return wake
