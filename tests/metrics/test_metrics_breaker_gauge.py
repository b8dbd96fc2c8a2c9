"""``klayengo_circuit_breaker_state`` is read from the client's breaker registry at scrape
time: every breaker has a series (``0`` for one that never left closed), the lazy
open -> half_open transition shows, evicted and reset breakers have none."""

from __future__ import annotations

import gc

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from klayengo import (
    AsyncResilientClient,
    CircuitBreakerPolicy,
    MetricsPolicy,
    ResilientClient,
)
from klayengo._core.clock import FakeClock
from klayengo._metrics import BREAKER_REGISTRY_KEY, METRICS_KEY

STATE = "klayengo_circuit_breaker_state"
TRANSITIONS = "klayengo_circuit_breaker_transitions_total"
#: Trips on the first failure; stays open 30 s.
TRIP_FAST = CircuitBreakerPolicy(consecutive_failures=1, open_duration=30)


def by_path(request: httpx.Request) -> httpx.Response:
    """500 for any path starting with /fail, else 200."""
    return httpx.Response(500 if request.url.path.startswith("/fail") else 200)


def states(registry: CollectorRegistry, client: str = "gauge") -> dict[str, float]:
    """host -> value of every breaker state sample of ``client``."""
    return {
        sample.labels["host"]: sample.value
        for family in registry.collect()
        if family.name == STATE
        for sample in family.samples
        if sample.labels["client"] == client
    }


def make_client(
    registry: CollectorRegistry,
    *,
    breaker: CircuitBreakerPolicy | None = TRIP_FAST,
    max_hosts: int = 100,
    clock: FakeClock | None = None,
) -> ResilientClient:
    return ResilientClient(
        transport=httpx.MockTransport(by_path),
        metrics=MetricsPolicy(registry=registry, max_hosts=max_hosts),
        name="gauge",
        retry=None,
        breaker=breaker,
        _clock=clock,
    )


def test_the_registry_key_is_the_breaker_layers() -> None:
    from klayengo._httpx._transports.breaker import REGISTRY_KEY

    assert REGISTRY_KEY == BREAKER_REGISTRY_KEY


def test_every_breaker_has_a_series_closed_ones_included() -> None:
    registry = CollectorRegistry()
    with make_client(registry) as client:
        assert states(registry) == {}  # no breaker yet
        for host in ("a.example", "b.example", "c.example"):
            assert client.get(f"http://{host}/").status_code == 200
        assert client.get("http://d.example/fail").status_code == 500
        assert states(registry) == {"a.example": 0, "b.example": 0, "c.example": 0, "d.example": 1}
        # The closed ones never changed state: no event ever named them.
        transitions = {
            s.labels["host"]
            for f in registry.collect()
            if f.name == "klayengo_circuit_breaker_transitions"
            for s in f.samples
        }
        assert transitions == {"d.example"}
    assert states(registry) == {}  # the last client closed: no live state


def test_the_lazy_half_open_transition_shows_and_is_reported_once() -> None:
    clock, registry = FakeClock(), CollectorRegistry()
    seen: list[tuple[str, str, str]] = []
    policy = CircuitBreakerPolicy(
        consecutive_failures=1,
        open_duration=30,
        on_state_change=lambda host, old, new: seen.append((host, old, new)),
    )
    labels = {"client": "gauge", "host": "h"}
    with make_client(registry, breaker=policy, clock=clock) as client:
        assert client.get("http://h/fail").status_code == 500
        assert registry.get_sample_value(STATE, labels) == 1
        clock.advance(29.5)
        assert registry.get_sample_value(STATE, labels) == 1
        clock.advance(0.5)
        # No call arrived, yet the breaker would admit a probe now: half-open.
        assert registry.get_sample_value(STATE, labels) == 2
        assert client.breaker_state("h") == "half_open"
        assert client.get("http://h/").status_code == 200  # the probe closes it
        assert registry.get_sample_value(STATE, labels) == 0
        assert seen == [
            ("h", "closed", "open"),
            ("h", "open", "half_open"),
            ("h", "half_open", "closed"),
        ]
        for to_state in ("open", "half_open", "closed"):
            assert registry.get_sample_value(TRANSITIONS, {**labels, "to_state": to_state}) == 1


