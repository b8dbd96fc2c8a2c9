"""ResilientClient / AsyncResilientClient with ``backend=RedisBackend(...)``, end to end,
against real redis-server processes (see conftest.py)."""

from __future__ import annotations

import logging
import multiprocessing
import time

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import klayengo
from klayengo._core.backend import MemoryBackend
from klayengo._core.clock import SYSTEM_CLOCK
from klayengo._core.events import Events
from tests.backend import workers
from tests.backend.conftest import RedisServer
from tests.backend.test_redis import max_excess_between
from tests.backend.workers import backend_errors

pytestmark = pytest.mark.redis

#: Scheduling slack on a busy 2-core machine for real-time bounds.
SLACK = 0.25
TARGET = "http://api.example/items"


def spawn() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def counting(status: int = 200) -> tuple[httpx.MockTransport, list[float]]:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return httpx.Response(status)

    return httpx.MockTransport(handler), calls


def test_backend_argument_is_validated() -> None:
    with pytest.raises(TypeError, match="backend must be"):
        klayengo.ResilientClient(backend="redis://localhost", metrics=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend must be"):
        klayengo.AsyncResilientClient(backend=object(), metrics=False)  # type: ignore[arg-type]
    transport, calls = counting()
    policy = klayengo.RateLimitPolicy(rate=1, max_wait=0)
    with klayengo.ResilientClient(
        transport=transport, backend=MemoryBackend(), rate_limit=policy, metrics=False
    ) as client:
        client.get(TARGET)
        with pytest.raises(klayengo.RateLimitExceeded):
            client.get(TARGET)
    assert len(calls) == 1


def test_clients_sharing_a_backend_do_not_close_it(redis_url: str, prefix: str) -> None:
    backend = klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    policy = klayengo.RateLimitPolicy(rate=1, max_wait=0)
    transport, _ = counting()
    with klayengo.ResilientClient(
        transport=transport, backend=backend, rate_limit=policy, metrics=False
    ) as client:
        client.get(TARGET)
    # The backend still works after its client closed, and the quota is in Redis.
    with klayengo.ResilientClient(
        transport=transport, backend=backend, rate_limit=policy, metrics=False
    ) as client:
        with pytest.raises(klayengo.RateLimitExceeded):
            client.get(TARGET)
    backend.close()


# -- breakers -------------------------------------------------------------------------


def test_another_process_trips_the_breaker_this_one_fails_fast(redis_url: str, prefix: str) -> None:
    transport, calls = counting()
    with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend,
        klayengo.ResilientClient(
            transport=transport, backend=backend, retry=None, metrics=False
        ) as client,
    ):
        assert client.get(TARGET).status_code == 200  # closed everywhere
        with spawn().Pool(1) as pool:
            assert pool.apply(workers.client_trips_breaker, (redis_url, prefix, TARGET)) == 2
        with pytest.raises(klayengo.CircuitOpenError) as raised:
            client.get(TARGET)  # the very next request
        assert 29.0 < raised.value.retry_after <= 30.0
        assert client.breaker_state(TARGET) == "open"  # adopted locally: no more round trips
        with pytest.raises(klayengo.CircuitOpenError):
            client.get(TARGET)
        assert len(calls) == 1
        # Another origin of the same host (https) is another breaker.
        assert client.get("https://api.example/items").status_code == 200


@pytest.mark.slow
def test_exactly_half_open_max_calls_probes_across_processes(redis_url: str, prefix: str) -> None:
    with klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend:
        # Opened elsewhere, with its open period over: the origin is half-open.
        signals = backend.bind(clock=SYSTEM_CLOCK, events=Events()).signals
        signals.publish_open("http://api.example", 0.0)
    start_at = time.time() + 1.5
    with spawn().Pool(3) as pool:
        counts = pool.starmap(workers.client_probes, [(redis_url, prefix, TARGET, start_at, 4)] * 3)
    assert sum(counts) == 2  # half_open_max_calls=2 of 12 attempts in 3 processes


@pytest.mark.slow
def test_probe_success_closes_for_everyone(redis_url: str, prefix: str) -> None:
    policy = klayengo.CircuitBreakerPolicy(consecutive_failures=1, open_duration=0.2)
    status = {"code": 503}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status["code"])

    one = klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    two = klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    a = klayengo.ResilientClient(
        transport=httpx.MockTransport(handler),
        backend=one,
        breaker=policy,
        retry=None,
        metrics=False,
    )
    b = klayengo.ResilientClient(
        transport=httpx.MockTransport(handler),
        backend=two,
        breaker=policy,
        retry=None,
        metrics=False,
    )
    with a, b, one, two:
        assert a.get(TARGET).status_code == 503  # trips and publishes
        with pytest.raises(klayengo.CircuitOpenError):
            b.get(TARGET)
        time.sleep(0.25)
        status["code"] = 200
        assert a.get(TARGET).status_code == 200  # a's probe succeeds: closed for everyone
        assert a.breaker_state(TARGET) == "closed"
        assert b.get(TARGET).status_code == 200
        assert b.breaker_state(TARGET) == "closed"


