"""The response cache shared through ``RedisBackend``, end to end through the clients,
against real redis-server processes (see conftest.py)."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import klayengo
from tests.backend import workers
from tests.backend.conftest import RedisServer
from tests.backend.workers import backend_errors

pytestmark = pytest.mark.redis

TARGET = "http://api.example/items"
SLACK = 0.25
FRESH = {"Cache-Control": "max-age=60"}


class Upstream:
    """A MockTransport handler that counts its requests and answers as told."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = FRESH if headers is None else headers
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        body = f"#{len(self.seen)} {request.headers.get('authorization', '-')}".encode()
        return httpx.Response(self.status, headers=self.headers, content=body)

    @property
    def calls(self) -> int:
        return len(self.seen)


def client(
    backend: klayengo.RedisBackend, upstream: Upstream, **kwargs: object
) -> klayengo.ResilientClient:
    options: dict[str, object] = {"cache": klayengo.CachePolicy(), "metrics": False}
    options.update(kwargs)
    return klayengo.ResilientClient(
        transport=httpx.MockTransport(upstream),
        backend=backend,
        retry=None,
        breaker=None,
        **options,  # type: ignore[arg-type]
    )


def redis_keys(server: RedisServer, pattern: str) -> list[str]:
    reply = server.command("KEYS", pattern).split(b"\r\n")
    return [line.decode() for line in reply if line and line[:1] not in (b"*", b"$")]


def pttl_ms(server: RedisServer, key: str) -> int:
    return int(server.command("PTTL", key).strip().lstrip(b":"))


def cache_result(response: httpx.Response) -> object:
    return response.extensions["klayengo"]["cache"]


@pytest.fixture
def backends(redis_url: str, prefix: str) -> Iterator[tuple[klayengo.RedisBackend, ...]]:
    """Two backends on one Redis and prefix: two processes, as far as the cache sees."""
    one = klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    two = klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    with one, two:
        yield one, two


# -- sharing ---------------------------------------------------------------------------


def test_another_process_cached_it_this_one_hits_without_going_upstream(
    redis_url: str, prefix: str
) -> None:
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        assert pool.apply(workers.client_caches, (redis_url, prefix, TARGET, {})) == 1
    upstream = Upstream()
    with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend,
        client(backend, upstream) as mine,
    ):
        response = mine.get(TARGET)
        assert (cache_result(response), response.content) == ("hit", b"from another process")
        assert response.extensions["klayengo"]["attempts"] == 0
        assert response.headers["cache-control"] == "max-age=60"
    assert upstream.calls == 0


def test_vary_and_credentials_key_entries_across_clients(
    backends: tuple[klayengo.RedisBackend, ...],
) -> None:
    one, two = backends
    vary = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
    a_up, b_up = Upstream(headers=vary), Upstream(headers=vary)
    with client(one, a_up) as a, client(two, b_up) as b:
        alice = {"Authorization": "Bearer alice", "Accept-Language": "en"}
        assert cache_result(a.get(TARGET, headers=alice)) == "miss"
        assert cache_result(b.get(TARGET, headers=alice)) == "hit"  # same credential, same language
        assert b_up.calls == 0
        # A different credential, another language, or none at all never get it.
        bob = {"Authorization": "Bearer bob", "Accept-Language": "en"}
        response = b.get(TARGET, headers=bob)
        assert (cache_result(response), response.content) == ("miss", b"#1 Bearer bob")
        assert cache_result(b.get(TARGET, headers={**alice, "Accept-Language": "fr"})) == "miss"
        assert cache_result(b.get(TARGET, headers={"Accept-Language": "en"})) == "miss"
        assert b_up.calls == 3
        # And what b stored is a's to use now.
        assert a.get(TARGET, headers=bob).content == b"#1 Bearer bob"
        assert a_up.calls == 1


