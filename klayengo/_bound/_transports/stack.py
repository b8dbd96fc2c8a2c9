"""The one place where the order of the layers lives.

Outermost first::

    metrics ── Cache (+ coalescing) ── Retry (+ budget, deadline)
            ── CircuitBreaker (per host) ── RateLimit (per host or client) ── inner

Why this order:

- the cache is outermost, so a hit costs no token, no breaker slot and no attempt, and
  it sees the final outcome of the layers below, so it can serve a stale entry when
  they all fail (stale-if-error);
- retry sits outside the breaker, so the breaker counts every attempt and an open
  breaker fails an attempt fast with ``CircuitOpenError`` (not retried by default);
- the limiter is innermost, so only real network attempts spend tokens;
- metrics are outermost of all, so they count logical requests (cache hits included),
  whatever the layers below did; attempts show in the retry events. The stack's top
  itself does this accounting (:class:`MeteredStackTransport`): a layer of its own
  would be one more coroutine and frame held by every request in flight.

The async stack keeps that order in fewer coroutines: its top runs retry, breaker and
rate limit itself, in the one coroutine of :class:`~._pipeline.AsyncPipeline` (with the
cache on, the cache's next transport does), so a request in flight holds one coroutine
of klayengo's, not one per layer. The sync stack keeps a frame per layer.

A layer is left out entirely when neither the client nor any ``hosts=`` pattern
enables it (the metrics: when the client has ``metrics=False``, the top is a plain
:class:`StackTransport`), so a disabled layer costs nothing. Every stack of one client
(its own transport, each mount, each proxy) shares one :class:`LayerContext`.

Metrics, per logical request (one call of the stack, whatever the layers below did: a
cache hit, several attempts, a refusal): ``klayengo_requests_total``
(``status_code="error"`` when an exception is raised), ``klayengo_request_duration_seconds``
(from the call until the response headers are back, or the exception),
``klayengo_requests_in_flight`` and, on an exception, ``klayengo_errors_total``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._context import LayerContext
from ..._core.options import EXTENSION_KEY, request_options
from ..._core.report import report
from ..._metrics import ClientMetrics, metrics_of
from .. import httpx
from ._pipeline import NO_PARTS, AsyncPipeline
from .breaker import CircuitBreakerTransport, _Gate
from .cache import AsyncCacheTransport, CacheTransport
from .ratelimit import AsyncRateLimitTransport, RateLimitTransport
from .retry import AsyncRetryTransport, RetryTransport

if TYPE_CHECKING:
    from types import TracebackType

    from ._pipeline import AsyncParts

__all__ = [
    "AsyncMeteredStackTransport",
    "AsyncStackTransport",
    "MeteredStackTransport",
    "StackTransport",
    "build_async_stack",
    "build_stack",
]


class StackTransport(httpx.BaseTransport):
    """The top of one client stack: validates per-request options, closes once."""

    def __init__(self, top: httpx.BaseTransport, inner: httpx.BaseTransport) -> None:
        self._top = top
        self.inner = inner
        self._entered = False
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if EXTENSION_KEY in request.extensions:
            request_options(request)  # raises TypeError on unknown keys or bad values
        response = self._top.handle_request(request)
        report(response)  # every response carries extensions["klayengo"]
        return response

    # httpx enters and exits each transport it holds with the client; the user's
    # transport gets those calls, as it would from httpx, and not ``close()`` in place
    # of ``__exit__`` (a transport may release more in ``__exit__``). One inner
    # transport under several entries is one stack: entered once, ended once (by
    # ``__exit__`` or ``close()``, whichever comes first).
    def __enter__(self) -> StackTransport:
        if not self._entered:
            self._entered = True
            self.inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if not self._closed:
            self._closed = True
            # The layers above the inner transport have nothing of their own to
            # release (what they share lives in the client's LayerContext, which the
            # client closes): their close() would only close the inner transport.
            self.inner.__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        # httpx closes its transport and every mount; one inner transport may sit
        # under several entries, so closing must be idempotent.
        if not self._closed:
            self._closed = True
            self._top.close()


class MeteredStackTransport(StackTransport):
    """A stack top that also counts each logical request into the client's metrics."""

    def __init__(
        self, top: httpx.BaseTransport, inner: httpx.BaseTransport, context: LayerContext
    ) -> None:
        super().__init__(top, inner)
        self._metrics = _store(context)
        self._now = context.clock.monotonic

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if EXTENSION_KEY in request.extensions:
            request_options(request)
        metrics = self._metrics
        series = metrics.request_started(request)
        now = self._now
        start = now()
        try:
            response = self._top.handle_request(request)
        except BaseException as exc:
            metrics.request_error(series, exc, now() - start)
            raise
        metrics.request_response(series, response.status_code, now() - start)
        report(response)
        return response


