"""The outermost metrics layer counts logical requests: sync and async (asyncio, trio)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from klayengo import AsyncResilientClient, CircuitOpenError, RateLimitExceeded, ResilientClient
from klayengo._core.clock import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"client": "t", **labels}) or 0.0


def scripted(clock: FakeClock, registry: CollectorRegistry, seen: list[float]) -> Handler:
    """Responses chosen by path; each request takes 0.2 s of fake time."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(value(registry, "klayengo_requests_in_flight", host="api.test"))
        clock.advance(0.2)
        path = request.url.path
        if path == "/connect":
            raise httpx.ConnectError("refused", request=request)
        if path == "/timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if path == "/reset":
            raise httpx.ReadError("reset", request=request)
        if path == "/protocol":
            raise httpx.RemoteProtocolError("bad", request=request)
        if path == "/open":
            raise CircuitOpenError("open", request=request, host="api.test", retry_after=1.0)
        if path == "/limited":
            raise RateLimitExceeded("limited", request=request, host="api.test", retry_after=1.0)
        if path == "/bug":
            raise RuntimeError("bug")
        return httpx.Response(int(path.strip("/") or 200))

    return handler


ERRORS = {
    "/connect": (httpx.ConnectError, "connect"),
    "/timeout": (httpx.ReadTimeout, "timeout"),
    "/reset": (httpx.ReadError, "network"),
    "/protocol": (httpx.RemoteProtocolError, "protocol"),
    "/open": (CircuitOpenError, "circuit_open"),
    "/limited": (RateLimitExceeded, "rate_limited"),
    "/bug": (RuntimeError, "other"),
}
STATUSES = [200, 200, 201, 404, 500, 503]


def check(registry: CollectorRegistry, seen: list[float]) -> None:
    host = {"host": "api.test"}
    for status in sorted(set(STATUSES)):
        assert value(
            registry, "klayengo_requests_total", **host, method="GET", status_code=str(status)
        ) == STATUSES.count(status)
    assert value(registry, "klayengo_requests_total", **host, method="POST", status_code="200") == 1
    assert (
        value(registry, "klayengo_requests_total", **host, method="_OTHER", status_code="200") == 1
    )
    assert value(
        registry, "klayengo_requests_total", **host, method="GET", status_code="error"
    ) == len(ERRORS)
    for _, kind in ERRORS.values():
        assert value(registry, "klayengo_errors_total", **host, type=kind) == 1
    n_get = len(STATUSES) + len(ERRORS)
    assert value(registry, "klayengo_request_duration_seconds_count", **host, method="GET") == n_get
    assert value(
        registry, "klayengo_request_duration_seconds_sum", **host, method="GET"
    ) == pytest.approx(0.2 * n_get)
    assert (
        value(registry, "klayengo_request_duration_seconds_bucket", **host, method="GET", le="0.1")
        == 0
    )
    assert (
        value(registry, "klayengo_request_duration_seconds_bucket", **host, method="GET", le="0.25")
        == n_get
    )
    # In flight while the inner transport runs, back to zero afterwards.
    assert seen == [1.0] * (n_get + 2)
    assert value(registry, "klayengo_requests_in_flight", **host) == 0


def test_sync_client_counts_logical_requests_and_errors() -> None:
    clock, registry, seen = FakeClock(), CollectorRegistry(), []
    with ResilientClient(
        transport=httpx.MockTransport(scripted(clock, registry, seen)),
        metrics=registry,
        name="t",
        retry=None,
        breaker=None,
        _clock=clock,
    ) as client:
        for status in STATUSES:
            client.get(f"https://api.test/{status}")
        client.post("https://api.test/200")
        client.request("PURGE", "https://api.test/200")
        for path, (exc, _) in ERRORS.items():
            with pytest.raises(exc):
                client.get(f"https://api.test{path}")
    check(registry, seen)