def test_a_cache_secret_shares_only_with_the_same_secret(redis_url: str, prefix: str) -> None:
    alice = {"Authorization": "Bearer alice"}
    ups = [Upstream() for _ in range(3)]
    with (
        klayengo.RedisBackend(redis_url, prefix=prefix, cache_secret="s3cret") as one,
        klayengo.RedisBackend(redis_url, prefix=prefix, cache_secret=b"s3cret") as two,
        klayengo.RedisBackend(redis_url, prefix=prefix, cache_secret="other") as three,
        client(one, ups[0]) as a,
        client(two, ups[1]) as b,
        client(three, ups[2]) as c,
    ):
        assert cache_result(a.get(TARGET, headers=alice)) == "miss"
        assert cache_result(b.get(TARGET, headers=alice)) == "hit"
        assert cache_result(c.get(TARGET, headers=alice)) == "miss"
        assert cache_result(c.get(TARGET)) == "miss"  # key names are keyed too
    assert [u.calls for u in ups] == [1, 0, 2]
    with pytest.raises(ValueError, match="cache_secret"):
        klayengo.RedisBackend(redis_url, cache_secret="")
    with pytest.raises(TypeError, match="cache_secret"):
        klayengo.RedisBackend(redis_url, cache_secret=1)  # type: ignore[arg-type]


def test_a_flushed_salt_is_put_back_with_the_one_in_use(
    backends: tuple[klayengo.RedisBackend, ...], shared_redis: RedisServer, prefix: str
) -> None:
    one, two = backends
    alice = {"Authorization": "Bearer alice"}
    with client(one, Upstream()) as a, client(two, Upstream()) as b:
        a.get(TARGET)
        b.get(TARGET)  # both now use the salt in Redis
        for key in redis_keys(shared_redis, f"{prefix}*"):
            shared_redis.command("DEL", key)  # as FLUSHALL would, for this prefix only
        a.get(TARGET, headers=alice)  # a's lookup puts its salt back, then stores
        later = klayengo.RedisBackend(shared_redis.url, prefix=prefix, timeout=0.5)
        upstream = Upstream()
        with later, client(later, upstream) as c:
            assert cache_result(b.get(TARGET, headers=alice)) == "hit"
            assert cache_result(c.get(TARGET, headers=alice)) == "hit"  # a new process too
        assert upstream.calls == 0


def test_unsafe_methods_invalidate_in_redis(
    backends: tuple[klayengo.RedisBackend, ...], shared_redis: RedisServer, prefix: str
) -> None:
    one, two = backends
    a_up = Upstream()
    with client(one, a_up) as a, client(two, Upstream()) as b:
        a.get(TARGET)
        assert cache_result(b.get(TARGET)) == "hit"
        assert b.post(TARGET).status_code == 200
        assert redis_keys(shared_redis, f"{prefix}c:*") == []
        assert cache_result(a.get(TARGET)) == "miss"
    assert a_up.calls == 2


# -- lifetimes --------------------------------------------------------------------------


def test_the_ttl_in_redis_is_freshness_plus_the_stale_window(
    backends: tuple[klayengo.RedisBackend, ...], shared_redis: RedisServer, prefix: str
) -> None:
    one, _ = backends
    headers = {"Cache-Control": "max-age=30, stale-if-error=90"}
    with client(one, Upstream(headers=headers)) as a:
        a.get(TARGET)
    (name,) = redis_keys(shared_redis, f"{prefix}c:*")
    assert 119_000 < pttl_ms(shared_redis, name) <= 120_000
    shared_redis.command("DEL", name)
    # An entry that can be revalidated (ETag) is kept longer, for a cheap 304.
    with client(one, Upstream(headers={**headers, "ETag": '"v1"'})) as a:
        a.get(TARGET)
    (name,) = redis_keys(shared_redis, f"{prefix}c:*")
    assert 629_000 < pttl_ms(shared_redis, name) <= 630_000  # 30 + max(90, 600)


