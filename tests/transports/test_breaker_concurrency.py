"""Half-open probe limits under real concurrency: 64 threads, 1,000 tasks (asyncio, trio).

The breaker is tripped and its open period skipped with a FakeClock, so it stays
half-open for the whole test (``success_threshold`` is out of reach); a slow
MockTransport handler measures how many probes run at once.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from klayengo import AsyncResilientClient, CircuitBreakerPolicy, CircuitOpenError, ResilientClient
from klayengo._core.clock import FakeClock

PROBES = 3
POLICY = CircuitBreakerPolicy(
    consecutive_failures=1,
    open_duration=30.0,
    half_open_max_calls=PROBES,
    success_threshold=10**9,  # stay half-open: every admitted call is a probe
)


Client = TypeVar("Client", ResilientClient, AsyncResilientClient)


class Gauge:
    """Concurrency of the calls that reached the upstream (thread-safe)."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.total = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.total += 1
            self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def half_open(cls: type[Client], probe: Callable[[httpx.Request], Any]) -> tuple[Client, FakeClock]:
    """A client whose first call fails (tripping the breaker); every later call is `probe`.

    Advance the returned clock by 30 s after the first call to make the breaker half-open.
    """
    tripped = threading.Event()

    def handler(request: httpx.Request) -> Any:
        if not tripped.is_set():
            tripped.set()
            return httpx.Response(503)
        return probe(request)

    clock = FakeClock()
    client = cls(
        transport=httpx.MockTransport(handler),
        retry=None,
        breaker=POLICY,
        metrics=False,
        _clock=clock,
    )
    return client, clock


def assert_half_open_and_idle(client: ResilientClient | AsyncResilientClient) -> None:
    snap = client.breaker_snapshot()["api.test"]
    assert (snap.state, snap.in_flight) == ("half_open", 0)


def test_64_threads_never_run_more_than_the_probe_limit() -> None:
    gauge = Gauge()

    def probe(request: httpx.Request) -> httpx.Response:
        gauge.enter()
        time.sleep(0.005)
        gauge.leave()
        return httpx.Response(200)

    client, clock = half_open(ResilientClient, probe)
    client.get("http://api.test/")
    clock.advance(30.0)
    rejected = 0
    count_lock = threading.Lock()
    barrier = threading.Barrier(64)

    def worker() -> None:
        nonlocal rejected
        barrier.wait()
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            try:
                client.get("http://api.test/")
            except CircuitOpenError as exc:
                assert exc.retry_after == 0.0
                with count_lock:
                    rejected += 1
                time.sleep(0.001)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert gauge.peak == PROBES
    assert gauge.total > PROBES  # slots were freed and reused
    assert rejected > 0
    assert_half_open_and_idle(client)


@pytest.mark.anyio
async def test_1000_tasks_never_run_more_than_the_probe_limit() -> None:
    gauge = Gauge()

    async def probe(request: httpx.Request) -> httpx.Response:
        gauge.enter()
        await anyio.sleep(0.01)
        gauge.leave()
        return httpx.Response(200)

    client, clock = half_open(AsyncResilientClient, probe)
    rejected = 0

    async def task(i: int) -> None:
        nonlocal rejected
        # Spread the arrivals over ~0.15 s, so slots are freed and taken again.
        await anyio.sleep((i % 30) * 0.005)
        try:
            await client.get("http://api.test/")
        except CircuitOpenError:
            rejected += 1

    async with client:
        await client.get("http://api.test/")
        clock.advance(30.0)
        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(task, i)
    assert gauge.peak == PROBES
    assert gauge.total > PROBES
    assert gauge.total + rejected == 1000
    assert_half_open_and_idle(client)


@pytest.mark.anyio
async def test_cancelled_tasks_never_leave_the_breaker_stuck_half_open() -> None:
    gauge = Gauge()

    async def probe(request: httpx.Request) -> httpx.Response:
        gauge.enter()
        try:
            await anyio.sleep(60)  # only cancellation ends these probes
        finally:
            gauge.leave()
        return httpx.Response(200)

    client, clock = half_open(AsyncResilientClient, probe)

    async def task() -> None:
        with contextlib.suppress(CircuitOpenError):
            await client.get("http://api.test/")

    async def burst(tasks: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(task)
            await anyio.sleep(0.03)
            assert gauge.active == PROBES
            tg.cancel_scope.cancel()
        assert gauge.active == 0
        assert_half_open_and_idle(client)

    async with client:
        await client.get("http://api.test/")
        clock.advance(30.0)
        await burst(200)
        await burst(PROBES + 5)  # every slot was free again


def test_transitions_reach_callbacks_in_order_under_threads() -> None:
    # Tiny open periods on the real clock: the breaker flips constantly while 16
    # threads race; every callback must still see one unbroken chain of states.
    seen: list[tuple[str, str]] = []

    def on_change(host: str, old: str, new: str) -> None:
        time.sleep(0.001)  # let other threads run (and transition) mid-callback
        seen.append((old, new))

    policy = CircuitBreakerPolicy(
        consecutive_failures=1,
        open_duration=0.0005,
        on_state_change=on_change,
    )
    counter = iter(range(10**9))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if next(counter) % 3 == 0 else 200)

    client = ResilientClient(
        transport=httpx.MockTransport(handler), retry=None, breaker=policy, metrics=False
    )

    def worker() -> None:
        for _ in range(150):
            with contextlib.suppress(CircuitOpenError):
                client.get("http://api.test/")

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) > 10
    assert seen[0][0] == "closed"
    for (_, before), (after, _) in itertools.pairwise(seen):
        assert before == after
    final = client.breaker_state("api.test")  # may apply (and report) open -> half_open
    assert seen[-1][1] == final
