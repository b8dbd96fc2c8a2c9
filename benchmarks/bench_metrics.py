"""Per-request cost of klayengo's metrics: on vs off, on httpx.MockTransport.

Run from the repository root::

    python -m benchmarks.bench_metrics [--quick]

Two tables:

1. whole requests through a client (sync ``ResilientClient``, asyncio
   ``AsyncResilientClient``) with ``metrics=False`` and with metrics into a fresh
   ``CollectorRegistry``; retries and breakers off so only the metrics layer differs;
   plain ``httpx.Client`` as the reference;
2. the metric update alone, per request: klayengo's in-memory store (what the metrics
   layer does) vs the same four updates through prometheus_client's labelled children
   (``Counter``/``Histogram``/``Gauge``), the design klayengo chose not to use.

Each figure is the median over repeated runs, with the spread (min-max) of those runs;
ratios are to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from klayengo import AsyncResilientClient, ResilientClient
from klayengo._metrics import DURATION_BUCKETS, ClientMetrics

URL = "http://api.example/items?id=1"
REQUESTS = 2000
REPEATS = 9
UPDATES = 50_000


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def _measure(run: Callable[[int], None], n: int, repeats: int) -> list[float]:
    """Microseconds per operation for each of ``repeats`` runs of ``n`` operations."""
    run(max(1, n // 10))  # warm-up
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(n)
        results.append((time.perf_counter() - start) / n * 1e6)
    return results


def _sync_client(metrics: object | None) -> Callable[[int], None]:
    transport = httpx.MockTransport(_ok)
    if metrics is None:
        client: httpx.Client = httpx.Client(transport=transport)
    else:
        client = ResilientClient(
            transport=transport, metrics=metrics, retry=None, breaker=None, name="bench"
        )

    def run(n: int) -> None:
        get = client.get
        for _ in range(n):
            get(URL)

    return run


def _async_client(metrics: object) -> Callable[[int], None]:
    def run(n: int) -> None:
        async def main() -> None:
            async with AsyncResilientClient(
                transport=httpx.MockTransport(_ok),
                metrics=metrics,
                retry=None,
                breaker=None,
                name="bench",
            ) as client:
                for _ in range(n):
                    await client.get(URL)

        asyncio.run(main())

    return run


def _store_updates() -> Callable[[int], None]:
    store = ClientMetrics("bench")
    request = httpx.Request("GET", URL)

    def run(n: int) -> None:
        for _ in range(n):
            series = store.request_started(request)
            store.request_response(series, 200, 0.012)

    return run


def _prometheus_children() -> Callable[[int], None]:
    registry = CollectorRegistry()
    requests = Counter(
        "b_requests", "", ["client", "host", "method", "status_code"], registry=registry
    )
    duration = Histogram(
        "b_duration_seconds",
        "",
        ["client", "host", "method"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    in_flight = Gauge("b_in_flight", "", ["client", "host"], registry=registry)
    request = httpx.Request("GET", URL)

    def run(n: int) -> None:
        for _ in range(n):
            # The same work per request: label lookups, in-flight +1/-1, count, observe.
            host = request.url.host
            gauge = in_flight.labels("bench", host)
            gauge.inc()
            gauge.dec()
            requests.labels("bench", host, request.method, "200").inc()
            duration.labels("bench", host, request.method).observe(0.012)

    return run


def _row(name: str, runs: list[float], base: float) -> str:
    med = statistics.median(runs)
    return (
        f"| {name} | {med:.2f} | {min(runs):.2f}-{max(runs):.2f} | {med / base:.2f}x "
        f"| {med - base:+.2f} |"
    )


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    n = REQUESTS // 4 if quick else REQUESTS
    repeats = 3 if quick else REPEATS
    updates = UPDATES // 10 if quick else UPDATES

    httpx_runs = _measure(_sync_client(None), n, repeats)
    off = _measure(_sync_client(False), n, repeats)
    on = _measure(_sync_client(CollectorRegistry()), n, repeats)
    aoff = _measure(_async_client(False), n, repeats)
    aon = _measure(_async_client(CollectorRegistry()), n, repeats)
    store = _measure(_store_updates(), updates, repeats)
    children = _measure(_prometheus_children(), updates, repeats)

    base = statistics.median(off)
    abase = statistics.median(aoff)
    sbase = statistics.median(store)
    lines = [
        "## Metrics: per-request cost (MockTransport)",
        "",
        f"{n} GET requests per run, {repeats} runs; µs per request, median and min-max spread. "
        "Retries and breakers off, so only the metrics layer differs.",
        "",
        "| configuration | µs/request | spread | ratio to metrics off | Δ µs |",
        "|---|---|---|---|---|",
        _row("plain httpx.Client", httpx_runs, base),
        _row("ResilientClient, metrics=False", off, base),
        _row("ResilientClient, metrics on", on, base),
        _row("AsyncResilientClient (asyncio), metrics=False", aoff, abase),
        _row("AsyncResilientClient (asyncio), metrics on", aon, abase),
        "",
        f"Metric update alone ({updates} updates per run): µs per request.",
        "",
        "| implementation | µs/request | spread | ratio to klayengo's store | Δ µs |",
        "|---|---|---|---|---|",
        _row("klayengo store (custom collector)", store, sbase),
        _row("prometheus_client labelled children", children, sbase),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and runs")
    print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
