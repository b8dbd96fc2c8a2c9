"""/metrics over real loopback HTTP (serve_metrics), promtool, and the ASGI app."""

from __future__ import annotations

import shutil
import socket
import subprocess

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import klayengo
from klayengo import MetricsPolicy, ResilientClient
from klayengo._metrics import METRIC_NAMES

OPEN_CLIENTS: list[ResilientClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> object:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


def populated_registry() -> CollectorRegistry:
    """A registry where every klayengo metric has samples, from two open clients."""
    registry = CollectorRegistry()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fail":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    policy = MetricsPolicy(registry=registry, max_hosts=2)
    for name in ("alpha", 'be"ta\n'):
        client = ResilientClient(transport=httpx.MockTransport(handler), metrics=policy, name=name)
        OPEN_CLIENTS.append(client)  # open: the live-state gauges stay in the exposition
        client.get("https://user:secret@api.example/?token=secret")
        client.get("http://[::1]:8080/")
        client.get("http://third.example/")
        client.request("PURGE", "http://api.example/")
        with pytest.raises(httpx.ConnectError):
            client.get("http://api.example/fail")
        events = client._klayengo.events
        events.retry("api.example", "status", 1, 0.1)
        events.retry_budget_exhausted("api.example")
        events.breaker_transition("api.example", "closed", "open")
        events.breaker_rejected("api.example")
        events.rate_limited("api.example")
        events.rate_limit_wait("api.example", 0.3)
        events.cache_result("api.example", "hit")
        events.cache_size(2, 2048)
        events.cache_evicted(1)
        events.coalesced("api.example")
        events.backend_error("breaker.get")
    return registry


def test_serve_metrics_on_a_real_loopback_port() -> None:
    registry = populated_registry()
    server = klayengo.serve_metrics(0, registry=registry)
    try:
        assert server.addr == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        response = httpx.get(server.url, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {name.removesuffix("_total") for name in METRIC_NAMES}
    assert set(families) == expected
    for family in families.values():
        assert family.samples, family.name
    assert families["klayengo_requests"].type == "counter"
    assert families["klayengo_request_duration_seconds"].type == "histogram"
    assert families["klayengo_circuit_breaker_state"].type == "gauge"
    clients = {s.labels["client"] for f in families.values() for s in f.samples}
    assert clients == {"alpha", "be_ta_"}
    hosts = {s.labels["host"] for f in families.values() for s in f.samples if "host" in s.labels}
    assert hosts == {"api.example", "[::1]:8080", "_other"}
    assert "secret" not in text and "token" not in text and "user" not in text
    # Stopped means the port is free again.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    server.stop()  # idempotent


def test_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package `prometheus`; .ci/run installs it)")
    registry = populated_registry()
    with klayengo.serve_metrics(0, registry=registry) as server:
        text = httpx.get(server.url, timeout=5).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_serve_metrics_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="port"):
        klayengo.serve_metrics(70000)
    with pytest.raises(TypeError, match="port"):
        klayengo.serve_metrics("9090")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry"):
        klayengo.serve_metrics(0, registry="nope")  # type: ignore[arg-type]


def test_serve_metrics_defaults_to_the_default_registry() -> None:
    with ResilientClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200)), name="served-default"
    ) as client:
        client.get("http://h/")
    with klayengo.serve_metrics(0) as server:
        text = httpx.get(server.url, timeout=5).text
    assert 'client="served-default"' in text


@pytest.mark.anyio
async def test_metrics_asgi_app() -> None:
    registry = populated_registry()
    app = klayengo.metrics_asgi_app(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert names == {name.removesuffix("_total") for name in METRIC_NAMES}


@pytest.mark.anyio
async def test_metrics_asgi_app_answers_lifespan() -> None:
    app = klayengo.metrics_asgi_app(CollectorRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    with pytest.raises(ValueError, match="HTTP only"):
        await app({"type": "websocket"}, receive, send)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry"):
        klayengo.metrics_asgi_app("nope")  # type: ignore[arg-type]