def test_a_scrape_alone_reports_the_half_open_transition_at_the_next_call() -> None:
    # The scrape applies the lazy transition without running callbacks from the
    # scraper's thread; the next call to the host reports it, as without the scrape.
    clock, registry = FakeClock(), CollectorRegistry()
    seen: list[str] = []
    policy = CircuitBreakerPolicy(
        consecutive_failures=1,
        open_duration=30,
        on_state_change=lambda host, old, new: seen.append(new),
    )
    labels = {"client": "gauge", "host": "h"}
    with make_client(registry, breaker=policy, clock=clock) as client:
        client.get("http://h/fail")
        clock.advance(31)
        assert registry.get_sample_value(STATE, labels) == 2
        assert registry.get_sample_value(STATE, labels) == 2  # a second scrape changes nothing
        assert seen == ["open"]
        assert client.get("http://h/fail").status_code == 500  # a failed probe: open again
        assert seen == ["open", "half_open", "open"]
        assert registry.get_sample_value(STATE, labels) == 1
        assert registry.get_sample_value(TRANSITIONS, {**labels, "to_state": "half_open"}) == 1
        assert registry.get_sample_value(TRANSITIONS, {**labels, "to_state": "open"}) == 2


def test_a_reset_breaker_has_no_series() -> None:
    registry = CollectorRegistry()
    with make_client(registry) as client:
        client.get("http://keep.example/")
        client.get("http://h/fail")
        assert states(registry) == {"keep.example": 0, "h": 1}
        client.reset_breaker("h")
        assert states(registry) == {"keep.example": 0}
        client.get("http://h/")  # a new, closed breaker
        assert states(registry) == {"keep.example": 0, "h": 0}


def test_an_evicted_breaker_has_no_series() -> None:
    registry = CollectorRegistry()
    one = CircuitBreakerPolicy(consecutive_failures=1, max_hosts=1)
    with make_client(registry, breaker=one) as client:
        client.get("http://a.example/")
        assert states(registry) == {"a.example": 0}
        client.get("http://b.example/")  # the registry is full: idle a.example is evicted
        assert states(registry) == {"b.example": 0}


def test_host_labels_are_sanitized_and_capped() -> None:
    registry = CollectorRegistry()
    with make_client(registry, max_hosts=2) as client:
        client.get("http://user:secret@API.Example:8080/?token=x")
        client.get("http://[::1]:8080/")
        client.get("http://third.example/fail")  # past max_hosts: folded into _other
        client.get("http://fourth.example/fail")
        assert client.breaker_state("third.example") == "open"
        # One gauge cannot hold the states of every host folded into _other.
        assert states(registry) == {"api.example:8080": 0, "[::1]:8080": 0}
        other = {"client": "gauge", "host": "_other", "to_state": "open"}
        assert registry.get_sample_value(TRANSITIONS, other) == 2
        text = generate_latest(registry).decode()
    assert "secret" not in text and "token" not in text and "user" not in text


def test_origins_sharing_a_host_key_report_the_worst_state() -> None:
    registry = CollectorRegistry()
    with make_client(registry) as client:
        client.get("http://h/")
        client.get("https://h/fail")  # another origin, the same host key
        text = generate_latest(registry).decode()
    samples = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == STATE
        for s in f.samples
        if s.labels["host"] == "h"
    ]
    assert [s.value for s in samples] == [1]


def test_clients_sharing_a_name_report_the_worst_state() -> None:
    registry = CollectorRegistry()
    with make_client(registry) as healthy, make_client(registry) as tripped:
        healthy.get("http://h/")
        assert states(registry) == {"h": 0}
        tripped.get("http://h/fail")
        assert states(registry) == {"h": 1}
        healthy.get("http://only-healthy.example/")
    assert states(registry) == {}


def test_breakers_off_means_no_state_series() -> None:
    registry = CollectorRegistry()
    with make_client(registry, breaker=None) as client:
        client.get("http://h/fail")
        assert client._klayengo.peek(BREAKER_REGISTRY_KEY) is None
        assert states(registry) == {}
        assert registry.get_sample_value(
            "klayengo_requests_total",
            {"client": "gauge", "host": "h", "method": "GET", "status_code": "500"},
        )


def test_a_client_dropped_without_closing_takes_its_series_along() -> None:
    registry = CollectorRegistry()
    client = make_client(registry)
    client.get("http://h/fail")
    store = client._klayengo.peek(METRICS_KEY)
    assert states(registry) == {"h": 1}
    del client
    gc.collect()
    assert store.live == 0
    assert states(registry) == {}


@pytest.mark.anyio
async def test_the_async_client_exports_its_breakers() -> None:
    registry = CollectorRegistry()
    async with AsyncResilientClient(
        transport=httpx.MockTransport(by_path),
        metrics=registry,
        name="gauge",
        retry=None,
        breaker=TRIP_FAST,
    ) as client:
        await client.get("http://ok.example/")
        await client.get("http://bad.example/fail")
        assert states(registry) == {"ok.example": 0, "bad.example": 1}
    assert states(registry) == {}