# -- rate limits ----------------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_share_one_limit_through_their_clients(redis_url: str, prefix: str) -> None:
    """4 processes x 4 threads, one 200/s limit, 5 s: aggregate within 2 %, and no
    window holds more starts than the burst bound allows (with the sleeps' overshoot)."""
    rate, burst, duration = 200.0, 5, 5.0
    start_at = time.time() + 2.0  # time for the spawned interpreters to start
    until = start_at + duration
    with spawn().Pool(4) as pool:
        results = pool.starmap(
            workers.client_limited_starts,
            [(redis_url, prefix, rate, burst, start_at, until, 4)] * 4,
        )
    assert sum(errors for _, errors in results) == 0
    assert all(found for found, _ in results), "every process got a share"
    starts = sorted(t for found, _ in results for t in found)
    aggregate = len(starts) / duration
    assert abs(aggregate - rate) / rate <= 0.02, aggregate
    # A start is seen a little after its slot (the sleep overshoots, the thread is
    # scheduled late): its slot lies in [seen - overshoot, seen].
    overshoot = 0.02
    assert max_excess_between([(t - overshoot, t) for t in starts], rate, burst) <= 1e-6


def test_a_cancelled_waiter_gives_back_the_last_slot(redis_url: str, prefix: str) -> None:
    transport, _ = counting()
    policy = klayengo.RateLimitPolicy(rate=2)  # one every 0.5 s
    with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend,
        klayengo.ResilientClient(
            transport=transport, backend=backend, rate_limit=policy, retry=None, metrics=False
        ) as client,
    ):
        client.get(TARGET)
        stores = client._klayengo.stores
        waiting = stores.limits.reserve(
            "default|http://api.example", 0.5, 1, None
        )  # the next slot, 0.5 s away
        assert waiting.ticket is not None and waiting.wait > 0.4
        waiting.ticket.cancel()  # the latest reservation: given back
        again = stores.limits.reserve("default|http://api.example", 0.5, 1, None)
        assert again.ticket is not None and abs(again.wait - waiting.wait) < 0.05
        later = stores.limits.reserve("default|http://api.example", 0.5, 1, None)
        assert later.ticket is not None
        again.ticket.cancel()  # not the latest: its slot stays spent
        last = stores.limits.reserve("default|http://api.example", 0.5, 1, 0)
        assert not last.admitted and last.wait > 1.3


# -- Redis down, hung, restarted ------------------------------------------------------


@pytest.mark.slow
def test_requests_keep_working_while_redis_is_down_and_sharing_resumes(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeout, cooldown = 0.1, 0.3
    registry = CollectorRegistry()
    one = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    two = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    transport, _ = counting()
    policy = klayengo.CircuitBreakerPolicy(consecutive_failures=1, open_duration=30)
    a = klayengo.ResilientClient(
        transport=transport,
        backend=one,
        breaker=policy,
        retry=None,
        rate_limit=klayengo.RateLimitPolicy(rate=1000, burst=100),
        metrics=klayengo.MetricsPolicy(registry=registry),
    )
    b = klayengo.ResilientClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(503)),
        backend=two,
        breaker=policy,
        retry=None,
        metrics=False,
    )
    with a, b:
        assert a.get(TARGET).status_code == 200
        own_redis.stop()
        with caplog.at_level(logging.DEBUG, logger="klayengo"):
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # several cool-downs' worth of traffic
                started = time.monotonic()
                assert a.get(TARGET).status_code == 200  # local state
                assert time.monotonic() - started < timeout + SLACK
                time.sleep(0.01)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert backend_errors(registry) >= 1
        own_redis.start()  # same port, empty data
        time.sleep(cooldown)
        a.get(TARGET)  # the trial call: sharing resumes
        assert b.get(TARGET).status_code == 503  # b trips and publishes
        deadline = time.monotonic() + 2 * cooldown + 1.0
        while True:  # b's backend may still be in its cool-down
            try:
                a.get(TARGET)
            except klayengo.CircuitOpenError:
                break
            assert time.monotonic() < deadline, "sharing did not resume"
            b.reset_breaker(TARGET)
            assert b.get(TARGET).status_code == 503
            time.sleep(0.05)
    one.close()
    two.close()


def test_a_hung_redis_delays_a_request_by_one_timeout_at_most(
    own_redis: RedisServer, prefix: str
) -> None:
    timeout = 0.1
    transport, _ = counting()
    backend = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    with klayengo.ResilientClient(
        transport=transport,
        backend=backend,
        retry=None,
        rate_limit=klayengo.RateLimitPolicy(rate=1000, burst=10),
        metrics=False,
    ) as client:
        client.get(TARGET)  # connected
        own_redis.pause()  # accepts nothing, answers nothing
        try:
            took = []
            for _ in range(5):
                started = time.monotonic()
                assert client.get(TARGET).status_code == 200
                took.append(time.monotonic() - started)
        finally:
            own_redis.resume()
    backend.close()
    assert timeout * 0.9 <= took[0] < timeout + SLACK  # one store call waited, then local
    assert max(took[1:]) < 0.05  # in the cool-down: no waiting at all


