"""Exact counts for a scripted scenario: N requests, k retries, a breaker trip,
r rate-limit rejections, h cache hits; the breaker state gauge follows every transition.

Two versions:

- ``test_scripted_scenario_through_the_events_sink``: requests go through a real
  ``ResilientClient`` (so the outermost layer counts them) and the other layers' events
  are emitted exactly as those layers emit them, from inside the transport. Always runs.
- ``test_scripted_scenario_through_the_real_layers``: the same scenario driven through
  the real cache, retry, breaker and rate-limit layers; ``test_one_part_through_its_real_layer``
  runs each part alone.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from klayengo import (
    CachePolicy,
    CircuitBreakerPolicy,
    CircuitOpenError,
    HostPolicy,
    RateLimitExceeded,
    RateLimitPolicy,
    ResilientClient,
    RetryPolicy,
)
from klayengo._core.clock import FakeClock

K_RETRIES = 3
H_HITS = 5
R_REJECTED = 4
CLIENT = "scenario"


def v(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"client": CLIENT, **labels}) or 0.0


def state(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(
        "klayengo_circuit_breaker_state", {"client": CLIENT, "host": "trip.test"}
    )


def family_total(registry: CollectorRegistry, family: str) -> float:
    """The sum of a counter family's ``_total`` samples over every label set."""
    return sum(
        s.value
        for metric in registry.collect()
        if metric.name == family
        for s in metric.samples
        if s.name == f"{family}_total"
    )


def req(registry: CollectorRegistry, host: str, status: str) -> float:
    return v(registry, "klayengo_requests_total", host=host, method="GET", status_code=status)


def run_cache(client: ResilientClient, clock: FakeClock, registry: CollectorRegistry) -> None:
    for _ in range(1 + H_HITS):
        assert client.get("http://cache.test/item").status_code == 200


def check_cache(registry: CollectorRegistry) -> None:
    # 1 miss + h hits, all 200.
    assert req(registry, "cache.test", "200") == 1 + H_HITS
    assert v(registry, "klayengo_cache_requests_total", host="cache.test", result="miss") == 1
    assert v(registry, "klayengo_cache_requests_total", host="cache.test", result="hit") == H_HITS


def run_retry(client: ResilientClient, clock: FakeClock, registry: CollectorRegistry) -> None:
    assert client.get("http://retry.test/flaky").status_code == 200


def check_retry(registry: CollectorRegistry) -> None:
    # One logical request, k retries.
    assert req(registry, "retry.test", "200") == 1
    assert req(registry, "retry.test", "503") == 0
    assert v(registry, "klayengo_retries_total", host="retry.test", reason="status") == K_RETRIES
    assert v(registry, "klayengo_retry_budget_exhausted_total", host="retry.test") == 0


def run_breaker(client: ResilientClient, clock: FakeClock, registry: CollectorRegistry) -> None:
    assert state(registry) in (None, 0)
    assert client.get("http://trip.test/").status_code == 500
    assert state(registry) in (None, 0)
    assert client.get("http://trip.test/").status_code == 500
    assert state(registry) == 1  # tripped
    with pytest.raises(CircuitOpenError):
        client.get("http://trip.test/")
    assert state(registry) == 1
    clock.advance(31)
    assert client.get("http://trip.test/recovered").status_code == 200
    assert state(registry) == 0  # the half-open probe succeeded: closed


def check_breaker(registry: CollectorRegistry) -> None:
    # 500, 500 (trip), rejected, then a probe that closes it.
    assert req(registry, "trip.test", "500") == 2
    assert req(registry, "trip.test", "error") == 1
    assert req(registry, "trip.test", "200") == 1
    assert v(registry, "klayengo_errors_total", host="trip.test", type="circuit_open") == 1
    assert v(registry, "klayengo_circuit_breaker_rejections_total", host="trip.test") == 1
    transitions = "klayengo_circuit_breaker_transitions_total"
    for to_state in ("open", "half_open", "closed"):
        assert v(registry, transitions, host="trip.test", to_state=to_state) == 1


def run_ratelimit(client: ResilientClient, clock: FakeClock, registry: CollectorRegistry) -> None:
    assert client.get("http://limit.test/").status_code == 200
    for _ in range(R_REJECTED):
        with pytest.raises(RateLimitExceeded):
            client.get("http://limit.test/")


def check_ratelimit(registry: CollectorRegistry) -> None:
    # One admitted, r refused.
    assert req(registry, "limit.test", "200") == 1
    assert req(registry, "limit.test", "error") == R_REJECTED
    assert v(registry, "klayengo_rate_limited_total", host="limit.test") == R_REJECTED
    limited = v(registry, "klayengo_errors_total", host="limit.test", type="rate_limited")
    assert limited == R_REJECTED
    assert v(registry, "klayengo_rate_limit_wait_seconds_count", host="limit.test") == 1


