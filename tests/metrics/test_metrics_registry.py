"""metrics= wiring, one collector per registry, client lifecycle."""

from __future__ import annotations

import gc

import httpx
import pytest
from klayengo._httpx._transports.stack import (
    AsyncMeteredStackTransport,
    AsyncStackTransport,
    MeteredStackTransport,
    StackTransport,
)
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from klayengo import AsyncResilientClient, CircuitBreakerPolicy, MetricsPolicy, ResilientClient
from klayengo._context import LayerContext
from klayengo._core.events import NULL_EVENTS, Events, MultiEvents
from klayengo._metrics import (
    _COLLECTORS,
    METRIC_NAMES,
    METRICS_KEY,
    ClientMetrics,
    KlayengoCollector,
    create_metrics,
)


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


def requests_total(
    registry: CollectorRegistry, client: str, host: str = "h", status: str = "200"
) -> float:
    value = registry.get_sample_value(
        "klayengo_requests_total",
        {"client": client, "host": host, "method": "GET", "status_code": status},
    )
    return value or 0.0


def collectors(registry: CollectorRegistry) -> list[object]:
    return list(registry._collector_to_names)


def test_nothing_is_registered_at_import_time() -> None:
    import subprocess
    import sys

    code = (
        "import klayengo, prometheus_client as p;"
        "assert not any(n.startswith('klayengo') for n in p.REGISTRY._names_to_collectors)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=".")


def test_metrics_true_uses_the_default_registry() -> None:
    with ResilientClient(transport=httpx.MockTransport(ok), name="default-registry-test") as c:
        before = requests_total(REGISTRY, "default-registry-test")
        c.get("http://h/")
    assert requests_total(REGISTRY, "default-registry-test") == before + 1
    assert sum(isinstance(x, KlayengoCollector) for x in collectors(REGISTRY)) == 1


@pytest.mark.parametrize("kind", ["registry", "policy"])
def test_a_registry_or_a_policy_selects_the_registry(kind: str) -> None:
    registry = CollectorRegistry()
    metrics = registry if kind == "registry" else MetricsPolicy(registry=registry)
    with ResilientClient(transport=httpx.MockTransport(ok), metrics=metrics, name="sel") as c:
        c.get("http://h/")
        c.get("http://h/")
    assert requests_total(registry, "sel") == 2


@pytest.mark.parametrize("off", [False, None])
def test_false_does_no_metric_work(off: object) -> None:
    registry = CollectorRegistry()
    n_default = len(collectors(REGISTRY))
    with ResilientClient(transport=httpx.MockTransport(ok), metrics=off) as c:
        assert c._klayengo.events is NULL_EVENTS
        assert c._klayengo.peek(METRICS_KEY) is None
        assert type(c._transport) is StackTransport  # no metered top
        c.get("http://h/")
    assert collectors(registry) == []
    assert len(collectors(REGISTRY)) == n_default


@pytest.mark.parametrize("bad", ["yes", 1, object(), CollectorRegistry])
def test_a_bad_metrics_argument_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="metrics must be"):
        ResilientClient(metrics=bad)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_hosts"):
        MetricsPolicy(max_hosts=0)
    with pytest.raises(TypeError, match="registry"):
        MetricsPolicy(registry="nope")  # type: ignore[arg-type]


def test_the_stack_top_counts_the_metrics() -> None:
    registry = CollectorRegistry()
    with ResilientClient(transport=httpx.MockTransport(ok), metrics=registry) as c:
        assert isinstance(c._transport, MeteredStackTransport)


async def _async_top(registry: CollectorRegistry | None) -> object:
    async with AsyncResilientClient(
        transport=httpx.MockTransport(ok), metrics=registry or False
    ) as c:
        return c._transport


@pytest.mark.anyio
async def test_the_async_stack_top_counts_the_metrics() -> None:
    assert isinstance(await _async_top(CollectorRegistry()), AsyncMeteredStackTransport)
    assert type(await _async_top(None)) is AsyncStackTransport


def test_many_clients_created_and_closed_grow_nothing() -> None:
    registry = CollectorRegistry()
    for i in range(300):
        with ResilientClient(
            transport=httpx.MockTransport(ok), metrics=registry, name="churn"
        ) as c:
            c.get(f"http://h{i % 3}/")
    client = ResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="other")
    client.close()
    assert len(collectors(registry)) == 1
    collector = _COLLECTORS[registry]
    assert sorted(s.client for s in collector.stores()) == ["churn", "other"]
    # Counts of closed clients are kept: none lost between two scrapes.
    assert sum(requests_total(registry, "churn", f"h{i}") for i in range(3)) == 300
    text = generate_latest(registry).decode()
    assert len(list(text_string_to_metric_families(text))) == len(METRIC_NAMES)


