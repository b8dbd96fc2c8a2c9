"""A client used as a context manager enters and exits the user's transports as httpx does.

httpx calls ``__enter__`` / ``__exit__`` (``__aenter__`` / ``__aexit__``) on its
transport and on every mount; klayengo's stack sits in between and must pass those
calls on to the user's transport, not replace ``__exit__`` with ``close()``. Each
scenario runs against httpx's client and klayengo's (with and without metrics, whose
stack tops differ) and compares what the transports saw.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

import klayengo

Events = list[tuple[str, str]]


class Recording(httpx.BaseTransport):
    """Records its lifecycle calls; ``__exit__`` closes through the base class."""

    def __init__(self, name: str, events: Events) -> None:
        self.name = name
        self.events = events

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=self.name)

    def __enter__(self) -> Recording:
        self.events.append((self.name, "enter"))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        super().__exit__(*exc_info)  # httpx's BaseTransport.__exit__ calls close()
        self.events.append((self.name, f"exit {getattr(exc_info[0], '__name__', None)}"))

    def close(self) -> None:
        self.events.append((self.name, "close"))


class AsyncRecording(httpx.AsyncBaseTransport):
    def __init__(self, name: str, events: Events) -> None:
        self.name = name
        self.events = events

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=self.name)

    async def __aenter__(self) -> AsyncRecording:
        self.events.append((self.name, "enter"))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)  # calls aclose()
        self.events.append((self.name, f"exit {getattr(exc_info[0], '__name__', None)}"))

    async def aclose(self) -> None:
        self.events.append((self.name, "close"))


#: klayengo's client settings under test: the plain stack top and the metered one.
OURS = [
    pytest.param({"metrics": False}, id="plain-top"),
    pytest.param({"metrics": "registry"}, id="metered-top"),
]


def ours(settings: dict[str, Any]) -> dict[str, Any]:
    if settings["metrics"] == "registry":
        return {"metrics": CollectorRegistry()}
    return dict(settings)


def sync_events(make: Any, fail: bool = False) -> Events:
    events: Events = []
    main, mount = Recording("main", events), Recording("mount", events)
    client = make(transport=main, mounts={"https://m.example": mount})
    with pytest.raises(ValueError) if fail else nullcontext(), client:
        assert client.get("https://x.example/").text == "main"
        assert client.get("https://m.example/").text == "mount"
        events.append(("body", "done"))
        if fail:
            raise ValueError("in the body")
    return events


async def async_events(make: Any, fail: bool = False) -> Events:
    events: Events = []
    main, mount = AsyncRecording("main", events), AsyncRecording("mount", events)
    client = make(transport=main, mounts={"https://m.example": mount})
    with pytest.raises(ValueError) if fail else nullcontext():
        async with client:
            assert (await client.get("https://x.example/")).text == "main"
            assert (await client.get("https://m.example/")).text == "mount"
            events.append(("body", "done"))
            if fail:
                raise ValueError("in the body")
    return events


EXPECTED = [
    ("main", "enter"),
    ("mount", "enter"),
    ("body", "done"),
    ("main", "close"),
    ("main", "exit None"),
    ("mount", "close"),
    ("mount", "exit None"),
]


@pytest.mark.parametrize("settings", OURS)
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "raising"])
def test_transports_are_entered_and_exited_as_httpx_does(
    settings: dict[str, Any], fail: bool
) -> None:
    expected = sync_events(httpx.Client, fail)
    if not fail:
        assert expected == EXPECTED  # the reference itself, so a change in httpx shows
    got = sync_events(lambda **kw: klayengo.ResilientClient(**ours(settings), **kw), fail)
    assert got == expected


@pytest.mark.anyio
@pytest.mark.parametrize("settings", OURS)
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "raising"])
async def test_async_transports_are_entered_and_exited_as_httpx_does(
    settings: dict[str, Any], fail: bool
) -> None:
    expected = await async_events(httpx.AsyncClient, fail)
    if not fail:
        assert expected == EXPECTED
    got = await async_events(
        lambda **kw: klayengo.AsyncResilientClient(**ours(settings), **kw), fail
    )
    assert got == expected


def test_close_without_with_only_closes_as_httpx_does() -> None:
    def run(make: Any) -> Events:
        events: Events = []
        client = make(transport=Recording("main", events))
        client.close()
        client.close()
        return events

    assert run(httpx.Client) == [("main", "close")]
    assert run(lambda **kw: klayengo.ResilientClient(metrics=False, **kw)) == [("main", "close")]


@pytest.mark.anyio
async def test_async_close_without_with_only_closes_as_httpx_does() -> None:
    async def run(make: Any) -> Events:
        events: Events = []
        client = make(transport=AsyncRecording("main", events))
        await client.aclose()
        await client.aclose()
        return events

    assert await run(httpx.AsyncClient) == [("main", "close")]
    ours_events = await run(lambda **kw: klayengo.AsyncResilientClient(metrics=False, **kw))
    assert ours_events == [("main", "close")]


# One transport under several entries is one klayengo stack: it is entered once and
# ended once (httpx itself would enter and exit it once per entry).
SHARED = [("shared", "enter"), ("body", "done"), ("shared", "close"), ("shared", "exit None")]


def test_a_shared_transport_is_entered_and_exited_once() -> None:
    events: Events = []
    shared = Recording("shared", events)
    client = klayengo.ResilientClient(
        transport=shared,
        mounts={"https://a.example": shared, "https://b.example": shared},
        metrics=False,
    )
    with client:
        assert client.get("https://b.example/").text == "shared"
        events.append(("body", "done"))
    client.close()  # after the block: nothing more
    assert events == SHARED


@pytest.mark.anyio
async def test_async_shared_transport_is_entered_and_exited_once() -> None:
    events: Events = []
    shared = AsyncRecording("shared", events)
    client = klayengo.AsyncResilientClient(
        transport=shared,
        mounts={"https://a.example": shared, "https://b.example": shared},
        metrics=False,
    )
    async with client:
        assert (await client.get("https://b.example/")).text == "shared"
        events.append(("body", "done"))
    await client.aclose()
    assert events == SHARED


def test_the_default_transport_is_exited_and_the_client_context_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real_exit = httpx.HTTPTransport.__exit__

    def spy(self: httpx.HTTPTransport, *exc_info: Any) -> None:
        calls.append(exc_info[0])
        real_exit(self, *exc_info)

    monkeypatch.setattr(httpx.HTTPTransport, "__exit__", spy)
    client = klayengo.ResilientClient(metrics=False)
    closed: list[str] = []
    client._klayengo.on_close(lambda: closed.append("context"))
    with client:
        assert isinstance(client._transport.inner, httpx.HTTPTransport)  # type: ignore[attr-defined]
    assert (calls, closed) == ([None], ["context"])


@pytest.mark.anyio
async def test_async_default_transport_is_exited_and_the_client_context_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    real_exit = httpx.AsyncHTTPTransport.__aexit__

    async def spy(self: httpx.AsyncHTTPTransport, *exc_info: Any) -> None:
        calls.append(exc_info[0])
        await real_exit(self, *exc_info)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "__aexit__", spy)
    client = klayengo.AsyncResilientClient(metrics=False)
    closed: list[str] = []
    client._klayengo.on_close(lambda: closed.append("context"))
    async with client:
        assert isinstance(client._transport.inner, httpx.AsyncHTTPTransport)  # type: ignore[attr-defined]
    assert (calls, closed) == ([None], ["context"])


def test_the_layers_release_nothing_of_their_own_on_close() -> None:
    """The stack's ``__exit__`` hands the end of the chain to the inner transport's own
    ``__exit__`` and skips the layers' ``close()``: that is only right while every
    layer's ``close()`` just closes the transport below it (what the layers share is
    released with the client's LayerContext). A layer that gains a ``close()`` of its
    own must be released by the stack's ``__exit__`` too."""
    from klayengo._httpx._transports import _layer, _pipeline, breaker, cache, ratelimit, retry

    sync_layers = [
        retry.RetryTransport,
        breaker.CircuitBreakerTransport,
        ratelimit.RateLimitTransport,
        cache.CacheTransport,
    ]
    async_layers = [
        retry.AsyncRetryTransport,
        breaker.AsyncCircuitBreakerTransport,
        ratelimit.AsyncRateLimitTransport,
        cache.AsyncCacheTransport,
        _pipeline.AsyncPipeline,
    ]
    assert all(layer.close is _layer.SyncLayer.close for layer in sync_layers)
    assert all(layer.aclose is _layer.AsyncLayer.aclose for layer in async_layers)
