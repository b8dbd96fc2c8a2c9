"""PLACEHOLDER pass-through for the RetryTransport layer (replaced by its issue)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from .._policies import HostPolicy, RetryPolicy
from ._context import LayerContext
from ._layer import AsyncLayer, SyncLayer

__all__ = ["AsyncRetryTransport", "RetryTransport"]


class RetryTransport(SyncLayer):
    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(transport, _context or LayerContext.standalone(retry=policy, hosts=hosts))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._next.handle_request(request)


class AsyncRetryTransport(AsyncLayer):
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(transport, _context or LayerContext.standalone(retry=policy, hosts=hosts))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._next.handle_async_request(request)
