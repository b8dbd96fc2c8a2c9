"""The in-memory backend and the pure GCRA functions (fake clock, no I/O)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayengo._core.backend import (
    Backend,
    BreakerSignals,
    CacheStore,
    MemoryBackend,
    RateLimits,
    Reservation,
)
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events
from tests.backend.contract import check_cache_store


class Recorder(Events):
    def __init__(self) -> None:
        self.evicted: list[int] = []
        self.sizes: list[tuple[int, int]] = []
        self.errors: list[str] = []

    def cache_evicted(self, count: int) -> None:
        self.evicted.append(count)

    def cache_size(self, entries: int, nbytes: int) -> None:
        self.sizes.append((entries, nbytes))

    def backend_error(self, operation: str) -> None:
        self.errors.append(operation)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_memory_backend_implements_the_interfaces(clock: FakeClock) -> None:
    backend = MemoryBackend()
    assert isinstance(backend, Backend)
    stores = backend.bind(clock=clock, events=Events())
    assert isinstance(stores.signals, BreakerSignals)
    assert isinstance(stores.limits, RateLimits)
    assert isinstance(stores.cache, CacheStore)
    assert repr(backend) == "MemoryBackend()"


# -- breaker signal -------------------------------------------------------------------


def test_signals_share_nothing_in_one_process(clock: FakeClock) -> None:
    """The local breaker is the state: no signal, generation 0, every lease granted."""
    signals = MemoryBackend().bind(clock=clock, events=Events()).signals
    assert signals.get_signal("http://h") is None
    opened = signals.publish_open("http://h", 10.0)
    assert (opened.state, opened.generation, opened.remaining) == ("open", 0, 10.0)
    assert signals.get_signal("http://h") is None
    tokens = [signals.acquire_probe("http://h", 1, 5.0) for _ in range(3)]
    assert None not in tokens  # the local breaker bounds its own probes
    signals.release_probe("http://h", "local")
    signals.publish_closed("http://h")


def test_waiters_move_up_when_one_gives_up(clock: FakeClock) -> None:
    """The memory store is the limiter core: FIFO tickets, give-back, pause re-plan."""
    limits = MemoryBackend().bind(clock=clock, events=Events()).limits
    assert limits.reserve("k", 1.0, 1, None).ticket is None  # the hot path
    waiters = [limits.reserve("k", 1.0, 1, None) for _ in range(3)]
    tickets = [w.ticket for w in waiters]
    assert [w.wait for w in waiters] == [1.0, 2.0, 3.0]
    assert all(t is not None for t in tickets)
    assert tickets[0] is not None and tickets[1] is not None and tickets[2] is not None
    woken: list[int] = []
    tickets[2].set_waker(lambda: woken.append(2))
    assert tickets[2].remaining() == 3.0  # the waiter sleeps until then
    tickets[1].cancel()
    assert woken == [2] and tickets[2].remaining() == 2.0  # moved up, and told
    limits.pause("k", 5.0)  # re-plans the waiters not yet due
    assert tickets[0].remaining() == 5.0 and tickets[2].remaining() == 6.0
    clock.advance(5.0)
    tickets[0].finish()
    assert limits.reserve("k", 1.0, 1, None).wait == 2.0  # after the re-planned queue


# -- rate limits ----------------------------------------------------------------------


def test_gcra_burst_then_one_per_interval(clock: FakeClock) -> None:
    limits = MemoryBackend().bind(clock=clock, events=Events()).limits
    waits = [limits.reserve("k", 0.1, 3, None) for _ in range(6)]
    assert all(r.admitted for r in waits)
    assert [round(r.wait, 9) for r in waits] == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]
    refused = limits.reserve("k", 0.1, 3, 0.35)
    assert not refused.admitted
    assert refused.wait == pytest.approx(0.4)  # the wait it would have had
    clock.advance(0.05)
    admitted = limits.reserve("k", 0.1, 3, 0.35)
    assert admitted.admitted and admitted.wait == pytest.approx(0.35)
    # Keys are independent.
    assert limits.reserve("other", 0.1, 1, 0).wait == 0.0


def test_fail_fast_rejection_reports_retry_after(clock: FakeClock) -> None:
    limits = MemoryBackend().bind(clock=clock, events=Events()).limits
    assert limits.reserve("k", 1.0, 1, 0).admitted
    refused = limits.reserve("k", 1.0, 1, 0)
    assert (refused.admitted, refused.wait) == (False, 1.0)
    # A refusal reserves nothing.
    clock.advance(1.0)
    assert limits.reserve("k", 1.0, 1, 0).admitted


def test_pause_delays_every_start_and_never_shortens(clock: FakeClock) -> None:
    limits = MemoryBackend().bind(clock=clock, events=Events()).limits
    limits.pause("k", 5.0)
    waits = [limits.reserve("k", 0.1, 3, None).wait for _ in range(4)]
    assert waits == pytest.approx([5.0, 5.0, 5.0, 5.1])  # the burst is there after it
    limits.pause("k", 1.0)  # shorter than the pause in force
    assert limits.reserve("k", 0.1, 3, None).wait == pytest.approx(5.2)
    refused = limits.reserve("other", 0.1, 3, 0.0)
    assert refused.admitted  # pauses are per key
    limits.pause("other", 2.0)
    assert limits.reserve("other", 0.1, 3, 0.0) == Reservation(admitted=False, wait=2.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    burst=st.integers(min_value=1, max_value=20),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.sampled_from([0.0, 0.0, 0.0, 0.3])),
        min_size=1,
        max_size=80,
    ),
    max_wait=st.one_of(st.none(), st.floats(min_value=0, max_value=2)),
)
def test_gcra_never_exceeds_the_bound(
    rate: float, burst: int, steps: list[tuple[float, float]], max_wait: float | None
) -> None:
    """Through the memory store: in any window of length W at most burst + W * rate
    starts, in FIFO order, none during a pause; max_wait holds when reserving."""
    clock = FakeClock()
    limits = MemoryBackend().bind(clock=clock, events=Events()).limits
    interval = 1.0 / rate
    pauses: list[tuple[int, float]] = []  # (reservations made before it, end)
    admitted: list[tuple[float, Reservation]] = []
    for gap, pause in steps:
        clock.advance(gap)
        now = clock.monotonic()
        if pause:
            limits.pause("k", pause)
            pauses.append((len(admitted), now + pause))
        reservation = limits.reserve("k", interval, burst, max_wait)
        if reservation.admitted:
            assert max_wait is None or reservation.wait <= max_wait + 1e-9
            admitted.append((now, reservation))
        else:
            assert max_wait is not None and reservation.wait > max_wait
            assert reservation.ticket is None
    # Each start as finally planned (a later pause may have moved a waiter's slot).
    end = clock.monotonic()
    starts = [at + r.wait if r.ticket is None else end + r.ticket.remaining() for at, r in admitted]
    for index, start in enumerate(starts):
        for made_before, until in pauses:
            assert not (index >= made_before and start < until - 1e-9), "started in a pause"
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(starts))  # FIFO
    assert max_excess(starts, rate, burst) <= 1e-6


def max_excess(starts: list[float], rate: float, burst: int) -> float:
    """max over windows [s_i, s_j] of (starts in it) - (burst + rate * (s_j - s_i)).

    With a_k = k - rate * s_k the count in [s_i, s_j] is j - i + 1, so the excess
    is a_j - a_i + 1 - burst: a running minimum makes it O(n).
    """
    worst = float("-inf")
    lowest = float("inf")
    for k, start in enumerate(sorted(starts)):
        a = k - rate * start
        lowest = min(lowest, a)
        worst = max(worst, a - lowest + 1 - burst)
    return worst


# -- cache ----------------------------------------------------------------------------


def test_cache_get_set_ttl_delete(clock: FakeClock) -> None:
    events = Recorder()
    cache = MemoryBackend().bind(clock=clock, events=events).cache
    check_cache_store(cache, clock.advance)
    cache.set("a", b"x", 10.0)
    clock.advance(9.999)
    assert cache.get("a") == b"x"
    clock.advance(0.001)
    assert cache.get("a") is None  # expired exactly at its ttl
    cache.set("b", b"yz", 1.0)
    assert events.sizes[-1] == (1, 2)


def test_cache_bounds_evict_least_recently_used(clock: FakeClock) -> None:
    events = Recorder()
    backend = MemoryBackend(cache_max_entries=3, cache_max_bytes=10)
    cache = backend.bind(clock=clock, events=events).cache
    for key in "abc":
        cache.set(key, b"12", 60)
    assert cache.get("a") == b"12"  # a is now the most recently used
    cache.set("d", b"12", 60)  # entry bound: b goes
    assert cache.get("b") is None
    assert events.evicted == [1]
    cache.set("e", b"12345", 60)  # byte bound: c goes (5 + 2 + 2 + 2 > 10)
    assert events.evicted == [1, 1]
    assert events.sizes[-1] == (3, 9)
    assert [cache.get(k) for k in "acde"] == [b"12", None, b"12", b"12345"]
    cache.set("huge", b"x" * 11, 60)  # larger than the whole store: not stored
    assert cache.get("huge") is None
    with pytest.raises(ValueError, match="cache_max_entries"):
        MemoryBackend(cache_max_entries=0)
    with pytest.raises(ValueError, match="cache_max_bytes"):
        MemoryBackend(cache_max_bytes=0)


@pytest.mark.anyio
async def test_async_forms_match_the_sync_ones(clock: FakeClock) -> None:
    events = Recorder()
    stores = MemoryBackend().bind(clock=clock, events=events)
    assert await stores.signals.aget_signal("h") is None
    opened = await stores.signals.apublish_open("h", 1.0)
    assert (opened.state, opened.generation) == ("open", 0)
    token = await stores.signals.aacquire_probe("h", 1, 1.0)
    assert token is not None
    await stores.signals.arelease_probe("h", token)
    await stores.signals.apublish_closed("h")
    assert await stores.signals.aget_signal("h") is None
    waiter = await stores.limits.areserve("w", 1.0, 1, None)
    assert waiter.ticket is None
    waiter = await stores.limits.areserve("w", 1.0, 1, None)
    assert waiter.ticket is not None
    await waiter.ticket.acancel()
    assert (await stores.limits.areserve("w", 1.0, 1, None)).wait == 1.0  # given back
    assert (await stores.limits.areserve("k", 1.0, 1, None)).wait == 0.0
    await stores.limits.apause("k", 3.0)
    assert (await stores.limits.areserve("k", 1.0, 1, None)).wait == pytest.approx(3.0)
    await stores.cache.aset("c", b"v", 1.0)
    assert await stores.cache.aget("c") == b"v"
    await stores.cache.adelete("c")
    assert await stores.cache.aget("c") is None
    await MemoryBackend().aclose()
    assert not events.errors


def test_redis_tests_skip_with_a_clear_message_only_without_the_binary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.backend import conftest

    monkeypatch.setattr(conftest, "REDIS_SERVER", None)
    with pytest.raises(pytest.skip.Exception, match="no redis-server binary"):
        conftest._require_binary()
    monkeypatch.setattr(conftest, "REDIS_SERVER", "/usr/bin/redis-server")
    conftest._require_binary()  # present: no skip
