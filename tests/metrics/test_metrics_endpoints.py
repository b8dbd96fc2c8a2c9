"""What the ``/metrics`` endpoints answer: paths (404 elsewhere), format negotiation
(OpenMetrics on request), over real loopback HTTP for both serve_metrics and the ASGI
app (under uvicorn), plus the mount shapes of ``root_path``."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import klayengo
from klayengo import CircuitBreakerPolicy, ResilientClient
from klayengo._metrics import METRIC_NAMES

#: What Prometheus 2.x sends (scrape/scrape.go, acceptHeader): OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
OPENMETRICS = "application/openmetrics-text"
#: Families a populated registry has (counters without ``_total``, as parsers name them).
FAMILIES = {name.removesuffix("_total") for name in METRIC_NAMES}


@pytest.fixture(scope="module")
def registry() -> Iterator[CollectorRegistry]:
    """A registry with samples in every klayengo family, from an open client."""
    registry = CollectorRegistry()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fail":
            return httpx.Response(500)
        if request.url.host == "err.example":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    client = ResilientClient(
        transport=httpx.MockTransport(handler),
        metrics=registry,
        name="endpoints",
        retry=None,
        breaker=CircuitBreakerPolicy(consecutive_failures=1),
    )
    client.get("http://ok.example/")
    client.get("http://down.example/fail")  # opens that breaker
    with pytest.raises(httpx.ConnectError):
        client.get("http://err.example/")  # opens that breaker too
    events = client._klayengo.events
    events.retry("ok.example", "status", 1, 0.1)
    events.retry_budget_exhausted("ok.example")
    events.breaker_rejected("down.example")
    events.rate_limited("ok.example")
    events.rate_limit_wait("ok.example", 0.3)
    events.cache_result("ok.example", "hit")
    events.cache_size(2, 2048)
    events.cache_evicted(1)
    events.coalesced("ok.example")
    events.backend_error("breaker.get")
    yield registry
    client.close()


@pytest.fixture(scope="module")
def server(registry: CollectorRegistry) -> Iterator[klayengo.MetricsServer]:
    with klayengo.serve_metrics(0, registry=registry) as server:
        yield server


def root(server: klayengo.MetricsServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def check_text_format(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert set(families) == FAMILIES
    assert all(f.samples for f in families.values())


def check_openmetrics(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(OPENMETRICS)
    text = response.text
    assert text.endswith("# EOF\n")
    # The strict OpenMetrics parser: it rejects anything the format does not allow.
    families = {f.name: f for f in openmetrics_families(text)}
    assert set(families) == FAMILIES
    assert families["klayengo_requests"].type == "counter"
    assert families["klayengo_request_duration_seconds"].type == "histogram"
    assert families["klayengo_circuit_breaker_state"].type == "gauge"
    states = {s.labels["host"]: s.value for s in families["klayengo_circuit_breaker_state"].samples}
    # Every breaker has a series, the one that never changed state included.
    assert states == {"ok.example": 0, "down.example": 1, "err.example": 1}


def check_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert "/metrics" in response.text
    assert "klayengo_requests" not in response.text


# -- serve_metrics ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics", "/", "/metrics?x=1"])
def test_the_metrics_paths_answer(server: klayengo.MetricsServer, path: str) -> None:
    check_text_format(httpx.get(root(server) + path, timeout=5))


@pytest.mark.parametrize("path", ["/nope", "/metrics/", "/metricsx", "/favicon.ico", "/metrics/x"])
def test_other_paths_are_not_found(server: klayengo.MetricsServer, path: str) -> None:
    check_not_found(httpx.get(root(server) + path, timeout=5))
    check_not_found(httpx.post(root(server) + path, content=b"x", timeout=5))


@pytest.mark.parametrize(
    "accept",
    [
        PROMETHEUS_ACCEPT,
        OPENMETRICS,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        f"text/html, {OPENMETRICS};version=1.0.0",
    ],
)
def test_openmetrics_when_the_scraper_asks_for_it(
    server: klayengo.MetricsServer, accept: str
) -> None:
    check_openmetrics(httpx.get(server.url, headers={"Accept": accept}, timeout=5))


@pytest.mark.parametrize("accept", ["text/plain", "text/plain;version=0.0.4", "*/*", "text/html"])
def test_the_text_format_otherwise(server: klayengo.MetricsServer, accept: str) -> None:
    check_text_format(httpx.get(server.url, headers={"Accept": accept}, timeout=5))


def test_gzip_and_name_filters_still_work(server: klayengo.MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /metrics?name[]=klayengo_cache_entries HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Content-Encoding: gzip" in head
    text = gzip.decompress(body).decode()
    assert [f.name for f in text_string_to_metric_families(text)] == ["klayengo_cache_entries"]


def test_other_methods_on_the_metrics_path(server: klayengo.MetricsServer) -> None:
    response = httpx.post(server.url, content=b"x", timeout=5)
    assert response.status_code == 405
    assert response.headers["allow"] == "OPTIONS,GET"
    assert httpx.options(server.url, timeout=5).status_code == 200


def test_nothing_is_logged_per_scrape(
    server: klayengo.MetricsServer, capfd: pytest.CaptureFixture[str]
) -> None:
    httpx.get(server.url, timeout=5)
    httpx.get(root(server) + "/nope", timeout=5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_ipv6_loopback(registry: CollectorRegistry) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = klayengo.serve_metrics(0, "::1", registry=registry)
    except OSError as exc:  # IPv6 compiled in but ::1 not configured
        pytest.skip(f"cannot bind ::1: {exc}")
    with server:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        check_openmetrics(httpx.get(server.url, headers={"Accept": OPENMETRICS}, timeout=5))
        check_not_found(httpx.get(f"http://[::1]:{server.port}/x", timeout=5))


def test_a_busy_port_raises_and_stop_frees_it(registry: CollectorRegistry) -> None:
    with klayengo.serve_metrics(0, registry=registry) as first:
        with pytest.raises(OSError):
            klayengo.serve_metrics(first.port, registry=registry)
    with klayengo.serve_metrics(first.port, registry=registry) as again:  # free again
        check_text_format(httpx.get(again.url, timeout=5))


# -- the ASGI app ----------------------------------------------------------------------
async def asgi_get(
    app: Any, path: str, root_path: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One GET through ``app`` with a hand-built scope (the mount shapes servers use)."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers or [],
    }
    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.lower(): v for k, v in start["headers"]}, body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "root_path", "status"),
    [
        # On its own.
        ("/metrics", "", 200),
        ("/", "", 200),
        ("/nope", "", 404),
        ("/metrics/", "", 404),
        # Mounted at /metrics, the ASGI spec's shape: `path` keeps the mount point.
        ("/metrics", "/metrics", 200),
        ("/metrics/", "/metrics", 200),
        ("/metrics/nope", "/metrics", 404),
        # Mounted at /metrics, the older shape: `path` is what is left below it.
        ("", "/metrics", 200),
        ("/", "/metrics", 200),
        ("/nope", "/metrics", 404),
        # Under a proxy prefix (uvicorn --root-path /api).
        ("/api/metrics", "/api", 200),
        ("/api", "/api", 200),
        ("/api/other", "/api", 404),
        ("/apix/metrics", "/api", 404),
    ],
)
async def test_asgi_paths(
    registry: CollectorRegistry, path: str, root_path: str, status: int
) -> None:
    app = klayengo.metrics_asgi_app(registry)
    code, headers, body = await asgi_get(app, path, root_path)
    assert code == status
    assert headers[b"content-type"].startswith(b"text/plain")
    assert (b"klayengo_requests_total" in body) == (status == 200)


@pytest.mark.anyio
async def test_asgi_openmetrics(registry: CollectorRegistry) -> None:
    app = klayengo.metrics_asgi_app(registry)
    code, headers, body = await asgi_get(
        app, "/metrics", headers=[(b"accept", PROMETHEUS_ACCEPT.encode())]
    )
    assert code == 200 and headers[b"content-type"].startswith(OPENMETRICS.encode())
    assert {f.name for f in openmetrics_families(body.decode())} == FAMILIES


@pytest.fixture(scope="module")
def uvicorn_roots(registry: CollectorRegistry) -> Iterator[tuple[str, str]]:
    """The ASGI app under real uvicorn servers on loopback: on its own, and behind a
    ``root_path="/api"`` proxy prefix. Yields their base URLs."""
    import uvicorn

    app = klayengo.metrics_asgi_app(registry)
    servers, threads, roots = [], [], []
    for root_path in ("", "/api"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, root_path=root_path, log_level="error"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        roots.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 10
        while not all(s.started for s in servers):
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield roots[0], roots[1]
    finally:
        for server in servers:
            server.should_exit = True
        for thread in threads:
            thread.join(10)


def test_asgi_app_under_uvicorn(uvicorn_roots: tuple[str, str]) -> None:
    plain, prefixed = uvicorn_roots
    for base in (plain, prefixed):
        check_text_format(httpx.get(base + "/metrics", timeout=5))
        check_text_format(httpx.get(base + "/", timeout=5))
        check_openmetrics(httpx.get(base + "/metrics", headers={"Accept": OPENMETRICS}, timeout=5))
        check_not_found(httpx.get(base + "/nope", timeout=5))
        check_not_found(httpx.post(base + "/metrics/x", content=b"body", timeout=5))


def test_an_idle_connection_neither_blocks_scrapes_nor_lives_for_ever(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from klayengo import _server

    monkeypatch.setattr(_server._QuietHandler, "timeout", 0.2)
    with klayengo.serve_metrics(0, registry=registry) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            check_text_format(httpx.get(server.url, timeout=5))  # served meanwhile
            assert idle.recv(1) == b""  # dropped by the server, well before our 5 s
