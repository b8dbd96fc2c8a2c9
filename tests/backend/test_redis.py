"""RedisBackend against real redis-server processes (see conftest.py)."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from klayengo import RedisBackend
from klayengo._backends.redis import redact_url
from klayengo._core.backend import (
    Backend,
    BreakerSignals,
    CacheStore,
    RateLimits,
    Stores,
)
from klayengo._core.cache import CacheEntry
from klayengo._core.clock import SYSTEM_CLOCK
from tests.backend import workers
from tests.backend.conftest import RedisServer, free_port
from tests.backend.contract import check_cache_store, entry
from tests.backend.workers import CountingEvents

pytestmark = pytest.mark.redis

#: Scheduling slack on a busy 2-core machine for real-time bounds.
SLACK = 0.25


@pytest.fixture
def backend(redis_url: str, prefix: str) -> Iterator[RedisBackend]:
    with RedisBackend(redis_url, prefix=prefix, timeout=0.5) as found:
        yield found


@pytest.fixture
def events() -> CountingEvents:
    return CountingEvents()


@pytest.fixture
def stores(backend: RedisBackend, events: CountingEvents) -> Stores:
    return backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)


def spawn() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def test_import_klayengo_does_not_import_redis() -> None:
    code = "import sys, klayengo; klayengo.RedisBackend; sys.exit('redis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_implements_the_interfaces(backend: RedisBackend, stores: Stores) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(stores.signals, BreakerSignals)
    assert isinstance(stores.limits, RateLimits)
    assert isinstance(stores.cache, CacheStore)


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        RedisBackend("redis://localhost", timeout=0)
    with pytest.raises(ValueError, match="connect_timeout must be > 0"):
        RedisBackend("redis://localhost", connect_timeout=-1)
    with pytest.raises(ValueError, match="cooldown must be >= 0"):
        RedisBackend("redis://localhost", cooldown=-1)
    with pytest.raises(ValueError, match="max_connections"):
        RedisBackend("redis://localhost", max_connections=0)
    with pytest.raises(TypeError, match="url must be a str"):
        RedisBackend(b"redis://localhost")  # type: ignore[arg-type]


# -- breaker signal -------------------------------------------------------------------


def test_signal_lifecycle_on_server_time(stores: Stores, events: CountingEvents) -> None:
    signals = stores.signals
    assert signals.get_signal("api.example") is None
    opened = signals.publish_open("api.example", 0.3)
    assert opened.state == "open" and opened.remaining == pytest.approx(0.3)
    seen = signals.get_signal("api.example")
    assert seen is not None and seen.state == "open" and seen.generation == opened.generation
    assert 0 < seen.remaining <= 0.3
    assert signals.acquire_probe("api.example", 1, 5.0) is None  # still open
    time.sleep(0.3)
    half = signals.get_signal("api.example")
    assert half is not None and half.state == "half_open" and half.remaining == 0.0
    assert half.opened_ago >= 0.3
    token = signals.acquire_probe("api.example", 1, 5.0)
    assert token is not None
    assert signals.acquire_probe("api.example", 1, 5.0) is None
    signals.release_probe("api.example", token)
    token = signals.acquire_probe("api.example", 1, 5.0)
    assert token is not None
    signals.publish_closed("api.example")
    assert signals.get_signal("api.example") is None
    # Closing dropped the lease; the generation survives the close.
    again = signals.publish_open("api.example", 0.0)
    assert again.generation == opened.generation + 1
    assert signals.acquire_probe("api.example", 1, 5.0) is not None
    assert not events.errors


def test_another_process_sees_the_open_signal_on_its_next_read(
    stores: Stores, redis_url: str, prefix: str
) -> None:
    assert stores.signals.get_signal("h") is None
    with spawn().Pool(1) as pool:
        generation = pool.apply(workers.publish_open, (redis_url, prefix, "h", 30.0))
    seen = stores.signals.get_signal("h")
    assert seen is not None
    assert (seen.state, seen.generation) == ("open", generation)
    assert 29.0 < seen.remaining <= 30.0


@pytest.mark.slow
def test_exactly_max_calls_probes_across_processes_and_threads(
    stores: Stores, redis_url: str, prefix: str
) -> None:
    stores.signals.publish_open("h", 0.0)  # half-open at once
    start_at = time.time() + 1.0
    granted_here: list[bool] = []

    def grab() -> None:
        while time.time() < start_at:
            time.sleep(0.001)
        granted_here.extend(
            stores.signals.acquire_probe("h", 2, 30.0) is not None for _ in range(20)
        )

    with spawn().Pool(4) as pool:
        pending = pool.starmap_async(
            workers.grab_probes, [(redis_url, prefix, "h", start_at, 20)] * 4
        )
        threads = [threading.Thread(target=grab) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        granted = sum(pending.get(timeout=60)) + sum(granted_here)
    assert granted == 2  # half_open_max_calls=2 of 160 attempts


@pytest.mark.slow
def test_a_crashed_probers_lease_expires(stores: Stores, redis_url: str, prefix: str) -> None:
    stores.signals.publish_open("h", 0.0)
    process = spawn().Process(target=workers.probe_and_crash, args=(redis_url, prefix, "h", 1.0))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert stores.signals.acquire_probe("h", 1, 1.0) is None  # the dead process holds it
    time.sleep(1.0)
    assert stores.signals.acquire_probe("h", 1, 1.0) is not None


# -- rate limits ----------------------------------------------------------------------


def test_gcra_in_one_script(stores: Stores, events: CountingEvents) -> None:
    limits = stores.limits
    first = [limits.reserve("k", 0.05, 3, None) for _ in range(5)]
    assert [r.admitted for r in first] == [True] * 5
    # Three at once, then one per 50 ms (minus the little time the calls took).
    assert [r.wait for r in first[:3]] == [0.0, 0.0, 0.0]
    assert 0.04 < first[3].wait <= 0.05 and 0.09 < first[4].wait <= 0.1
    refused = limits.reserve("k", 0.05, 3, 0.0)
    assert not refused.admitted and 0.09 < refused.wait <= 0.15
    limits.pause("k", 2.0)
    limits.pause("k", 0.5)  # never shortens the pause in force
    paused = [limits.reserve("k", 0.05, 3, None).wait for _ in range(2)]
    assert 1.9 < paused[0] <= 2.0
    assert 0 <= paused[0] - paused[1] < 0.04  # the burst is there after the pause
    assert limits.reserve("other", 0.05, 1, 0).admitted
    assert not events.errors


@pytest.mark.slow
def test_four_processes_share_one_limit(redis_url: str, prefix: str) -> None:
    """4 processes, one 200/s limit, 5 s: aggregate within 2 %, burst bound never exceeded."""
    rate, burst, duration = 200.0, 5, 5.0
    start_at = time.time() + 2.0  # time for the spawned interpreters to start
    until = start_at + duration
    with spawn().Pool(4) as pool:
        results = pool.starmap(
            workers.limited_starts,
            [(redis_url, prefix, "api", rate, burst, start_at, until)] * 4,
        )
    assert sum(errors for _, errors in results) == 0
    assert all(found for found, _ in results), "every process got a share"
    slots = sorted(slot for found, _ in results for slot in found)
    aggregate = len(slots) / duration
    assert abs(aggregate - rate) / rate <= 0.02, aggregate
    assert max_excess_between(slots, rate, burst) <= 1e-6


def max_excess_between(
    slots: list[tuple[float, float]], rate: float, burst: int, longest: float = 0.25
) -> float:
    """The largest proven excess over ``burst + rate * W`` of windows up to ``longest``.

    Slot k is known to lie in ``[lo_k, hi_k]``. For a window ``[lo_i, hi]``, every
    slot with ``lo_k >= lo_i`` and ``hi_k <= hi`` certainly started inside it, so
    more of them than ``burst + rate * (hi - lo_i)`` proves a violation. (Longer
    windows are covered by the aggregate rate.)
    """
    ordered = sorted(slots)
    worst = float("-inf")
    for i, (lo_i, _) in enumerate(ordered):
        his = sorted(hi for lo, hi in ordered[i:] if lo <= lo_i + longest)
        for count, hi in enumerate(his, start=1):
            worst = max(worst, count - burst - rate * (hi - lo_i))
    return worst


def test_the_bound_check_can_fail() -> None:
    """Two processes each limited on their own (the bug the shared script prevents)."""
    own = [(i * 0.005, i * 0.005) for i in range(100)]
    doubled = sorted(own + own)
    assert max_excess_between(own, 200.0, 1) <= 1e-6
    assert max_excess_between(doubled, 200.0, 1) > 50


# -- cache ----------------------------------------------------------------------------


def test_cache_round_trip_with_ttl(stores: Stores, events: CountingEvents) -> None:
    check_cache_store(stores.cache, SYSTEM_CLOCK, time.sleep)
    assert not events.errors


def test_cache_keys_and_values_in_redis_hold_no_url(
    stores: Stores, shared_redis: RedisServer, prefix: str
) -> None:
    key = "GET https://api.example/items?token=hunter2"
    stores.cache.set(key, entry(SYSTEM_CLOCK, key, 60))
    found = stores.cache.get(key)
    assert found is not None and found.key == key
    keys = shared_redis.command("KEYS", f"{prefix}*")
    assert prefix.encode() + b"c:{" in keys
    assert b"hunter2" not in keys and b"api.example" not in keys
    name = next(k for k in keys.split(b"\r\n") if b"c:{" in k).decode()
    value = shared_redis.command("GET", name)
    assert value.startswith(b"$") and b"klc1" in value
    assert b"hunter2" not in value and b"api.example/items" not in value


# -- async twins ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_operations(redis_url: str, prefix: str) -> None:
    events = CountingEvents()
    async with RedisBackend(redis_url, prefix=prefix, timeout=0.5) as backend:
        stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)
        signals, limits, cache = stores.signals, stores.limits, stores.cache
        assert await signals.aget_signal("h") is None
        opened = await signals.apublish_open("h", 0.0)
        seen = await signals.aget_signal("h")
        assert seen is not None and seen.generation == opened.generation
        token = await signals.aacquire_probe("h", 1, 5.0)
        assert token is not None
        assert await signals.aacquire_probe("h", 1, 5.0) is None
        await signals.arelease_probe("h", token)
        await signals.apublish_closed("h")
        assert await signals.aget_signal("h") is None
        assert (await limits.areserve("k", 1.0, 1, None)).wait == 0.0
        refused = await limits.areserve("k", 1.0, 1, 0.0)
        assert not refused.admitted and 0.9 < refused.wait <= 1.0
        await limits.apause("k", 5.0)
        assert (await limits.areserve("k", 1.0, 1, None)).wait > 4.9
        await cache.aset("c", entry(SYSTEM_CLOCK, "c", 10, b"\x00\xff"))
        found = await cache.aget("c")
        assert isinstance(found, CacheEntry) and found.body == b"\x00\xff"
        await cache.adelete("c")
        assert await cache.aget("c") is None
    assert not events.errors


def test_one_backend_serves_successive_event_loops(redis_url: str, prefix: str) -> None:
    """redis.asyncio connections belong to one loop: each loop gets its own client,
    closed when ``asyncio.run`` ends the loop (a leak fails: warnings are errors)."""
    import asyncio

    events = CountingEvents()
    backend = RedisBackend(redis_url, prefix=prefix, timeout=0.5)
    stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)

    async def use() -> int:
        opened = await stores.signals.apublish_open("h", 60.0)
        return opened.generation

    assert asyncio.run(use()) == 1
    assert asyncio.run(use()) == 2  # a new loop, the old one closed
    assert not events.errors
    # Loop 1's client left the backend when loop 2 got one: collected unclosed, it
    # would warn here.
    gc.collect()


# -- flushed, down, slow --------------------------------------------------------------


def test_flushed_redis_keeps_working(
    stores: Stores, events: CountingEvents, shared_redis: RedisServer
) -> None:
    stores.signals.publish_open("h", 60.0)
    stores.limits.reserve("k", 1.0, 1, None)
    stores.cache.set("c", entry(SYSTEM_CLOCK, "c", 60))
    shared_redis.command("SCRIPT", "FLUSH")
    shared_redis.command("FLUSHALL")
    assert stores.signals.get_signal("h") is None
    assert stores.limits.reserve("k", 1.0, 1, 0).admitted
    assert stores.cache.get("c") is None
    stores.signals.publish_open("h", 60.0)
    assert stores.signals.get_signal("h") is not None
    assert not events.errors


def _timed(fn: object, *args: object) -> tuple[object, float]:
    started = time.monotonic()
    result = fn(*args)  # type: ignore[operator]
    return result, time.monotonic() - started


@pytest.mark.slow
def test_fails_open_while_down_and_shares_again_after_restart(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    timeout, cooldown = 0.1, 0.3
    one_events, other_events = CountingEvents(), CountingEvents()
    one = RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    other = RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    a = one.bind(clock=SYSTEM_CLOCK, events=one_events, http=httpx)
    b = other.bind(clock=SYSTEM_CLOCK, events=other_events, http=httpx)
    a.signals.publish_open("h", 60.0)
    assert b.signals.get_signal("h") is not None  # shared

    own_redis.stop()
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # several cool-downs' worth of traffic
            signal, took = _timed(a.signals.get_signal, "h")
            assert took < timeout + SLACK
            assert signal is None  # the local fallback knows of no opening
            assert a.limits.reserve("k", 0.001, 1, None).admitted
            a.cache.set("c", entry(SYSTEM_CLOCK, "c", 60, b"local"))
            found = a.cache.get("c")
            assert isinstance(found, CacheEntry) and found.body == b"local"
            time.sleep(0.01)
        # While Redis is away, breakers decide locally: no signal, every lease granted.
        assert a.signals.publish_open("local", 60.0).generation == 0
        assert a.signals.get_signal("local") is None
        assert a.signals.acquire_probe("local", 1, 1.0) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "using local state" in warnings[0].getMessage()
    # Only real attempts count: about one per cool-down, not one per call.
    assert 1 <= len(one_events.errors) <= 1.0 / cooldown + 2
    assert set(one_events.errors) <= {"signal_get", "limit_reserve", "cache_set", "cache_get"}

    own_redis.start()  # same port, empty data
    time.sleep(cooldown)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="klayengo"):
        a.signals.publish_open("h", 60.0)
        a.signals.get_signal("h")  # the first call after the cool-down reaches Redis
        time.sleep(cooldown)
        b.signals.get_signal("h")
        seen = b.signals.get_signal("h")
    assert seen is not None and seen.state == "open"  # sharing resumed
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    # The outage's local state is gone.
    assert a.signals.get_signal("local") is None
    one.close()
    other.close()


def test_a_hung_redis_costs_at_most_one_timeout(own_redis: RedisServer, prefix: str) -> None:
    timeout, cooldown = 0.1, 5.0
    events = CountingEvents()
    backend = RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=cooldown)
    stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)
    stores.limits.reserve("k", 1.0, 5, None)  # connected
    own_redis.pause()  # accepts nothing, answers nothing
    try:
        reservation, took = _timed(stores.limits.reserve, "k", 1.0, 5, None)
        assert reservation.admitted  # type: ignore[attr-defined]
        assert timeout * 0.9 <= took < timeout + SLACK
        for _ in range(20):  # within the cool-down: no waiting at all
            _, took = _timed(stores.signals.get_signal, "h")
            assert took < 0.02
        assert events.errors == ["limit_reserve"]
    finally:
        own_redis.resume()
    backend.close()


@pytest.mark.anyio
async def test_async_fail_open_is_bounded_by_the_timeout(
    own_redis: RedisServer, prefix: str
) -> None:
    timeout = 0.1
    events = CountingEvents()
    backend = RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)
    assert await stores.signals.aget_signal("h") is None
    own_redis.pause()
    try:
        started = time.monotonic()
        reservation = await stores.limits.areserve("k", 1.0, 1, None)
        took = time.monotonic() - started
        assert reservation.admitted
        assert took < timeout + SLACK
        started = time.monotonic()
        await stores.cache.aset("c", entry(SYSTEM_CLOCK, "c", 10))
        assert await stores.cache.aget("c") is not None  # local
        assert time.monotonic() - started < 0.05
        assert events.errors == ["limit_reserve"]
    finally:
        own_redis.resume()
    await backend.aclose()


@pytest.mark.anyio
async def test_many_tasks_on_a_hung_redis_wait_one_timeout(
    own_redis: RedisServer, prefix: str
) -> None:
    """Hundreds of concurrent tasks: none waits much longer than one timeout (on trio
    the calls queue for worker threads; a call that queued a whole timeout gives up)."""
    timeout = 0.1
    backend = RedisBackend(own_redis.url, prefix=prefix, timeout=timeout, cooldown=5.0)
    stores = backend.bind(clock=SYSTEM_CLOCK, events=CountingEvents())
    assert await stores.signals.aget_signal("h") is None
    own_redis.pause()
    took: list[float] = []

    async def one() -> None:
        started = time.monotonic()
        assert (await stores.limits.areserve("k", 0.001, 1, None)).admitted
        took.append(time.monotonic() - started)

    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(300):
                tasks.start_soon(one)
    finally:
        own_redis.resume()
    await backend.aclose()
    assert len(took) == 300
    assert max(took) < 2 * timeout + SLACK, max(took)


def test_nothing_listening_fails_open_at_once(prefix: str) -> None:
    events = CountingEvents()
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, timeout=1.0)
    stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)
    signal, took = _timed(stores.signals.publish_open, "h", 10.0)
    assert signal.state == "open"  # type: ignore[attr-defined]
    assert took < 0.5  # refused, not timed out
    assert events.errors == ["signal_open"]


def test_a_failing_events_sink_does_not_break_the_fallback(prefix: str) -> None:
    class Broken(CountingEvents):
        def backend_error(self, operation: str) -> None:
            raise RuntimeError("sink bug")

    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix)
    assert backend.bind(clock=SYSTEM_CLOCK, events=Broken(), http=httpx).cache.get("x") is None


# -- credentials ----------------------------------------------------------------------


def test_redact_url() -> None:
    assert redact_url("redis://user:secret@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("redis://:secret@host") == "redis://***@host"
    assert redact_url("rediss://host:1/2?password=secret") == "rediss://host:1/2"
    assert redact_url("unix:///tmp/r.sock?password=secret&db=1") == "unix:///tmp/r.sock"
    assert redact_url("unix://user@/tmp/r.sock") == "unix://***@/tmp/r.sock"
    assert redact_url("redis://host") == "redis://host"


def test_credentials_never_shown(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-Pa55"
    server = RedisServer(password=secret)
    try:
        server.start()
        url = f"redis://default:{secret}@127.0.0.1:{server.port}/0"
        events = CountingEvents()
        backend = RedisBackend(url, prefix=prefix, timeout=0.5, cooldown=0.0)
        assert secret not in repr(backend) and "default" not in repr(backend)
        stores = backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx)
        stores.signals.publish_open("h", 10.0)  # authenticated and working
        assert stores.signals.get_signal("h") is not None
        assert not events.errors
        wrong = RedisBackend(
            f"redis://default:{secret}-wrong@127.0.0.1:{server.port}/0", prefix=prefix
        )
        with caplog.at_level(logging.DEBUG, logger="klayengo"):
            wrong.bind(clock=SYSTEM_CLOCK, events=events).signals.get_signal("h")
            server.stop()
            stores.signals.get_signal("h")
            stores.signals.get_signal("h")
        assert events.errors == ["signal_get", "signal_get", "signal_get"]
        assert caplog.records
        for record in caplog.records:
            text = record.getMessage() + repr(record.__dict__)
            assert secret not in text
        with pytest.raises(ValueError) as raised:
            RedisBackend(f"redis://default:{secret}@127.0.0.1:notaport/0")
        assert secret not in str(raised.value) and "***@" in str(raised.value)
    finally:
        server.stop()


def test_only_a_trial_call_ends_an_outage() -> None:
    from klayengo._backends.redis._health import NORMAL, SKIP, TRIAL, Health

    health = Health(cooldown=0.05)
    assert health.should_try() == NORMAL
    assert health.failed() is True
    assert health.failed() is False  # the same outage
    # A call sent before the outage and answered late does not end it.
    assert health.succeeded(NORMAL) is False
    assert health.should_try() == SKIP
    time.sleep(0.05)
    assert health.should_try() == TRIAL
    assert health.should_try() == SKIP  # one trial per cool-down
    assert health.succeeded(TRIAL) is True
    assert health.should_try() == NORMAL
