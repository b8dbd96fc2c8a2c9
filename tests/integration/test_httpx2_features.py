"""httpx2's own features pass through klayengo's stack untouched.

- server-sent events: ``client.sse()`` streams events as they arrive, through every
  layer (cache on), and nothing is stored;
- websockets: ``client.websocket()`` opens its session through the stack (the
  handshake is one GET: counted, rate limited and guarded by the breaker like any
  other; never stored by the cache) and the session itself is httpx2's;
- zstd: a compressed body is decoded by httpx2, also when it is served from the cache;
- truststore-based verification: the transport klayengo wraps is the one httpx2
  would have built, from the same ``verify``/``trust_env`` settings.

These use httpx2 itself (not the suite's alias), so they mean the same in both runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from backports import zstd

import klayengo
import klayengo.httpx2 as k2

URL = "http://api.example/events"


def _sse_handler(chunks: list[bytes], sent: list[int]) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        def body() -> Iterator[bytes]:
            for chunk in chunks:
                sent.append(len(chunk))
                yield chunk

        return httpx2.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())

    return handler


def test_sse_events_stream_through_the_stack_as_they_arrive() -> None:
    chunks = [b"data: one\n\n", b"event: tick\ndata: two\n\n", b"data: three\n\n"]
    sent: list[int] = []
    with k2.ResilientClient(
        metrics=False,
        cache=klayengo.CachePolicy(),
        transport=httpx2.MockTransport(_sse_handler(chunks, sent)),
    ) as client:
        seen = []
        with client.sse(URL) as source:
            for event in source:
                # Each event arrives before the next chunk is produced: nothing buffers.
                seen.append((event.event, event.data, len(sent)))
        assert seen == [("message", "one", 1), ("tick", "two", 2), ("message", "three", 3)]
        # The next request goes upstream again: the event stream was not stored.
        with client.sse(URL) as source:
            assert [event.data for event in source] == ["one", "two", "three"]
        assert len(sent) == 6


@pytest.mark.anyio
async def test_sse_async(anyio_backend: Any) -> None:
    async def body() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"id: {n}\ndata: {n}\n\n".encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())

    async with k2.AsyncResilientClient(
        metrics=False, cache=klayengo.CachePolicy(), transport=httpx2.MockTransport(handler)
    ) as client:
        async with client.sse(URL) as source:
            assert [event.data async for event in source] == ["0", "1", "2"]


def test_zstd_body_is_decoded_by_httpx2_on_a_miss_and_on_a_hit() -> None:
    body = b'{"items": [1, 2, 3]}' * 50
    compressed = zstd.compress(body)
    calls = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        return httpx2.Response(
            200,
            headers={"Content-Encoding": "zstd", "Cache-Control": "max-age=60"},
            content=compressed,
        )

    with k2.ResilientClient(
        metrics=False, cache=klayengo.CachePolicy(), transport=httpx2.MockTransport(handler)
    ) as client:
        first = client.get("http://api.example/data")
        second = client.get("http://api.example/data")
    assert first.content == body and second.content == body
    assert second.extensions["klayengo"]["cache"] == "hit"
    assert second.headers["Content-Encoding"] == "zstd"
    assert len(calls) == 1


def test_the_wrapped_transport_is_built_as_httpx2_would_build_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[dict[str, Any]] = []
    original = httpx2.HTTPTransport.__init__

    def record(self: httpx2.HTTPTransport, *args: Any, **kwargs: Any) -> None:
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpx2.HTTPTransport, "__init__", record)
    settings = {"verify": True, "trust_env": False, "http2": False}
    httpx2.Client(**settings).close()
    k2.ResilientClient(metrics=False, **settings).close()
    assert len(built) == 2
    assert built[0] == built[1]  # same verify (truststore by default), trust_env, limits


# -- websockets, against a real loopback server ----------------------------------------
async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo: " + message["text"]})


@pytest.fixture(scope="module")
def ws_url() -> Iterator[str]:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(_echo_app, host="127.0.0.1", port=port, ws="wsproto", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the websocket server did not start"
        time.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    thread.join(10)


def test_websocket_session_through_the_stack(ws_url: str) -> None:
    registry = klayengo.MetricsPolicy(registry=_registry())
    with k2.ResilientClient(metrics=registry, cache=klayengo.CachePolicy()) as client:
        with client.websocket(ws_url) as ws:
            ws.send_text("hello")
            assert ws.receive_text() == "echo: hello"
        with client.websocket(ws_url) as ws:  # not served from the cache
            ws.send_text("again")
            assert ws.receive_text() == "echo: again"
        host = ws_url.split("/")[2]
        assert client.breaker_state(host) == "closed"
    assert _count(registry, "klayengo_requests_total", status_code="101") == 2


@pytest.mark.anyio
async def test_websocket_session_async(ws_url: str, anyio_backend: Any) -> None:
    async with (
        k2.AsyncResilientClient(metrics=False, cache=klayengo.CachePolicy()) as client,
        client.websocket(ws_url) as ws,
    ):
        await ws.send_text("hi")
        with anyio.fail_after(10):
            assert await ws.receive_text() == "echo: hi"


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def _count(policy: klayengo.MetricsPolicy, name: str, **labels: str) -> float:
    assert policy.registry is not None
    total = 0.0
    for family in policy.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