class AsyncStackTransport(AsyncPipeline):
    """The top of one async client stack: validates per-request options, runs the
    layers it is given (all but the cache) in its own coroutine, closes once."""

    #: Counts each logical request into the client's metrics (the subclass below).
    _metered = False

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        inner: httpx.AsyncBaseTransport,
        context: LayerContext,
        parts: AsyncParts = NO_PARTS,
    ) -> None:
        super().__init__(transport, context, parts)
        self._top = True
        self.inner = inner
        self._entered = False
        self._closed = False
        if self._metered:
            self._metrics = _store(context)
            self._now = context.clock.monotonic

    # Entered and exited as the sync top is (see StackTransport.__enter__).
    async def __aenter__(self) -> AsyncStackTransport:
        if not self._entered:
            self._entered = True
            await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if not self._closed:
            self._closed = True
            await self.inner.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._next.aclose()


class AsyncMeteredStackTransport(AsyncStackTransport):
    """An async stack top that also counts each logical request into the client's metrics."""

    _metered = True


def _store(context: LayerContext) -> ClientMetrics:
    store = metrics_of(context)
    if store is None:
        raise ValueError("a metered stack needs a context with metrics enabled")
    return store


def build_stack(inner: httpx.BaseTransport, context: LayerContext) -> StackTransport:
    """Wrap ``inner`` in the layers the context's policies enable."""
    resolver = context.resolver
    transport = inner
    if resolver.any("rate_limit"):
        transport = RateLimitTransport(transport, _context=context)
    if resolver.any("breaker"):
        transport = CircuitBreakerTransport(transport, _context=context)
    if resolver.any("retry"):
        transport = RetryTransport(transport, _context=context)
    if resolver.any("cache"):
        transport = CacheTransport(transport, _context=context)
    if metrics_of(context) is not None:
        return MeteredStackTransport(transport, inner, context)
    return StackTransport(transport, inner)


def build_async_stack(
    inner: httpx.AsyncBaseTransport, context: LayerContext
) -> AsyncStackTransport:
    """Wrap ``inner`` in the async layers the context's policies enable.

    The same order as :func:`build_stack`, in fewer coroutines: the top runs retry,
    breaker and rate limit itself (see :mod:`klayengo._transports._pipeline`), or,
    when the cache is on, the cache's next transport does.
    """
    resolver = context.resolver
    parts: AsyncParts = (
        AsyncRetryTransport(inner, _context=context) if resolver.any("retry") else None,
        _Gate(context) if resolver.any("breaker") else None,
        AsyncRateLimitTransport(inner, _context=context) if resolver.any("rate_limit") else None,
    )
    transport = inner
    if resolver.any("cache"):
        # The layers below the cache run in one pipeline of their own.
        below = AsyncPipeline(inner, context, parts) if parts != NO_PARTS else inner
        transport, parts = AsyncCacheTransport(below, _context=context), NO_PARTS
    if metrics_of(context) is not None:
        return AsyncMeteredStackTransport(transport, inner, context, parts)
    return AsyncStackTransport(transport, inner, context, parts)
