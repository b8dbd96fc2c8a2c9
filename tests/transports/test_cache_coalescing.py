"""Coalescing of concurrent identical misses: threads, asyncio tasks and trio tasks.

Real concurrency, bounded real time: each test blocks the leader inside the upstream
until every other caller is waiting for it, then releases it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import httpx
import pytest
from klayengo._httpx._transports.cache import UNCACHEABLE_MEMORY

from klayengo import AsyncCacheTransport, CachePolicy, CacheTransport
from klayengo._core.clock import FakeClock
from klayengo._core.report import report
from tests.transports._cache_helpers import ChunkedBody, Recorder, make_context

URL = "http://api.test/slow?x=1"
N = 8
#: Time the waiters get to reach the flight while the leader is held (threads only).
SETTLE = 0.3


class Upstream:
    """Holds the first request until released; answers with ``make(n)``."""

    def __init__(self, make: Callable[[int], httpx.Response], hold_all: bool = False) -> None:
        self.make = make
        self.hold_all = hold_all
        self.calls: list[httpx.Request] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        n = len(self.calls)
        if n == 1 or self.hold_all:
            self.entered.set()
            assert self.release.wait(5)
        return self.make(n)


def run_threads(upstream: Upstream, policy: CachePolicy | None = None, stream_leader: bool = False):
    events = Recorder()
    context = make_context(policy or CachePolicy(), events=events)
    client = httpx.Client(transport=CacheTransport(httpx.MockTransport(upstream), _context=context))
    results: list[object] = [None] * N

    def call(i: int) -> None:
        try:
            if i == 0 and stream_leader:
                with client.stream("GET", URL) as response:
                    results[i] = response  # closed without reading the body
                return
            results[i] = client.get(URL, headers={"X-Caller": str(i)})
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(N)]
    threads[0].start()
    assert upstream.entered.wait(5)
    for thread in threads[1:]:
        thread.start()
    time.sleep(SETTLE)
    upstream.release.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    return results, events


def ok(n: int) -> httpx.Response:
    return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, content=b"shared body")


def test_threads_make_one_upstream_request_and_each_get_their_own_response() -> None:
    upstream = Upstream(ok)
    results, events = run_threads(upstream)
    assert len(upstream.calls) == 1
    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert len(responses) == N and len({id(r) for r in responses}) == N
    assert all(r.content == b"shared body" for r in responses)
    assert len(events.coalesced_hosts) == N - 1
    assert sorted(report(r)["cache"] for r in responses) == ["hit"] * (N - 1) + ["miss"]
    for i, response in enumerate(responses):
        assert response.request.headers["x-caller"] == str(i)


def test_threads_get_each_their_own_copy_of_the_leaders_transport_error() -> None:
    def fail(n: int) -> httpx.Response:
        raise httpx.ConnectError("refused")

    upstream = Upstream(fail)
    results, _ = run_threads(upstream)
    assert len(upstream.calls) == 1
    assert all(isinstance(r, httpx.ConnectError) for r in results)
    assert len({id(r) for r in results}) == N
    for i, error in enumerate(results):
        assert isinstance(error, httpx.ConnectError)
        assert error.request.headers["x-caller"] == str(i)


def test_threads_make_their_own_requests_when_the_response_is_not_storable() -> None:
    upstream = Upstream(lambda n: httpx.Response(200, headers={"Cache-Control": "no-store"}))
    results, _ = run_threads(upstream)
    assert len(upstream.calls) == N
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results)


def test_misses_of_a_no_store_resource_go_side_by_side_until_it_is_storable() -> None:
    clock = FakeClock()
    calls: list[httpx.Request] = []
    inside = threading.Semaphore(0)
    release = threading.Event()
    directive = ["no-store"]
    hold = [False]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if hold[0]:
            inside.release()
            assert release.wait(5)
        return httpx.Response(200, headers={"Cache-Control": directive[0]})

    context = make_context(CachePolicy(), clock=clock)
    client = httpx.Client(transport=CacheTransport(httpx.MockTransport(handler), _context=context))
    state = context.peek("cache.store")
    key = f"GET {URL}"
    client.get(URL)  # the resource says no-store
    assert not state.coalescing(key, clock.monotonic())
    hold[0] = True
    threads = [threading.Thread(target=client.get, args=(URL,)) for _ in range(N)]
    for thread in threads:
        thread.start()
    # All of them reach the upstream before any has an answer: nobody waits for a leader.
    for _ in range(N):
        assert inside.acquire(timeout=5)
    release.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert len(calls) == N + 1
    hold[0] = False
    clock.advance(UNCACHEABLE_MEMORY)
    assert state.coalescing(key, clock.monotonic())  # forgotten after a while
    client.get(URL)
    assert not state.coalescing(key, clock.monotonic())
    directive[0] = "max-age=60"
    client.get(URL)  # storable now: coalesced again at once
    assert state.coalescing(key, clock.monotonic())


def test_a_request_saying_no_store_does_not_stop_coalescing() -> None:
    context = make_context(CachePolicy())
    transport = CacheTransport(httpx.MockTransport(ok), _context=context)
    httpx.Client(transport=transport).get(URL, headers={"Cache-Control": "no-store"})
    assert context.peek("cache.store").coalescing(f"GET {URL}", 0.0)


def test_threads_go_alone_when_the_leader_fails_with_a_non_http_error() -> None:
    def boom(n: int) -> httpx.Response:
        if n == 1:
            raise RuntimeError("a bug in a transport")
        return ok(n)

    upstream = Upstream(boom)
    results, _ = run_threads(upstream)
    assert isinstance(results[0], RuntimeError)
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results[1:])
    assert 2 <= len(upstream.calls) <= N


def test_threads_go_alone_when_the_leader_abandons_its_streamed_body() -> None:
    upstream = Upstream(lambda n: httpx.Response(200, stream=ChunkedBody(3000, 1000)))
    results, _ = run_threads(upstream, stream_leader=True)
    assert all(isinstance(r, httpx.Response) for r in results)
    assert all(r.content == b"x" * 3000 for r in results[1:])  # type: ignore[union-attr]
    assert len(upstream.calls) >= 2


def test_coalescing_can_be_turned_off() -> None:
    upstream = Upstream(ok, hold_all=True)
    _, events = run_threads(upstream, CachePolicy(coalesce=False))
    assert len(upstream.calls) == N and not events.coalesced_hosts


def test_stale_while_revalidate_serves_waiters_at_once() -> None:
    events = Recorder()
    context = make_context(CachePolicy(), events=events)
    clock = context.clock
    holding = threading.Event()
    release = threading.Event()
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 2:
            holding.set()
            assert release.wait(5)
        return httpx.Response(
            200,
            headers={"Cache-Control": "max-age=10, stale-while-revalidate=60"},
            content=f"v{len(calls)}".encode(),
        )

    client = httpx.Client(transport=CacheTransport(httpx.MockTransport(handler), _context=context))
    client.get(URL)
    clock.advance(20)  # type: ignore[attr-defined]
    leader = threading.Thread(target=client.get, args=(URL,))
    leader.start()
    assert holding.wait(5)
    stale = client.get(URL)  # answered while the leader is still upstream
    release.set()
    leader.join(5)
    assert stale.content == b"v1" and report(stale)["cache"] == "stale"
    assert client.get(URL).content == b"v2"


# -- async: asyncio and trio ---------------------------------------------------------------
class AsyncUpstream:
    def __init__(self, make: Callable[[int], httpx.Response]) -> None:
        self.make = make
        self.calls: list[httpx.Request] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        n = len(self.calls)
        if n == 1:
            self.entered.set()
            await self.release.wait()
        return self.make(n)


async def run_tasks(upstream: AsyncUpstream, cancel_leader: bool = False):
    events = Recorder()
    context = make_context(CachePolicy(), events=events)
    client = httpx.AsyncClient(
        transport=AsyncCacheTransport(httpx.MockTransport(upstream), _context=context)
    )
    results: list[object] = [None] * N
    leader_scope = anyio.CancelScope()

    async def call(i: int) -> None:
        try:
            results[i] = await client.get(URL, headers={"X-Caller": str(i)})
        except Exception as error:
            results[i] = error

    async def lead() -> None:
        with leader_scope:
            await call(0)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead)
            await upstream.entered.wait()
            for i in range(1, N):
                tg.start_soon(call, i)
            await anyio.wait_all_tasks_blocked()
            if cancel_leader:
                leader_scope.cancel()
            else:
                upstream.release.set()
    return results, events


@pytest.mark.anyio
async def test_tasks_make_one_upstream_request_and_each_get_their_own_response() -> None:
    upstream = AsyncUpstream(ok)
    results, events = await run_tasks(upstream)
    assert len(upstream.calls) == 1
    assert all(isinstance(r, httpx.Response) and r.content == b"shared body" for r in results)
    assert len({id(r) for r in results}) == N
    assert len(events.coalesced_hosts) == N - 1


@pytest.mark.anyio
async def test_tasks_get_each_their_own_copy_of_the_leaders_transport_error() -> None:
    def fail(n: int) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    upstream = AsyncUpstream(fail)
    results, _ = await run_tasks(upstream)
    assert len(upstream.calls) == 1
    assert all(isinstance(r, httpx.ReadTimeout) for r in results)
    assert len({id(r) for r in results}) == N


@pytest.mark.anyio
async def test_a_cancelled_leader_leaves_no_waiter_hanging() -> None:
    upstream = AsyncUpstream(ok)
    results, _ = await run_tasks(upstream, cancel_leader=True)
    assert results[0] is None  # the leader was cancelled
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results[1:])
    # The first waiter to go alone stores the response; the others may share it.
    assert 2 <= len(upstream.calls) <= N


@pytest.mark.anyio
async def test_tasks_make_their_own_requests_when_the_response_is_not_storable() -> None:
    upstream = AsyncUpstream(lambda n: httpx.Response(200, headers={"Cache-Control": "no-store"}))
    results, _ = await run_tasks(upstream)
    assert len(upstream.calls) == N
    assert all(isinstance(r, httpx.Response) for r in results)
