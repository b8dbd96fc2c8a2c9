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
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

import anyio
import anyio.from_thread
import anyio.lowlevel

from ..._context import LayerContext
from ..._core.backend import ADMITTED, Reservation, Ticket
from ..._core.events import NULL_EVENTS
from ..._core.headers import parse_retry_after
from ..._core.hosts import Origin, ResolvedPolicies, host_key
from ..._core.hosts import origin as url_origin
from ..._core.options import EXTENSION_KEY, request_options
from ..._core.report import report
from ..._policies import HostPolicy, RateLimitPolicy, check_policy
from .. import httpx
from .._exceptions import RateLimitExceeded
from ._layer import SyncLayer
from ._pipeline import BACK_PRESSURE_STATUSES, AsyncPipeline

__all__ = ["AsyncRateLimitTransport", "RateLimitTransport", "limit_key"]

_log = logging.getLogger("klayengo")

#: The :meth:`LayerContext.shared` key of the client's memo of limiter keys.
_KEYS: Final = "ratelimit.keys"
#: Origins remembered in that memo; it is cleared when full (churn costs time, not memory).
_KEYS_MEMO_SIZE: Final = 4096


#: ``(policy, store key, host key, emission interval)`` of a limited origin.
_Quota = tuple[RateLimitPolicy, str, str, float]


class _Memo:
    """Origin -> its :data:`_Quota`, or None for an origin that is not
    limited. The client's resolver gives one origin one policy for the client's
    life, so a hit needs neither the resolver nor the key builders."""

    __slots__ = ("origins",)

    def __init__(self) -> None:
        self.origins: dict[Origin, _Quota | None] = {}


def limit_key(client: str, quota: str) -> str:
    """The store key of a quota: the client's name and the origin (``scope="host"``)
    or the policy (``scope="client"``), so processes running clients of the same
    name draw on one quota per origin, as the limiters of one client do."""
    return f"{client}|{quota}"


def _policy_quota(policy: RateLimitPolicy) -> str:
    # The same policy values give the same key in every process.
    fields = f"{policy.rate!r}/{policy.per!r}/{policy.burst!r}"
    return "client:" + hashlib.blake2b(fields.encode(), digest_size=8).hexdigest()


class _Limited:
    """An admitted request that must wait for its slot (the twins' shared state)."""

    __slots__ = ("host", "policy", "reserved_at", "ticket", "wait", "waited")

    def __init__(self, policy: RateLimitPolicy, host: str, reserved_at: float) -> None:
        self.policy = policy
        self.host = host
        self.reserved_at = reserved_at
        self.ticket: Ticket | None = None
        #: The wait to sleep without a ticket (a fixed start).
        self.wait = 0.0
        #: Seconds the request waited for its slot (set once it was admitted).
        self.waited = 0.0


class _RateLimitMixin:
    """The twins' shared steps; only the store calls and the sleeping differ."""

    _context: LayerContext
    _memo: _Memo
    _resolve: Callable[[httpx.URL], ResolvedPolicies]

    def _quota(self, request: httpx.Request) -> _Quota | None:
        """The :data:`_Quota` of ``request``; None when it is not limited."""
        if EXTENSION_KEY in request.extensions and not request_options(request).rate_limit:
            return None
        url = request.url
        origin = url_origin(url)
        try:
            return self._memo.origins[origin]
        except KeyError:
            return self._remember(url, origin)

    def _remember(self, url: httpx.URL, origin: Origin) -> _Quota | None:
        # An origin not in the memo: resolve its policy and build its keys once.
        policy = self._resolve(url).rate_limit
        found: _Quota | None = None
        if policy is not None:
            name = host_key(url)
            quota = f"{url.scheme}://{name}" if policy.scope == "host" else _policy_quota(policy)
            key = limit_key(self._context.name, quota)
            found = (policy, key, name, policy.per / policy.rate)
        origins = self._memo.origins
        if len(origins) >= _KEYS_MEMO_SIZE:
            origins.clear()
        origins[origin] = found
        return found

    def _no_wait(self, host: str) -> None:
        """Report a request admitted at once (a zero wait) to a listening sink."""
        events = self._context.events
        if events is not NULL_EVENTS:
            events.rate_limit_wait(host, 0.0)

    def _admit(
        self,
        request: httpx.Request,
        quota: _Quota,
        reservation: Reservation,
    ) -> _Limited | None:
        """Act on a reservation other than ``ADMITTED``: raise when refused; else the
        wait to sleep, or None when there is none."""
        policy, _, host, _ = quota
        if not reservation.admitted:
            self._context.events.rate_limited(host)
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug(
                    "rate limit: %s rejected, would wait %.3f s (max_wait %s s)",
                    host,
                    reservation.wait,
                    policy.max_wait,
                    extra={"host": host, "retry_after": reservation.wait},
                )
            raise RateLimitExceeded(
                f"rate limit for {host} would delay the request by "
                f"{reservation.wait:.3f} s, more than max_wait={policy.max_wait} s",
                request=request,
                host=host,
                retry_after=reservation.wait,
            )
        if reservation.ticket is None and reservation.wait <= 0.0:
            self._no_wait(host)  # no wait: no clock read
            return None
        limited = _Limited(policy, host, self._context.clock.monotonic())
        limited.ticket = reservation.ticket
        limited.wait = reservation.wait
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s waits %.3f s",
                host,
                reservation.wait,
                extra={"host": host, "wait": reservation.wait},
            )
        return limited

    def _cancelled(self, limited: _Limited) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s waiter cancelled", limited.host, extra={"host": limited.host}
            )

    def _finished(self, limited: _Limited) -> None:
        """The waiter's turn came: leave the queue, report."""
        if limited.ticket is not None:
            limited.ticket.finish()
        limited.waited = max(0.0, self._context.clock.monotonic() - limited.reserved_at)
        self._context.events.rate_limit_wait(limited.host, limited.waited)

    def _pause_for(
        self, policy: RateLimitPolicy, host: str, response: httpx.Response
    ) -> float | None:
        """The pause a 429/503 ``response``'s ``Retry-After`` asks for, if any."""
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        seconds = parse_retry_after(value, self._context.clock.wall())
        if seconds is None or seconds <= 0.0 or policy.max_pause <= 0.0:
            return None  # malformed (ignored) or nothing to wait for
        seconds = min(seconds, policy.max_pause)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "rate limit: %s paused for %.3f s after %d Retry-After",
                host,
                seconds,
                response.status_code,
                extra={"host": host, "pause": seconds},
            )
        return seconds