@pytest.mark.anyio
async def test_async_client_counts_logical_requests_and_errors() -> None:
    clock, registry, seen = FakeClock(), CollectorRegistry(), []
    async with AsyncResilientClient(
        transport=httpx.MockTransport(scripted(clock, registry, seen)),
        metrics=registry,
        name="t",
        retry=None,
        breaker=None,
        _clock=clock,
    ) as client:
        for status in STATUSES:
            await client.get(f"https://api.test/{status}")
        await client.post("https://api.test/200")
        await client.request("PURGE", "https://api.test/200")
        for path, (exc, _) in ERRORS.items():
            with pytest.raises(exc):
                await client.get(f"https://api.test{path}")
    check(registry, seen)


@pytest.mark.anyio
async def test_a_cancelled_request_leaves_nothing_in_flight() -> None:
    import anyio

    registry = CollectorRegistry()
    started = anyio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with AsyncResilientClient(
        transport=httpx.MockTransport(hang), metrics=registry, name="t", retry=None, breaker=None
    ) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, "http://h/")
            await started.wait()
            assert value(registry, "klayengo_requests_in_flight", host="h") == 1
            tg.cancel_scope.cancel()
        assert value(registry, "klayengo_requests_in_flight", host="h") == 0
        assert value(registry, "klayengo_errors_total", host="h", type="other") == 1


def test_the_request_and_response_pass_through_untouched() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"x-a": "1"}, extensions={"custom": 1})

    with ResilientClient(
        transport=httpx.MockTransport(handler),
        metrics=CollectorRegistry(),
        retry=None,
        breaker=None,
    ) as client:
        response = client.get("http://h/", headers={"x-b": "2"}, extensions={"trace": None})
    assert seen[0].headers["x-b"] == "2"
    assert seen[0].extensions["trace"] is None
    assert response.headers["x-a"] == "1"
    assert response.extensions["custom"] == 1
    # The metrics layer adds nothing to the report.
    assert response.extensions["klayengo"] == {
        "attempts": 1,
        "cache": None,
        "breaker": None,
        "wait": 0.0,
    }


def test_no_info_logs_or_warnings_on_normal_requests(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    with ResilientClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200)), metrics=registry
    ) as client:
        for _ in range(3):
            client.get("http://user:pw@h/?token=abc")
    loud = [
        r for r in caplog.records if r.name.startswith("klayengo") and r.levelno >= logging.INFO
    ]
    assert loud == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("klayengo")]
    assert all("abc" not in m and "pw" not in m for m in ours)


def test_counts_are_exact_under_many_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    registry = CollectorRegistry()
    threads, per_thread = 8, 250
    with ResilientClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        metrics=registry,
        name="t",
        retry=None,
        breaker=None,
    ) as client:

        def work(i: int) -> None:
            for j in range(per_thread):
                client.get(f"http://h{(i + j) % 4}/")
                client._klayengo.events.retry(f"h{j % 4}", "status", 1, 0.0)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        total = threads * per_thread
        hosts = [f"h{i}" for i in range(4)]
        assert (
            sum(
                value(registry, "klayengo_requests_total", host=h, method="GET", status_code="200")
                for h in hosts
            )
            == total
        )
        assert (
            sum(
                value(registry, "klayengo_request_duration_seconds_count", host=h, method="GET")
                for h in hosts
            )
            == total
        )
        assert (
            sum(value(registry, "klayengo_retries_total", host=h, reason="status") for h in hosts)
            == total
        )
        assert all(value(registry, "klayengo_requests_in_flight", host=h) == 0 for h in hosts)


def test_a_metered_stack_needs_a_context_with_metrics() -> None:
    from klayengo._httpx._transports.stack import AsyncMeteredStackTransport, MeteredStackTransport

    from klayengo._context import LayerContext

    inner = httpx.MockTransport(lambda r: httpx.Response(200))
    with pytest.raises(ValueError, match="metrics enabled"):
        MeteredStackTransport(inner, inner, LayerContext())
    with pytest.raises(ValueError, match="metrics enabled"):
        AsyncMeteredStackTransport(inner, inner, LayerContext())
