"""The async stack runs retry, breaker and rate limit in one coroutine (AsyncPipeline);
the sync stack runs one frame per layer. Both must give the same outcomes.

- a scripted scenario through every layer gives, request by request, the same statuses,
  exceptions, ``extensions["klayengo"]`` reports and fake-clock times, and in the end
  the same metrics and breaker snapshots, on the sync client and on the async client
  (asyncio and trio), with the cache on (the layers below it) and off (the stack top);
- a request in flight holds exactly as many coroutines more than under plain httpx as
  the design says, so a layer that grows its own coroutine again shows here.
"""

from __future__ import annotations

import gc
import types
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry

from klayengo import (
    AsyncResilientClient,
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    RateLimitPolicy,
    ResilientClient,
    RetryPolicy,
)
from klayengo._core.clock import FakeClock

Outcome = tuple[object, ...]


class Upstream:
    """Per-host scripts, shared by the sync and async handlers."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def reply(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        n = self.calls[host] = self.calls.get(host, 0) + 1
        if host == "flaky.test":  # 503 with Retry-After, then 200
            if n == 1:
                return httpx.Response(503, headers={"Retry-After": "1"}, text="busy")
            return httpx.Response(200, text="ok")
        if host == "post.test":  # always 503; a POST is not retried
            return httpx.Response(503, text="busy")
        if host == "err.test":  # a connect error, then 200
            if n == 1:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, text="ok")
        if host == "trip.test":  # always 502: retried, trips the breaker
            return httpx.Response(502, text="bad")
        if host == "slow.test":  # 429 with Retry-After: pauses the limiter, then 200
            if n == 1:
                return httpx.Response(429, headers={"Retry-After": "2"})
            return httpx.Response(200, text="ok")
        if host == "plain.test":  # cacheable
            return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, text="fresh")
        return httpx.Response(200, headers={"Cache-Control": "no-store"}, text="ok")


#: (method, url) in order; every host's script is above.
SCRIPT = [
    ("GET", "http://flaky.test/"),
    ("POST", "http://post.test/"),
    ("GET", "http://err.test/"),
    ("GET", "http://trip.test/"),
    ("GET", "http://trip.test/"),
    ("GET", "http://slow.test/"),
    ("GET", "http://limit.test/"),
    ("GET", "http://limit.test/"),
    ("GET", "http://queue.test/"),
    ("GET", "http://queue.test/"),
    ("GET", "http://plain.test/a"),
    ("GET", "http://plain.test/a"),
]


def _settings(clock: FakeClock, registry: CollectorRegistry, cache: bool) -> dict[str, Any]:
    return {
        "name": "twins",
        "retry": RetryPolicy(max_retries=3, backoff_base=0.5, jitter=False),
        "breaker": CircuitBreakerPolicy(consecutive_failures=2, open_duration=30),
        "rate_limit": RateLimitPolicy(rate=100, burst=10, max_wait=5),
        "cache": CachePolicy(ttl=60) if cache else None,
        "hosts": {
            "limit.test": HostPolicy(rate_limit=RateLimitPolicy(rate=1, per=60, max_wait=0)),
            "queue.test": HostPolicy(rate_limit=RateLimitPolicy(rate=1, max_wait=5)),
        },
        "metrics": registry,
        "_clock": clock,
    }


def _outcome(clock: FakeClock, response: httpx.Response | None, exc: Exception | None) -> Outcome:
    if exc is not None:
        return (type(exc).__name__, clock.monotonic())
    assert response is not None
    return (response.status_code, response.text, response.extensions["klayengo"], clock.monotonic())


def _samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    # `_created` samples are wall-clock timestamps of when a series was first seen.
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    )


def _sync_run(cache: bool) -> tuple[list[Outcome], object, object]:
    clock, registry, upstream = FakeClock(), CollectorRegistry(), Upstream()
    outcomes = []
    with ResilientClient(
        transport=httpx.MockTransport(upstream.reply), **_settings(clock, registry, cache)
    ) as client:
        for method, url in SCRIPT:
            try:
                response = client.request(method, url)
            except httpx.TransportError as exc:
                outcomes.append(_outcome(clock, None, exc))
            else:
                outcomes.append(_outcome(clock, response, None))
        return outcomes, _samples(registry), client.breaker_snapshot()


async def _async_run(cache: bool) -> tuple[list[Outcome], object, object]:
    clock, registry, upstream = FakeClock(), CollectorRegistry(), Upstream()

    async def handler(request: httpx.Request) -> httpx.Response:
        return upstream.reply(request)

    outcomes = []
    async with AsyncResilientClient(
        transport=httpx.MockTransport(handler), **_settings(clock, registry, cache)
    ) as client:
        for method, url in SCRIPT:
            try:
                response = await client.request(method, url)
            except httpx.TransportError as exc:
                outcomes.append(_outcome(clock, None, exc))
            else:
                outcomes.append(_outcome(clock, response, None))
        return outcomes, _samples(registry), client.breaker_snapshot()


@pytest.mark.anyio
@pytest.mark.parametrize("cache", [False, True], ids=["top", "below-cache"])
async def test_the_async_pipeline_gives_what_the_sync_layers_give(cache: bool) -> None:
    expected = _sync_run(cache)
    outcomes, samples, snapshot = await _async_run(cache)
    assert outcomes == expected[0]
    assert samples == expected[1]
    assert snapshot == expected[2]
    # The scenario did reach every layer (it is not comparing two empty runs).
    reasons = [o[0] for o in outcomes]
    assert reasons[:3] == [200, 503, 200]  # retried; POST not retried; retried
    assert [o[2]["attempts"] for o in outcomes[:3]] == [2, 1, 2]  # type: ignore[index]
    assert reasons[3:5] == ["CircuitOpenError", "CircuitOpenError"]
    assert reasons[5] == 200 and outcomes[5][2]["attempts"] == 2  # type: ignore[index]
    assert reasons[6:8] == [200, "RateLimitExceeded"]
    assert [o[2]["wait"] for o in outcomes[8:10]] == [0.0, 1.0]  # type: ignore[index]
    assert outcomes[11][2]["cache"] == ("hit" if cache else None)  # type: ignore[index]


def _census() -> tuple[int, int]:
    """Coroutines, and every object the collector tracks."""
    gc.collect()
    found = gc.get_objects()
    return sum(isinstance(o, types.CoroutineType) for o in found), len(found)


IN_FLIGHT = 40
HOSTS = 4


async def _held(
    client: httpx.AsyncClient, release: anyio.Event, arrived: list[int]
) -> tuple[int, int]:
    """What IN_FLIGHT requests parked in the handler hold, beyond the idle client
    (which has met every host once: breakers, limiters, metrics series)."""
    release.set()
    for i in range(HOSTS):
        await client.get(f"https://h{i}.test/warm")
    release.clear()
    arrived.clear()
    idle = _census()
    async with anyio.create_task_group() as tg:
        for i in range(IN_FLIGHT):
            tg.start_soon(client.get, f"https://h{i % HOSTS}.test/{i}")
        while len(arrived) < IN_FLIGHT:
            await anyio.sleep(0.001)
        busy = _census()
        release.set()
    return busy[0] - idle[0], busy[1] - idle[1]


class _Release:
    """A settable, clearable event (anyio's cannot be cleared)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


def _parked() -> tuple[httpx.MockTransport, _Release, list[int]]:
    release, arrived = _Release(), []

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(1)
        await release.wait()
        return httpx.Response(200, headers={"Cache-Control": "no-store"})

    return httpx.MockTransport(handler), release, arrived


@pytest.mark.anyio
@pytest.mark.parametrize(("cache", "extra"), [(False, 1), (True, 4)], ids=["no-cache", "cache"])
async def test_a_request_in_flight_holds_few_coroutines_more_than_httpx(
    cache: bool, extra: int
) -> None:
    """One: the stack top, which runs retry, breaker and rate limit itself. With the
    cache on, four: the top, the cache layer and its forward to the layers below, and
    those layers (in one coroutine). Nothing per layer, nothing around `send`.

    Without the cache, a request in flight holds no more objects in all than under
    plain httpx (the shared no-auth `Auth` makes up for that coroutine): with
    thousands in flight, every object counts towards CPython's full collections (see
    benchmarks/bench_scale.py). Half an object per request is left for noise."""
    transport, release, arrived = _parked()
    async with httpx.AsyncClient(transport=transport) as plain:
        coroutines, objects = await _held(plain, release, arrived)
    transport, release, arrived = _parked()
    async with AsyncResilientClient(
        transport=transport,
        rate_limit=RateLimitPolicy(rate=1e6, burst=1000),
        cache=CachePolicy() if cache else None,
        metrics=CollectorRegistry(),
    ) as ours:
        held = await _held(ours, release, arrived)
    assert held[0] - coroutines == extra * IN_FLIGHT
    if not cache:
        assert held[1] - objects < IN_FLIGHT // 2