Step = Callable[[ResilientClient, FakeClock, CollectorRegistry], None]
#: The scenario's parts: layer module, what to do, what must then be counted, requests
#: made, exceptions raised, upstream calls.
PARTS: dict[str, tuple[Step, Callable[[CollectorRegistry], None], int, int, int]] = {
    "cache": (run_cache, check_cache, 1 + H_HITS, 0, 1),
    "retry": (run_retry, check_retry, 1, 0, K_RETRIES + 1),
    "breaker": (run_breaker, check_breaker, 4, 1, 3),
    "ratelimit": (run_ratelimit, check_ratelimit, 1 + R_REJECTED, R_REJECTED, 1),
}


def run_parts(
    names: list[str], client: ResilientClient, clock: FakeClock, registry: CollectorRegistry
) -> None:
    for name in names:
        PARTS[name][0](client, clock, registry)


def check_parts(names: list[str], registry: CollectorRegistry) -> None:
    for name in names:
        PARTS[name][1](registry)
    # Totals: exactly the logical requests and errors of these parts, nothing else.
    assert family_total(registry, "klayengo_requests") == sum(PARTS[n][2] for n in names)
    assert family_total(registry, "klayengo_errors") == sum(PARTS[n][3] for n in names)


def test_scripted_scenario_through_the_events_sink() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    calls = {"retry": 0, "trip": 0, "limit": 0}
    gauge_after: list[float | None] = []
    breaker_state = {"trip.test": "closed"}
    cache_store: set[str] = set()

    def transition(host: str, new: str) -> None:
        old, breaker_state[host] = breaker_state[host], new
        client._klayengo.events.breaker_transition(host, old, new)
        gauge_after.append(state(registry))

    def handler(request: httpx.Request) -> httpx.Response:
        events = client._klayengo.events
        host = request.url.host
        if host == "cache.test":  # what the cache layer reports
            if str(request.url) in cache_store:
                events.cache_result(host, "hit")
                return httpx.Response(200)
            events.cache_result(host, "miss")
            cache_store.add(str(request.url))
            events.cache_size(len(cache_store), 0)
            return httpx.Response(200)
        if host == "retry.test":  # what the retry layer reports
            for attempt in range(1, K_RETRIES + 1):
                calls["retry"] += 1
                events.retry(host, "status", attempt, 0.1)
            return httpx.Response(200)
        if host == "trip.test":  # what the breaker reports
            calls["trip"] += 1
            if breaker_state[host] == "open":
                if request.url.path == "/recovered":
                    transition(host, "half_open")
                    transition(host, "closed")
                    return httpx.Response(200)
                events.breaker_rejected(host)
                raise CircuitOpenError("open", request=request, host=host, retry_after=30.0)
            if calls["trip"] == 2:
                transition(host, "open")
            return httpx.Response(500)
        if host == "limit.test":  # what the limiter reports
            calls["limit"] += 1
            if calls["limit"] > 1:
                events.rate_limited(host)
                raise RateLimitExceeded("limited", request=request, host=host, retry_after=60.0)
            events.rate_limit_wait(host, 0.0)
            return httpx.Response(200)
        raise AssertionError(host)

    client = ResilientClient(
        transport=httpx.MockTransport(handler),
        metrics=registry,
        name=CLIENT,
        retry=None,
        breaker=None,
        _clock=clock,
    )
    with client:
        run_parts(list(PARTS), client, clock, registry)
    check_parts(list(PARTS), registry)
    assert gauge_after == [1, 2, 0]
    assert (
        v(registry, "klayengo_retries_total", host="retry.test", reason="status") == calls["retry"]
    )


def real_layers_scenario(names: list[str]) -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    upstream = dict.fromkeys(PARTS, 0)

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "cache.test":
            upstream["cache"] += 1
            return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, text="x")
        if host == "retry.test":
            upstream["retry"] += 1
            return httpx.Response(503 if upstream["retry"] <= K_RETRIES else 200)
        if host == "trip.test":
            upstream["breaker"] += 1
            return httpx.Response(200 if request.url.path == "/recovered" else 500)
        if host == "limit.test":
            upstream["ratelimit"] += 1
            return httpx.Response(200)
        raise AssertionError(host)

    hosts = {
        "cache.test": HostPolicy(cache=CachePolicy(ttl=60), retry=None, breaker=None),
        "retry.test": HostPolicy(
            retry=RetryPolicy(max_retries=K_RETRIES, backoff_base=0.01), breaker=None
        ),
        "trip.test": HostPolicy(
            retry=None, breaker=CircuitBreakerPolicy(consecutive_failures=2, open_duration=30)
        ),
        "limit.test": HostPolicy(
            retry=None,
            breaker=None,
            rate_limit=RateLimitPolicy(rate=1, per=60, burst=1, max_wait=0),
        ),
    }
    with ResilientClient(
        transport=httpx.MockTransport(handler),
        metrics=registry,
        name=CLIENT,
        retry=None,
        breaker=None,
        hosts=hosts,
        _clock=clock,
    ) as client:
        run_parts(names, client, clock, registry)
    check_parts(names, registry)
    assert upstream == {name: PARTS[name][4] if name in names else 0 for name in PARTS}


@pytest.mark.parametrize("name", list(PARTS))
def test_one_part_through_its_real_layer(name: str) -> None:
    real_layers_scenario([name])


def test_scripted_scenario_through_the_real_layers() -> None:
    real_layers_scenario(list(PARTS))
