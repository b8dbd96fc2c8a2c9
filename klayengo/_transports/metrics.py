"""The outermost layer: counts logical requests (sync and async twins).

One logical request is one call of the client's transport, whatever the layers below
did (a cache hit, several attempts, a refusal). For each one it updates
``klayengo_requests_total`` (``status_code="error"`` when an exception is raised),
``klayengo_request_duration_seconds`` (from the call until the response headers are
back, or the exception), ``klayengo_requests_in_flight`` and, on an exception,
``klayengo_errors_total``. Attempts show only in ``klayengo_retries_total``.

The stack adds this layer only when the client has metrics (``metrics=False`` costs
nothing). The request and the response pass through untouched.
"""

from __future__ import annotations

import httpx

from .._metrics import metrics_of
from ._context import LayerContext
from ._layer import AsyncLayer, SyncLayer

__all__ = ["AsyncMetricsTransport", "MetricsTransport", "metrics_enabled"]


def metrics_enabled(context: LayerContext) -> bool:
    """True when ``context`` has a metrics store (the stack then adds this layer)."""
    return metrics_of(context) is not None


class MetricsTransport(SyncLayer):
    """Counts every request that passes through it into the client's metrics store."""

    def __init__(self, transport: httpx.BaseTransport, *, _context: LayerContext) -> None:
        super().__init__(transport, _context)
        store = metrics_of(_context)
        if store is None:
            raise ValueError("MetricsTransport needs a context with metrics enabled")
        self._metrics = store
        self._now = _context.clock.monotonic

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        metrics = self._metrics
        series = metrics.request_started(request)
        now = self._now
        start = now()
        try:
            response = self._next.handle_request(request)
        except BaseException as exc:
            metrics.request_error(series, exc, now() - start)
            raise
        metrics.request_response(series, response.status_code, now() - start)
        return response


class AsyncMetricsTransport(AsyncLayer):
    """Counts every request that passes through it into the client's metrics store."""

    def __init__(self, transport: httpx.AsyncBaseTransport, *, _context: LayerContext) -> None:
        super().__init__(transport, _context)
        store = metrics_of(_context)
        if store is None:
            raise ValueError("AsyncMetricsTransport needs a context with metrics enabled")
        self._metrics = store
        self._now = _context.clock.monotonic

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        metrics = self._metrics
        series = metrics.request_started(request)
        now = self._now
        start = now()
        try:
            response = await self._next.handle_async_request(request)
        except BaseException as exc:
            metrics.request_error(series, exc, now() - start)
            raise
        metrics.request_response(series, response.status_code, now() - start)
        return response
