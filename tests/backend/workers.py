"""Functions run in separate processes (multiprocessing, spawn) by the Redis tests."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import httpx

from klayengo._backends.redis import RedisBackend
from klayengo._core.backend import Stores
from klayengo._core.clock import SYSTEM_CLOCK
from klayengo._core.events import Events


class CountingEvents(Events):
    """Counts ``backend_error`` per operation (a process-local sink)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def backend_error(self, operation: str) -> None:
        self.errors.append(operation)


def stores(url: str, prefix: str, timeout: float = 0.5) -> tuple[Stores, CountingEvents]:
    events = CountingEvents()
    # A generous timeout: these workers prove sharing, not fail-open, and the
    # machine may be busy.
    backend = RedisBackend(url, prefix=prefix, timeout=timeout)
    return backend.bind(clock=SYSTEM_CLOCK, events=events, http=httpx), events


def publish_open(url: str, prefix: str, host: str, open_for: float) -> int:
    """Open ``host``'s breaker for everyone; returns the generation."""
    found, events = stores(url, prefix)
    signal = found.signals.publish_open(host, open_for)
    assert not events.errors, events.errors
    return signal.generation


def grab_probes(url: str, prefix: str, host: str, start_at: float, attempts: int) -> int:
    """From ``start_at`` (wall time), try ``attempts`` probe leases; never release."""
    found, events = stores(url, prefix)
    time.sleep(max(0.0, start_at - time.time()))
    granted = sum(found.signals.acquire_probe(host, 2, 30.0) is not None for _ in range(attempts))
    assert not events.errors, events.errors
    return granted


def probe_and_crash(url: str, prefix: str, host: str, lease_ttl: float) -> None:
    """Lease a probe, then die without releasing it."""
    found, _ = stores(url, prefix)
    assert found.signals.acquire_probe(host, 1, lease_ttl) is not None
    os._exit(0)


def limited_starts(
    url: str,
    prefix: str,
    key: str,
    rate: float,
    burst: int,
    start_at: float,
    until: float,
    threads: int = 8,
) -> tuple[list[tuple[float, float]], int]:
    """Start requests as fast as a shared ``rate``/s limit allows between two wall times.

    Several threads keep reservations pending, so the limit, not this process's
    scheduling on a busy machine, sets the pace. Returns, for each request that
    started before ``until``, the bounds of the wall time the limiter gave it (the
    script read the server's clock between the call and the reply, so the slot is
    in ``[call + wait, reply + wait]``; the same machine, the same clock), and the
    number of backend errors (a fallback to local state).
    """
    found, events = stores(url, prefix)
    interval = 1.0 / rate
    starts: list[tuple[float, float]] = []

    def run() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        while True:
            called = time.time()
            reservation = found.limits.reserve(key, interval, burst, None)
            replied = time.time()
            assert reservation.admitted
            if reservation.wait > 0:
                time.sleep(reservation.wait)
            if time.time() >= until:
                return
            starts.append((called + reservation.wait, replied + reservation.wait))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return starts, len(events.errors)


# -- through the clients ------------------------------------------------------------------


def client_trips_breaker(url: str, prefix: str, target: str) -> int:
    """A ResilientClient whose upstream fails: its breaker trips and publishes the opening.

    Returns how many requests reached the upstream.
    """
    import httpx

    import klayengo

    calls: list[str] = []

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503)

    with (
        klayengo.RedisBackend(url, prefix=prefix, timeout=0.5) as backend,
        klayengo.ResilientClient(
            transport=httpx.MockTransport(failing),
            backend=backend,
            retry=None,
            metrics=False,
            breaker=klayengo.CircuitBreakerPolicy(consecutive_failures=2, open_duration=30),
        ) as client,
    ):
        for _ in range(2):
            assert client.get(target).status_code == 503
        assert client.breaker_state(target) == "open"
    return len(calls)


def client_probes(url: str, prefix: str, target: str, start_at: float, threads: int) -> int:
    """``threads`` threads send one request each at ``start_at`` to a half-open origin
    whose upstream answers slowly; returns how many reached the upstream."""
    import httpx

    import klayengo

    calls: list[str] = []

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        time.sleep(0.5)
        return httpx.Response(200)

    backend = klayengo.RedisBackend(url, prefix=prefix, timeout=0.5)
    client = klayengo.ResilientClient(
        transport=httpx.MockTransport(slow),
        backend=backend,
        retry=None,
        metrics=False,
        breaker=klayengo.CircuitBreakerPolicy(half_open_max_calls=2),
    )

    def one() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        with contextlib.suppress(klayengo.CircuitOpenError):
            client.get(target)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    backend.close()
    return len(calls)


def client_limited_starts(
    url: str, prefix: str, rate: float, burst: int, start_at: float, until: float, threads: int
) -> tuple[list[float], int]:
    """Requests through a ResilientClient sharing a ``rate``/s limit, as fast as it
    allows between two wall times. Returns the wall times the upstream saw them
    start, and the backend errors counted by the client's metrics."""
    import httpx
    from prometheus_client import CollectorRegistry

    import klayengo

    starts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        starts.append(time.time())
        return httpx.Response(200)

    registry = CollectorRegistry()
    backend = klayengo.RedisBackend(url, prefix=prefix, timeout=0.5)
    client = klayengo.ResilientClient(
        transport=httpx.MockTransport(handler),
        backend=backend,
        retry=None,
        breaker=None,
        metrics=klayengo.MetricsPolicy(registry=registry),
        rate_limit=klayengo.RateLimitPolicy(rate=rate, burst=burst),
    )

    def run() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < until:
            client.get("http://api.example/items")

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    errors = backend_errors(registry)
    client.close()
    backend.close()
    return [t for t in starts if start_at <= t < until], int(errors)


def backend_errors(registry: object) -> int:
    """The sum of ``klayengo_backend_errors_total`` in a prometheus registry."""
    return int(
        sum(
            sample.value
            for metric in registry.collect()  # type: ignore[attr-defined]
            for sample in metric.samples
            if sample.name == "klayengo_backend_errors_total"
        )
    )


def client_caches(url: str, prefix: str, target: str, headers: dict[str, str]) -> int:
    """A ResilientClient with a cache fetches ``target`` once (a cacheable 200);
    returns how many requests reached its upstream."""
    import httpx

    import klayengo

    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(
            200, headers={"Cache-Control": "max-age=60"}, content=b"from another process"
        )

    with (
        klayengo.RedisBackend(url, prefix=prefix, timeout=0.5) as backend,
        klayengo.ResilientClient(
            transport=httpx.MockTransport(handler),
            backend=backend,
            cache=klayengo.CachePolicy(),
            metrics=False,
        ) as client,
    ):
        response = client.get(target, headers=headers)
        assert response.extensions["klayengo"]["cache"] == "miss", response.extensions
    return len(calls)