def test_stale_if_error_from_an_entry_another_client_stored(
    backends: tuple[klayengo.RedisBackend, ...],
) -> None:
    one, two = backends
    stale_ok = {"Cache-Control": "max-age=0, stale-if-error=60"}
    failing = Upstream(status=503)
    with client(one, Upstream(headers=stale_ok)) as a, client(two, failing) as b:
        assert cache_result(a.get(TARGET)) == "miss"
        response = b.get(TARGET)
        assert (response.status_code, cache_result(response)) == (200, "stale")
        assert response.content == b"#1 -"

        def refused(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        with klayengo.ResilientClient(
            transport=httpx.MockTransport(refused),
            backend=two,
            retry=None,
            breaker=None,
            cache=klayengo.CachePolicy(),
            metrics=False,
        ) as c:
            assert cache_result(c.get(TARGET)) == "stale"
    assert failing.calls == 1


def test_a_fresh_entry_read_later_has_aged(backends: tuple[klayengo.RedisBackend, ...]) -> None:
    one, two = backends
    with (
        client(one, Upstream(headers={"Cache-Control": "max-age=1"})) as a,
        client(two, Upstream()) as b,
    ):
        a.get(TARGET)
        assert cache_result(b.get(TARGET)) == "hit"
        time.sleep(1.05)  # the freshness runs on Redis's clock, not the reader's
        assert cache_result(b.get(TARGET)) == "miss"


# -- size limits -------------------------------------------------------------------------


class _Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, size: int) -> None:
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self._size, 100):
            yield b"x" * min(100, self._size - start)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def test_bodies_over_max_entry_bytes_are_never_written(
    backends: tuple[klayengo.RedisBackend, ...], shared_redis: RedisServer, prefix: str
) -> None:
    one, _ = backends

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["size"])
        if request.url.params.get("stream"):
            return httpx.Response(200, headers=FRESH, stream=_Chunks(size))
        return httpx.Response(200, headers=FRESH, content=b"x" * size)

    with klayengo.ResilientClient(
        transport=httpx.MockTransport(handler),
        backend=one,
        cache=klayengo.CachePolicy(max_entry_bytes=1000),
        metrics=False,
    ) as a:
        for query in ("size=2000", "size=2000&stream=1", "size=1001&stream=1"):
            assert len(a.get(f"{TARGET}?{query}").content) > 1000
        assert redis_keys(shared_redis, f"{prefix}c:*") == []
        a.get(f"{TARGET}?size=1000&stream=1")  # at the limit: stored
        assert len(redis_keys(shared_redis, f"{prefix}c:*")) == 1


def test_a_corrupt_value_is_a_miss_not_an_outage(
    backends: tuple[klayengo.RedisBackend, ...], shared_redis: RedisServer, prefix: str
) -> None:
    one, _ = backends
    registry = CollectorRegistry()
    upstream = Upstream()
    with client(one, upstream, metrics=klayengo.MetricsPolicy(registry=registry)) as a:
        a.get(TARGET)
        (name,) = redis_keys(shared_redis, f"{prefix}c:*")
        shared_redis.command("SET", name, "klc1-not-json")
        assert cache_result(a.get(TARGET)) == "miss"
        assert cache_result(a.get(TARGET)) == "hit"  # written again, readable
    assert upstream.calls == 2
    assert backend_errors(registry) == 0


# -- Redis down ---------------------------------------------------------------------------