def _memo(context: LayerContext) -> _Memo:
    return context.shared(_KEYS, _Memo)


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
        self._memo = _memo(self._context)
        self._resolve = self._context.resolver.resolve
        self._limits = self._context.stores.limits
        # time.sleep cannot be woken when a cancellation moves a waiter's slot earlier;
        # an Event wait sleeps the same way and can. An injected sleeper (a fake
        # clock) is used as given.
        self._wakeable = self._context.sleep is time.sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        quota = self._quota(request)
        if quota is None:
            return self._next.handle_request(request)
        policy, key, host, interval = quota
        reservation = self._limits.reserve(
            key, interval, policy.burst, policy.max_wait, policy.max_hosts
        )
        waited = 0.0
        if reservation is ADMITTED:  # the hot path: admitted at once
            self._no_wait(host)
        else:
            limited = self._admit(request, quota, reservation)
            if limited is not None:
                self._wait(limited)
                waited = limited.waited
        response = self._next.handle_request(request)
        report(response)["wait"] = waited
        if response.status_code in BACK_PRESSURE_STATUSES:
            pause = self._pause_for(policy, host, response)
            if pause is not None:
                self._limits.pause(key, pause)
        return response

    def _wait(self, limited: _Limited) -> None:
        ticket = limited.ticket
        try:
            if ticket is None:
                self._context.sleep(limited.wait)
            elif self._wakeable:
                event = threading.Event()
                ticket.set_waker(event.set)
                # The event is cleared as the slot is read, under the lock: a move-up
                # after that sees the old slot and sets the event, ending the wait.
                while (delay := ticket.remaining(event.clear)) > 0.0:
                    event.wait(delay)
            else:
                while (delay := ticket.remaining()) > 0.0:
                    self._context.sleep(delay)
        except BaseException:  # KeyboardInterrupt and friends: give the slot back
            if ticket is not None:
                ticket.cancel()
            self._cancelled(limited)
            raise
        self._finished(limited)


class AsyncRateLimitTransport(_RateLimitMixin, AsyncPipeline):
    """Rate-limit the requests sent through ``transport``; the async twin (asyncio, trio).

    In a client's stack, :class:`~klayengo._transports._pipeline.AsyncPipeline` runs this
    layer's steps in the stack's one coroutine.

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
        self._memo = _memo(self._context)
        self._resolve = self._context.resolver.resolve
        self._limits = self._context.stores.limits
        # An in-process store decides without waiting for anything: call it directly
        # rather than through a coroutine (a third of this layer's own cost).
        self._local = bool(getattr(self._limits, "local", False))
        self._limiter = self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # On its own the layer takes this short path: the pipeline's general one, run
        # with only this part, costs ~90 ns more per request (870-890 against 970-1,000
        # ns, the coroutine driven by hand over an inner that returns at once). In a
        # client's stack the pipeline runs these same steps, in the same order.
        quota = self._quota(request)
        if quota is None:
            return await self._next.handle_async_request(request)
        policy, key, host, interval = quota
        if self._local:
            reservation = self._limits.reserve(
                key, interval, policy.burst, policy.max_wait, policy.max_hosts
            )
        else:
            reservation = await self._limits.areserve(
                key, interval, policy.burst, policy.max_wait, policy.max_hosts
            )
        waited = 0.0
        if reservation is ADMITTED:  # the hot path: admitted at once
            self._no_wait(host)
        else:
            limited = self._admit(request, quota, reservation)
            if limited is not None:
                await self._wait(limited)
                waited = limited.waited
        response = await self._next.handle_async_request(request)
        report(response)["wait"] = waited
        if response.status_code in BACK_PRESSURE_STATUSES:
            pause = self._pause_for(policy, host, response)
            if pause is not None:
                await self._limits.apause(key, pause)
        return response

    async def _wait(self, limited: _Limited) -> None:
        sleep = self._context.async_sleep
        ticket = limited.ticket
        try:
            if ticket is None:
                await sleep(limited.wait)
            else:
                while (delay := ticket.remaining()) > 0.0:
                    # A move-up cancels this scope; the loop then reads the slot again.
                    # No other task runs between the read and the sleep, so none is
                    # missed.
                    with anyio.CancelScope() as scope:
                        ticket.set_waker(_waker(scope))
                        await sleep(delay)
        except BaseException:  # cancelled: give the slot back (a bounded store call)
            if ticket is not None:
                with anyio.CancelScope(shield=True):
                    await ticket.acancel()
            self._cancelled(limited)
            raise
        self._finished(limited)


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
