"""Benchmark: the per-request cost of klayengo's metrics, on vs off (MockTransport).

(a) Whole requests through a client with ``metrics=False`` vs metrics into a private
    ``CollectorRegistry``: sync ``ResilientClient`` and ``AsyncResilientClient`` on
    asyncio and trio. Retries and breakers are off so only the metrics layer differs;
    plain httpx is shown for reference.
(b) The metric update alone, per request: klayengo's in-memory store (what the
    metrics layer does: in-flight +1/-1, count, observe the duration) vs the same
    updates through prometheus_client's labelled children, the design klayengo chose
    not to use; and the cost of one scrape of the registry.

Run: ``python -m benchmarks.bench_metrics [--quick]``.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import klayengo
from klayengo._metrics import DURATION_BUCKETS, ClientMetrics

from ._common import Stats, bench_async, bench_sync, ratio, table, target

URL = "https://api.example.com/items?id=1"
#: A request with metrics on within this factor of the same client with metrics off.
METRICS_TARGET = 1.10


def _handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def _kwargs(metrics: object) -> dict[str, Any]:
    return {
        "transport": httpx.MockTransport(_handler),
        "retry": None,
        "breaker": None,
        "metrics": metrics,
        "name": "bench",
    }


def _rows(stats: dict[str, Stats], baseline: str) -> list[list[str]]:
    base = stats[baseline]
    for name, s in stats.items():
        if name.endswith("metrics on"):
            r = s.median / base.median
            _NOTES.append(
                target(
                    "metrics",
                    f"metrics on vs off, {name.split(',')[0]}",
                    f"≤ {METRICS_TARGET:.2f}x",
                    f"{r:.2f}x ({s.median - base.median:+.2f} µs)",
                    r <= METRICS_TARGET,
                )
            )
    return [
        [name, s.cell(), ratio(s, base), f"{s.median - base.median:+.2f}"]
        for name, s in stats.items()
    ]


_NOTES: list[str] = []


def client_overhead(quick: bool) -> str:
    _NOTES.clear()
    number = 1_000 if quick else 5_000
    repeat = 3 if quick else 7
    off = klayengo.ResilientClient(**_kwargs(False))
    on = klayengo.ResilientClient(**_kwargs(CollectorRegistry()))
    plain = httpx.Client(transport=httpx.MockTransport(_handler))
    rows = _rows(
        bench_sync(
            {
                "sync, metrics=False": lambda: off.get(URL),
                "sync, metrics on": lambda: on.get(URL),
                "sync, plain httpx.Client": lambda: plain.get(URL),
            },
            number=number,
            repeat=repeat,
        ),
        "sync, metrics=False",
    )
    for backend in ("asyncio", "trio"):
        aoff = klayengo.AsyncResilientClient(**_kwargs(False))
        aon = klayengo.AsyncResilientClient(**_kwargs(CollectorRegistry()))
        rows += _rows(
            bench_async(
                {
                    f"{backend}, metrics=False": lambda c=aoff: c.get(URL),  # type: ignore[misc]
                    f"{backend}, metrics on": lambda c=aon: c.get(URL),  # type: ignore[misc]
                },
                number=number,
                repeat=repeat,
                backend=backend,
            ),
            f"{backend}, metrics=False",
        )
    return (
        f"(a) One GET per operation on MockTransport, {number} per repeat, {repeat} repeats; "
        "retries and breakers off so only the metrics layer differs. Ratio and Δ are against "
        "`metrics=False` on the same runner.\n\n"
        + table(["client", "µs/request (spread)", "ratio", "Δ µs"], rows)
        + "\n\n"
        + "\n".join(_NOTES)
    )


def _children() -> Any:
    registry = CollectorRegistry()
    requests = Counter(
        "b_requests", "", ["client", "host", "method", "status_code"], registry=registry
    )
    duration = Histogram(
        "b_request_duration_seconds",
        "",
        ["client", "host", "method"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    in_flight = Gauge("b_requests_in_flight", "", ["client", "host"], registry=registry)
    request = httpx.Request("GET", URL)

    def update() -> None:
        host = request.url.host
        gauge = in_flight.labels("bench", host)
        gauge.inc()
        gauge.dec()
        requests.labels("bench", host, request.method, "200").inc()
        duration.labels("bench", host, request.method).observe(0.012)

    return update


def update_cost(quick: bool) -> str:
    number = 10_000 if quick else 50_000
    repeat = 3 if quick else 7
    store = ClientMetrics("bench")
    request = httpx.Request("GET", URL)

    def ours() -> None:
        series = store.request_started(request)
        store.request_response(series, 200, 0.012)

    stats = bench_sync(
        {
            "klayengo store (one collector per registry)": ours,
            "prometheus_client labelled children": _children(),
        },
        number=number,
        repeat=repeat,
    )
    # A scrape of a registry holding 100 hosts x 3 methods of one client.
    registry = CollectorRegistry()
    with klayengo.ResilientClient(**_kwargs(klayengo.MetricsPolicy(registry=registry))) as c:
        for i in range(100):
            for method in ("GET", "POST", "PUT"):
                c.request(method, f"https://h{i}.example/")
    scrape = bench_sync(
        {"scrape (100 hosts x 3 methods)": lambda: generate_latest(registry)},
        number=5 if quick else 20,
        repeat=repeat,
        warmup=2,
    )
    rows = _rows(stats, "klayengo store (one collector per registry)")
    rows.append(
        [
            "scrape (100 hosts x 3 methods), µs per scrape",
            scrape["scrape (100 hosts x 3 methods)"].cell(),
            "",
            "",
        ]
    )
    return (
        f"(b) The metric update alone per request ({number} per repeat, {repeat} repeats): "
        "in-flight +1/-1, request count, duration observation.\n\n"
        + table(["implementation", "µs (spread)", "ratio", "Δ µs"], rows)
    )


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    return "\n\n".join(
        ["## Metrics: per-request cost, on vs off", client_overhead(quick), update_cost(quick)]
    )


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