def test_credentials_never_appear(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-S3cret"
    server = RedisServer(password=secret)
    server.start()
    registry = CollectorRegistry()
    url = f"redis://default:{secret}@127.0.0.1:{server.port}/0"
    backend = klayengo.RedisBackend(url, prefix=prefix, timeout=0.2, cooldown=0.0)
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="klayengo"),
            klayengo.ResilientClient(
                transport=httpx.MockTransport(lambda request: httpx.Response(503)),
                backend=backend,
                retry=None,
                breaker=klayengo.CircuitBreakerPolicy(consecutive_failures=1),
                rate_limit=klayengo.RateLimitPolicy(rate=1, max_wait=0),
                metrics=klayengo.MetricsPolicy(registry=registry),
            ) as client,
        ):
            client.get(TARGET)
            texts = []
            for _ in range(2):
                try:
                    client.get(TARGET)
                except httpx.HTTPError as exc:
                    texts.append(f"{exc!s} {exc!r}")
            server.stop()
            client.reset_breaker(TARGET)
            try:
                client.get(TARGET)
                client.get(TARGET)
            except httpx.HTTPError as exc:
                texts.append(f"{exc!s} {exc!r}")
            assert backend_errors(registry) >= 1
        texts.append(generate_latest(registry).decode())
        texts.append(repr(backend))
        texts += [r.getMessage() + repr(r.__dict__) for r in caplog.records]
        assert any("using local state" in t for t in texts)
        for text in texts:
            assert secret not in text
    finally:
        server.stop()
        backend.close()


# -- async twins (asyncio and trio) -----------------------------------------------------


@pytest.mark.anyio
async def test_async_clients_share_breakers_and_limits(redis_url: str, prefix: str) -> None:
    policy = klayengo.CircuitBreakerPolicy(consecutive_failures=1, open_duration=30)
    calls: list[str] = []

    async def failing(request: httpx.Request) -> httpx.Response:
        calls.append("a")
        return httpx.Response(503)

    async def ok(request: httpx.Request) -> httpx.Response:
        calls.append("b")
        return httpx.Response(200)

    async with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as one,
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as two,
        klayengo.AsyncResilientClient(
            transport=httpx.MockTransport(failing),
            backend=one,
            breaker=policy,
            retry=None,
            metrics=False,
        ) as a,
        klayengo.AsyncResilientClient(
            transport=httpx.MockTransport(ok),
            backend=two,
            breaker=policy,
            retry=None,
            metrics=False,
            rate_limit=klayengo.RateLimitPolicy(rate=1, max_wait=0),
        ) as b,
    ):
        assert (await a.get(TARGET)).status_code == 503  # a trips
        with pytest.raises(klayengo.CircuitOpenError):
            await b.get(TARGET)  # b fails fast on its next request
        assert calls == ["a"]
        # The limit is in Redis too: a second client of the same name shares it.
        async with klayengo.AsyncResilientClient(
            transport=httpx.MockTransport(ok),
            backend=one,
            breaker=None,
            metrics=False,
            rate_limit=klayengo.RateLimitPolicy(rate=1, max_wait=0),
        ) as c:
            assert (await c.get("http://other.example/")).status_code == 200
            with pytest.raises(klayengo.RateLimitExceeded):
                await b.get("http://other.example/", extensions={"klayengo": {"breaker": False}})


@pytest.mark.anyio
async def test_async_cancelled_waiter_gives_its_slot_back(redis_url: str, prefix: str) -> None:
    async with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend,
        klayengo.AsyncResilientClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(200)),
            backend=backend,
            retry=None,
            breaker=None,
            metrics=False,
            rate_limit=klayengo.RateLimitPolicy(rate=2),
        ) as client,
    ):
        await client.get(TARGET)
        with anyio.move_on_after(0.1):
            await client.get(TARGET)  # waits for its slot 0.5 s away, then is cancelled
        stores = client._klayengo.stores
        again = await stores.limits.areserve("default|http://api.example", 0.5, 1, None)
        assert 0.2 < again.wait <= 0.45  # the cancelled waiter's slot, not the one after


@pytest.mark.anyio
async def test_async_requests_on_a_hung_redis_wait_one_timeout(
    own_redis: RedisServer, prefix: str
) -> None:
    timeout = 0.1
    backend = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    async with klayengo.AsyncResilientClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
        backend=backend,
        retry=None,
        metrics=False,
        rate_limit=klayengo.RateLimitPolicy(rate=10_000, burst=100),
    ) as client:
        await client.get(TARGET)
        own_redis.pause()
        took: list[float] = []

        async def one() -> None:
            started = time.monotonic()
            assert (await client.get(TARGET)).status_code == 200
            took.append(time.monotonic() - started)

        try:
            async with anyio.create_task_group() as tasks:
                for _ in range(50):
                    tasks.start_soon(one)
        finally:
            own_redis.resume()
    await backend.aclose()
    assert len(took) == 50
    assert max(took) < 2 * timeout + SLACK, max(took)
