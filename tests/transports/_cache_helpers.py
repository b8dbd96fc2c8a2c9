"""Helpers for the cache transport tests: one harness drives sync, asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing
from typing import Any

import anyio
import httpx

from klayengo import AsyncCacheTransport, CachePolicy, CacheTransport, HostPolicy
from klayengo._context import LayerContext
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events
from klayengo._core.hosts import PolicyResolver

Handler = Callable[[httpx.Request], httpx.Response]
MODES = ("sync", "asyncio", "trio")


class Recorder(Events):
    """Records every cache event."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []
        self.coalesced_hosts: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        self.evicted = 0

    def cache_result(self, host: str, result: str) -> None:
        self.results.append((host, result))

    def coalesced(self, host: str) -> None:
        self.coalesced_hosts.append(host)

    def cache_size(self, entries: int, nbytes: int) -> None:
        self.sizes.append((entries, nbytes))

    def cache_evicted(self, count: int) -> None:
        self.evicted += count

    def kinds(self) -> list[str]:
        return [result for _, result in self.results]


def make_context(
    policy: CachePolicy | None,
    *,
    clock: FakeClock | None = None,
    events: Events | None = None,
    hosts: Mapping[str, HostPolicy] | None = None,
) -> LayerContext:
    return LayerContext(
        resolver=PolicyResolver(cache=policy, hosts=hosts),
        clock=clock if clock is not None else FakeClock(),
        events=events if events is not None else Recorder(),
    )


class Harness:
    """A client over a cache layer over a recording MockTransport, in one of MODES.

    Async modes run each call in its own ``anyio.run``: MockTransport keeps no
    connections, so one AsyncClient can serve several event loops.
    """

    def __init__(
        self,
        mode: str,
        handler: Handler,
        policy: CachePolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None:
        self.mode = mode
        self.handler = handler
        self.calls: list[httpx.Request] = []
        self.clock = FakeClock()
        self.events = Recorder()
        self.context = make_context(
            CachePolicy() if policy is None else policy,
            clock=self.clock,
            events=self.events,
            hosts=hosts,
        )
        mock = httpx.MockTransport(self._handle)
        self.client: httpx.Client | httpx.AsyncClient
        if mode == "sync":
            self.client = httpx.Client(transport=CacheTransport(mock, _context=self.context))
        else:
            self.client = httpx.AsyncClient(
                transport=AsyncCacheTransport(mock, _context=self.context)
            )

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        return self.handler(request)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return anyio.run(fn, *args, backend=self.mode)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        client = self.client
        if isinstance(client, httpx.Client):
            return client.request(method, url, **kwargs)

        async def go() -> httpx.Response:
            return await client.request(method, url, **kwargs)

        return self.run(go)  # type: ignore[no-any-return]

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def stream_read(self, url: str, chunks: int | None = None) -> int:
        """Stream ``url``'s raw body (all, or the first ``chunks`` chunks); bytes read."""
        client = self.client
        if isinstance(client, httpx.Client):
            with client.stream("GET", url) as response:
                return _count(response.iter_raw(), chunks)

        async def go() -> int:
            async with client.stream("GET", url) as response:
                total = n = 0
                if chunks == 0:
                    return 0
                async with aclosing(response.aiter_raw()) as raw:
                    async for chunk in raw:
                        total += len(chunk)
                        n += 1
                        if chunks is not None and n >= chunks:
                            break
                return total

        return self.run(go)  # type: ignore[no-any-return]


def _count(chunks: Any, limit: int | None) -> int:
    total = 0
    if limit == 0:
        return 0
    for n, chunk in enumerate(chunks, 1):
        total += len(chunk)
        if limit is not None and n >= limit:
            break
    return total


def respond(
    status: int = 200, body: bytes = b"hello", **headers: str
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler that always answers the same (header names: underscores -> dashes)."""
    fields = {name.replace("_", "-"): value for name, value in headers.items()}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=fields, content=body)

    return handler


class ChunkedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """``total`` bytes in ``chunk``-sized pieces, for sync and async clients alike."""

    def __init__(self, total: int, chunk: int) -> None:
        self.total, self.chunk = total, chunk

    def __iter__(self) -> Iterator[bytes]:
        piece = b"x" * self.chunk
        for _ in range(self.total // self.chunk):
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self:
            yield piece


def streamed(total: int, chunk: int = 1000, length: bool = False) -> Handler:
    """A handler answering a ``total``-byte streamed body (with Content-Length or not)."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(total)} if length else {}
        return httpx.Response(200, headers=headers, stream=ChunkedBody(total, chunk))

    return handler
