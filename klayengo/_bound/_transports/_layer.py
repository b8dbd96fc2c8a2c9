"""Base classes for the layer twins: hold the next transport, own its lifecycle."""

from __future__ import annotations

from ..._context import LayerContext
from .. import httpx

__all__ = ["AsyncLayer", "SyncLayer"]


class SyncLayer(httpx.BaseTransport):
    """A sync layer wrapping ``transport``; closing it closes the chain below."""

    _context: LayerContext

    def __init__(self, transport: httpx.BaseTransport, context: LayerContext) -> None:
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"{type(self).__name__} wraps an httpx.BaseTransport, got {transport!r}"
            )
        self._next = transport
        self._context = context
        if context.http is None:
            context.http = httpx  # a context made by hand: this layer's flavour

    @property
    def transport(self) -> httpx.BaseTransport:
        """The wrapped transport."""
        return self._next

    def close(self) -> None:
        self._next.close()


class AsyncLayer(httpx.AsyncBaseTransport):
    """An async layer wrapping ``transport``; closing it closes the chain below."""

    _context: LayerContext

    def __init__(self, transport: httpx.AsyncBaseTransport, context: LayerContext) -> None:
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"{type(self).__name__} wraps an httpx.AsyncBaseTransport, got {transport!r}"
            )
        self._next = transport
        self._context = context
        if context.http is None:
            context.http = httpx  # a context made by hand: this layer's flavour

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport."""
        return self._next

    async def aclose(self) -> None:
        await self._next.aclose()
