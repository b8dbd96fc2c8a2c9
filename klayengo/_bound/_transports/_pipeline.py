"""The async request path of every layer below the cache, in one coroutine.

A coroutine is a heap object the garbage collector tracks. With one coroutine per
layer, each async request in flight would hold one more object per layer for as long
as it waits on the network; with 10,000 requests in flight that is tens of thousands
of objects, enough to make CPython run extra full collections (each one scans the
whole heap). So the async twins of the retry, circuit-breaker and rate-limit layers,
and the stack's top (metrics), share this one driver: a standalone layer runs it with
its own part only, a client's stack runs it once with every part it enables. The
order of the parts is the stack's (see :mod:`klayengo._transports.stack`):

    top (options, metrics) ── retry ── circuit breaker ── rate limit ── next transport

The sync twins keep one frame per layer: a sync frame is not a collected object.

Each part's decisions live in its own module (:class:`~.retry._Retrier`,
:class:`~.breaker._Gate`, :class:`~.ratelimit._RateLimitMixin`) and are called from
here; what is left here is the control flow: which step follows which, what is
released when an attempt fails or is cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ..._core.backend import ADMITTED
from ..._core.options import EXTENSION_KEY, request_options
from ..._core.report import report
from .. import httpx
from ._layer import AsyncLayer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..._context import LayerContext
    from ..._metrics import ClientMetrics
    from .breaker import _Gate
    from .ratelimit import AsyncRateLimitTransport
    from .retry import AsyncRetryTransport

    #: The parts a pipeline runs: retry, circuit breaker, rate limit (None: skipped).
    AsyncParts = tuple[AsyncRetryTransport | None, _Gate | None, AsyncRateLimitTransport | None]

__all__ = ["NO_PARTS", "AsyncPipeline"]

#: Responses whose ``Retry-After`` pauses the origin's limiter.
BACK_PRESSURE_STATUSES = frozenset({429, 503})
NO_PARTS: AsyncParts = (None, None, None)


class AsyncPipeline(AsyncLayer):
    """An async transport running the parts it holds around ``self._next``.

    A part left ``None`` is skipped. A standalone layer sets its own part after calling
    ``__init__``. The parts are instance attributes: CPython 3.11 reads them faster than
    class attributes reached through an instance.
    """

    _now: Callable[[], float]

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        context: LayerContext,
        parts: AsyncParts = NO_PARTS,
    ) -> None:
        super().__init__(transport, context)
        #: The stack's top: validates per-request options first, reports last.
        self._top = False
        self._metrics: ClientMetrics | None = None
        self._retrier, self._gate, self._limiter = parts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Every value an attempt carries lives in this frame's locals: a tuple or an
        # object per request would be one more object held while it is in flight.
        if self._top and EXTENSION_KEY in request.extensions:
            request_options(request)  # raises TypeError on unknown keys or bad values
        metrics = self._metrics
        if metrics is not None:
            series = metrics.request_started(request)
            now = self._now
            start = now()
        try:
            # -- retry: what the call needs to decide on a retry (None: not retried)
            retrier = self._retrier
            begun = None if retrier is None else retrier._begin(request)
            policy = None
            if begun is not None:
                policy, options, host, started, body = begun
                del begun
            call = None  # built when an attempt fails
            waited = 0.0
            gate = self._gate
            limiter = self._limiter
            while True:
                try:
                    # -- circuit breaker: a permit for this attempt, or CircuitOpenError
                    breaker = None
                    token: str | None = None  # the shared probe lease of a half-open call
                    if gate is not None:
                        admitted = gate.admit(request)
                        if admitted is not None:
                            breaker, permit, began = admitted
                            del admitted
                            if not gate.local:
                                permit, token = await gate.ashared(breaker, permit, request)
                    try:
                        # -- rate limit: a slot, waited for, or RateLimitExceeded
                        quota = None if limiter is None else limiter._quota(request)
                        if quota is not None:
                            assert limiter is not None
                            limit, key, limited_host, interval = quota
                            slot_wait = 0.0
                            if limiter._local:
                                reservation = limiter._limits.reserve(
                                    key, interval, limit.burst, limit.max_wait, limit.max_hosts
                                )
                            else:
                                reservation = await limiter._limits.areserve(
                                    key, interval, limit.burst, limit.max_wait, limit.max_hosts
                                )
                            if reservation is ADMITTED:  # the hot path: admitted at once
                                limiter._no_wait(limited_host)
                            else:
                                limited = limiter._admit(request, quota, reservation)
                                if limited is not None:
                                    await limiter._wait(limited)
                                    slot_wait = limited.waited
                                    del limited
                        response = await self._next.handle_async_request(request)
                        if quota is not None:
                            assert limiter is not None
                            report(response)["wait"] = slot_wait
                            if response.status_code in BACK_PRESSURE_STATUSES:
                                pause = limiter._pause_for(limit, limited_host, response)
                                if pause is not None:
                                    await limiter._limits.apause(key, pause)
                    except Exception as exc:
                        if breaker is not None:
                            assert gate is not None
                            await gate.asettle(
                                breaker, token, gate.failed(breaker, permit, began, exc)
                            )
                        raise
                    except BaseException:
                        if breaker is not None:
                            assert gate is not None
                            breaker.release(permit)  # cancelled: neither success nor failure
                            with anyio.CancelScope(shield=True):  # bounded by the store
                                await gate.asettle(breaker, token, None)
                        raise
                    if breaker is not None:
                        assert gate is not None
                        publish = gate.completed(breaker, permit, began, response)
                        if publish is not None or token is not None:
                            await gate.asettle(breaker, token, publish)
                except httpx.TransportError as exc:
                    if retrier is None or policy is None:
                        raise
                    if call is None:
                        call = retrier._call(request, policy, options, host, started, body)
                    delay = retrier._after_error(call, exc)
                    if delay is None:
                        raise
                else:
                    if retrier is None:
                        break
                    if policy is None or response.status_code not in policy.retry_statuses:
                        response = retrier._finish(response, call, waited)  # no clock read
                        break
                    if call is None:
                        call = retrier._call(request, policy, options, host, started, body)
                    delay = retrier._after_response(call, response)
                    if delay is None:
                        response = retrier._finish(response, call, waited)
                        break
                    waited += retrier._wait_of(response)
                    await retrier._adiscard(response, request)
                # Outside the except block: the sleep must not chain onto the old error.
                await retrier._context.async_sleep(delay)
        except BaseException as exc:
            if metrics is not None:
                metrics.request_error(series, exc, now() - start)
            raise
        if metrics is not None:
            metrics.request_response(series, response.status_code, now() - start)
        if self._top:
            report(response)  # every response carries extensions["klayengo"]
        return response
