"""PLACEHOLDER pass-through for the CircuitBreakerTransport layer (replaced by its issue)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from .._policies import CircuitBreakerPolicy, HostPolicy
from ._context import LayerContext
from ._layer import AsyncLayer, SyncLayer

__all__ = ["AsyncCircuitBreakerTransport", "CircuitBreakerTransport"]


class CircuitBreakerTransport(SyncLayer):
    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(
            transport, _context or LayerContext.standalone(breaker=policy, hosts=hosts)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._next.handle_request(request)


class AsyncCircuitBreakerTransport(AsyncLayer):
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(
            transport, _context or LayerContext.standalone(breaker=policy, hosts=hosts)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._next.handle_async_request(request)


def breaker_state(context: LayerContext, host: str | httpx.URL) -> str:
    return "closed"


def breaker_snapshot(context: LayerContext) -> dict[str, object]:
    return {}


def reset_breaker(context: LayerContext, host: str | httpx.URL) -> None:
    return None