@pytest.mark.slow
def test_redis_stopped_mid_run_the_cache_keeps_working_locally(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeout, cooldown = 0.1, 0.3
    registry = CollectorRegistry()
    secret = "tok3n-in-query"
    target = f"http://api.example/items?token={secret}"
    one = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    two = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    a_up, b_up = Upstream(), Upstream()
    with (
        client(one, a_up, metrics=klayengo.MetricsPolicy(registry=registry)) as a,
        client(two, b_up) as b,
        caplog.at_level(logging.DEBUG, logger="klayengo"),
    ):
        a.get(target)
        own_redis.stop()
        results = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # several cool-downs' worth of traffic
            started = time.monotonic()
            response = a.get(target)
            assert time.monotonic() - started < timeout + SLACK
            results.append(cache_result(response))
            time.sleep(0.01)
        # The first request fetched again and kept it locally; then local hits.
        assert results[0] == "miss" and set(results[1:]) == {"hit"}, results
        assert a_up.calls == 2
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert backend_errors(registry) >= 1

        own_redis.start()  # same port, empty data
        time.sleep(cooldown)
        a.get(target)  # the trial call: sharing resumes; the entry is gone with the data
        assert a_up.calls == 3
        deadline = time.monotonic() + 2 * cooldown + 1.0
        while cache_result(b.get(target)) != "hit":  # b's backend may be cooling down
            assert time.monotonic() < deadline, "sharing did not resume"
            time.sleep(0.05)
    texts = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    texts.append(generate_latest(registry).decode())
    assert not [t for t in texts if secret in t]
    one.close()
    two.close()


def test_a_hung_redis_delays_a_cached_request_by_one_timeout_at_most(
    own_redis: RedisServer, prefix: str
) -> None:
    timeout = 0.1
    backend = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    upstream = Upstream()
    with client(backend, upstream) as a:
        a.get(TARGET)
        own_redis.pause()
        try:
            took = []
            for _ in range(3):
                started = time.monotonic()
                assert a.get(TARGET).status_code == 200
                took.append(time.monotonic() - started)
        finally:
            own_redis.resume()
    backend.close()
    assert took[0] < timeout + SLACK
    assert max(took[1:]) < 0.05  # in the cool-down: local state at once


def test_redis_credentials_never_appear_in_cache_logs(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = "hunter2-S3cret"
    server = RedisServer(password=password)
    server.start()
    url = f"redis://default:{password}@127.0.0.1:{server.port}/0"
    backend = klayengo.RedisBackend(url, prefix=prefix, timeout=0.2, cooldown=0.0)
    try:
        with caplog.at_level(logging.DEBUG, logger="klayengo"), client(backend, Upstream()) as a:
            a.get(TARGET)
            assert cache_result(a.get(TARGET)) == "hit"
            server.stop()
            a.get(TARGET)
            a.post(TARGET)
            a.get(TARGET)
        texts = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
        assert any("using local state" in t for t in texts)
        assert not [t for t in texts if password in t]
    finally:
        server.stop()
        backend.close()


# -- async twins (asyncio and trio) --------------------------------------------------------


def async_client(
    backend: klayengo.RedisBackend, upstream: Upstream, **kwargs: object
) -> klayengo.AsyncResilientClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        return upstream(request)

    return klayengo.AsyncResilientClient(
        transport=httpx.MockTransport(handler),
        backend=backend,
        retry=None,
        breaker=None,
        cache=klayengo.CachePolicy(),
        metrics=False,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_async_clients_share_entries_vary_and_invalidation(
    redis_url: str, prefix: str
) -> None:
    vary = {"Cache-Control": "max-age=60", "Vary": "Accept"}
    a_up, b_up = Upstream(headers=vary), Upstream(headers=vary)
    async with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as one,
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as two,
        async_client(one, a_up) as a,
        async_client(two, b_up) as b,
    ):
        json = {"Accept": "application/json", "Authorization": "Bearer alice"}
        assert cache_result(await a.get(TARGET, headers=json)) == "miss"
        response = await b.get(TARGET, headers=json)
        assert (cache_result(response), response.content) == ("hit", b"#1 Bearer alice")
        assert cache_result(await b.get(TARGET, headers={**json, "Accept": "text/html"})) == "miss"
        other = {**json, "Authorization": "Bearer bob"}
        assert cache_result(await b.get(TARGET, headers=other)) == "miss"
        assert b_up.calls == 2
        await b.delete(TARGET)  # invalidates for everyone
        assert cache_result(await a.get(TARGET, headers=json)) == "miss"
        assert a_up.calls == 2


@pytest.mark.anyio
async def test_async_streamed_bodies_are_stored_and_oversized_ones_are_not(
    redis_url: str, prefix: str, shared_redis: RedisServer
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=FRESH, stream=_Chunks(int(request.url.params["size"])))

    async with (
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as one,
        klayengo.RedisBackend(redis_url, prefix=prefix, timeout=0.5) as two,
        klayengo.AsyncResilientClient(
            transport=httpx.MockTransport(handler),
            backend=one,
            cache=klayengo.CachePolicy(max_entry_bytes=1000),
            metrics=False,
        ) as a,
        async_client(two, Upstream(status=503)) as b,
    ):
        assert len((await a.get(f"{TARGET}?size=1100")).content) == 1100
        assert redis_keys(shared_redis, f"{prefix}c:*") == []
        assert cache_result(await a.get(f"{TARGET}?size=1000")) == "miss"
        response = await b.get(f"{TARGET}?size=1000")
        assert (cache_result(response), len(response.content)) == ("hit", 1000)


@pytest.mark.anyio
async def test_async_stale_if_error_and_a_dead_redis(own_redis: RedisServer, prefix: str) -> None:
    timeout = 0.1
    stale_ok = {"Cache-Control": "max-age=0, stale-if-error=60"}
    one = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    two = klayengo.RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    upstream = Upstream(status=503)
    async with async_client(one, Upstream(headers=stale_ok)) as a, async_client(two, upstream) as b:
        await a.get(TARGET)
        assert cache_result(await b.get(TARGET)) == "stale"
        own_redis.stop()
        started = time.monotonic()
        response = await b.get(TARGET)  # nothing stale locally: the 503 as is
        assert response.status_code == 503 and cache_result(response) == "miss"
        assert time.monotonic() - started < timeout + SLACK
    await one.aclose()
    await two.aclose()