def test_clients_are_told_apart_by_the_client_label_and_share_a_name() -> None:
    registry = CollectorRegistry()
    a1 = ResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="a")
    a2 = ResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="a")
    b = AsyncResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="b")
    a1.get("http://h/")
    a2.get("http://h/")
    assert requests_total(registry, "a") == 2
    assert requests_total(registry, "b") == 0
    # Same name, same series: the exposition has no duplicate sample.
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == len(set(line.rsplit(" ", 1)[0] for line in lines))
    a1.close()
    a2.close()
    store_b = b._klayengo.peek(METRICS_KEY)
    assert store_b.live == 1
    del b  # never closed: collecting it releases its store
    gc.collect()
    assert store_b.live == 0


def test_closing_the_last_client_drops_live_gauges_only() -> None:
    registry = CollectorRegistry()

    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    trips = CircuitBreakerPolicy(consecutive_failures=1)
    c1 = ResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="life")
    c2 = ResilientClient(
        transport=httpx.MockTransport(fail), metrics=registry, name="life", breaker=trips
    )
    c1.get("http://h/")
    store = c1._klayengo.peek(METRICS_KEY)
    assert isinstance(store, ClientMetrics) and store.live == 2
    labels = {"client": "life", "host": "h"}
    assert registry.get_sample_value("klayengo_circuit_breaker_state", labels) == 0
    assert c2.get("http://h/").status_code == 500  # c2's breaker of h opens; c1's is closed
    store.cache_size(3, 300)
    assert registry.get_sample_value("klayengo_requests_in_flight", labels) == 0
    assert registry.get_sample_value("klayengo_circuit_breaker_state", labels) == 1  # the worst
    assert registry.get_sample_value("klayengo_cache_entries", {"client": "life"}) == 3
    c1.close()
    c1.close()  # closing twice releases once
    assert store.live == 1
    assert registry.get_sample_value("klayengo_circuit_breaker_state", labels) == 1
    c2.close()
    assert store.live == 0
    assert registry.get_sample_value("klayengo_requests_in_flight", labels) is None
    assert registry.get_sample_value("klayengo_circuit_breaker_state", labels) is None
    assert registry.get_sample_value("klayengo_cache_entries", {"client": "life"}) is None
    assert requests_total(registry, "life") == 1
    assert requests_total(registry, "life", status="500") == 1
    assert (
        registry.get_sample_value(
            "klayengo_circuit_breaker_transitions_total", {**labels, "to_state": "open"}
        )
        == 1
    )
    # A new client of that name continues the counters.
    with ResilientClient(transport=httpx.MockTransport(ok), metrics=registry, name="life") as c3:
        c3.get("http://h/")
    assert requests_total(registry, "life") == 2


def test_a_name_clash_in_the_registry_is_reported() -> None:
    registry = CollectorRegistry()
    Counter("klayengo_requests", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ResilientClient(metrics=registry)


def test_an_existing_events_sink_is_kept() -> None:
    class Recorder(Events):
        __slots__ = ("seen",)

        def __init__(self) -> None:
            self.seen: list[str] = []

        def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
            self.seen.append(host)

    recorder = Recorder()
    registry = CollectorRegistry()
    context = LayerContext(name="multi", events=recorder)
    store = create_metrics(context, registry)
    assert isinstance(context.events, MultiEvents)
    context.events.retry("h", "status", 1, 0.5)
    assert recorder.seen == ["h"]
    assert store is not None and store.snapshot()["retries"] == {("h", "status"): 1}


def test_a_dropped_registry_takes_its_collector_along() -> None:
    registry = CollectorRegistry()
    ResilientClient(metrics=registry).close()
    assert registry in _COLLECTORS
    n = len(_COLLECTORS)
    del registry
    gc.collect()
    assert len(_COLLECTORS) == n - 1


def test_breaker_gauge_is_not_reported_for_hosts_folded_into_other() -> None:
    registry = CollectorRegistry()
    policy = MetricsPolicy(registry=registry, max_hosts=1)
    # Breakers off: the gauge follows the events (tests/metrics/test_metrics_breaker_gauge.py
    # covers the gauge read from a real breaker registry).
    with ResilientClient(metrics=policy, name="fold", breaker=None) as client:
        events = client._klayengo.events
        events.breaker_transition("a.example", "closed", "open")
        events.breaker_transition("b.example", "closed", "open")  # past max_hosts
        events.breaker_transition("c.example", "closed", "open")
        events.breaker_transition("c.example", "open", "half_open")
        gauge = {"client": "fold", "host": "a.example"}
        assert registry.get_sample_value("klayengo_circuit_breaker_state", gauge) == 1
        other = {"client": "fold", "host": "_other"}
        assert registry.get_sample_value("klayengo_circuit_breaker_state", other) is None
        transitions = "klayengo_circuit_breaker_transitions_total"
        assert registry.get_sample_value(transitions, {**other, "to_state": "open"}) == 2
        assert registry.get_sample_value(transitions, {**other, "to_state": "half_open"}) == 1
        events.breaker_removed("a.example")
        assert registry.get_sample_value("klayengo_circuit_breaker_state", gauge) is None
        assert registry.get_sample_value(transitions, {**gauge, "to_state": "open"}) == 1
