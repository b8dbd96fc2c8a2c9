"""Benchmark 1: the whole stack vs plain httpx.

(a) Pure overhead per request on MockTransport, sync and async: ``ResilientClient`` with
    every layer on (cache enabled but missing, breaker closed, limiter not binding,
    metrics on) vs plain ``httpx.Client`` on the same handler; and the same on httpx2
    (``klayengo.httpx2`` vs plain ``httpx2``).
(b) Against a real loopback HTTP server in a separate process: sequential (sync) and
    async at several concurrency / connection-pool settings, a fresh client per row, on
    each flavour.
(c) The httpcore/sniffio trap: plain httpx async against the loopback server with and
    without ``sniffio`` importable, each in a child process.

Run: ``python -m benchmarks.bench_stack``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

import anyio
import httpx
import httpx2
from prometheus_client import CollectorRegistry

import klayengo
import klayengo.httpx2

from ._common import Flavour, bench_async, bench_sync, ratio, table, target
from ._server import async_rate as _async_rate
from ._server import server_process
from ._server import sync_rate as _sync_rate

SECTION = "1. stack"
#: (a) the whole stack on MockTransport within this factor of plain httpx.
MOCK_TARGET = 1.25
#: (b) loopback throughput within this fraction of plain httpx.
LOOPBACK_TARGET = 0.95

NO_STORE = {"Cache-Control": "no-store", "Content-Type": "text/plain"}


#: Each flavour: its library, klayengo's surface on it, and its name in the tables.
FLAVOURS = (Flavour(httpx, klayengo, "httpx"), Flavour(httpx2, klayengo.httpx2, "httpx2"))


def _handler(library: Any) -> Any:
    def handler(request: Any) -> Any:
        return library.Response(200, headers=NO_STORE, content=b"ok")

    return handler


def layers() -> dict[str, Any]:
    """Every layer on, none binding."""
    return {
        "retry": klayengo.RetryPolicy(),
        "breaker": klayengo.CircuitBreakerPolicy(),
        "rate_limit": klayengo.RateLimitPolicy(rate=1e9, burst=1_000_000),
        "cache": klayengo.CachePolicy(),
        "metrics": klayengo.MetricsPolicy(registry=CollectorRegistry()),
    }


#: A ResilientClient with every layer off: what the client itself costs.
NO_LAYERS: dict[str, Any] = {
    "retry": None,
    "breaker": None,
    "rate_limit": None,
    "cache": None,
    "metrics": False,
}

COOKIE_NOTE = (
    "How to read these rows: klayengo's clients skip httpx's cookie extraction for "
    "responses without `Set-Cookie` (httpx builds urllib-compatible request and "
    "response wrappers for every response, only for the standard library to find no "
    "cookie field and return). The saving (the `no layers` rows) is part of what a user "
    "switching clients gets, so the target compares the clients as they are; the "
    "`five layers alone` figures give the layers' own cost, measured against that "
    "cheaper client."
)


def mock_overhead(quick: bool, flavour: Flavour) -> str:
    number = 2_000 if quick else 10_000
    lib, surface, name = flavour
    mock = lib.MockTransport(_handler(lib))
    plain = lib.Client(transport=mock)
    ours = surface.ResilientClient(transport=mock, **layers())
    bare = surface.ResilientClient(transport=mock, **NO_LAYERS)
    url = "https://api.example.com/items"
    sync = bench_sync(
        {
            f"{name}.Client": lambda: plain.get(url),
            "ResilientClient": lambda: ours.get(url),
            "ResilientClient, no layers": lambda: bare.get(url),
        },
        number=number,
    )
    aplain = lib.AsyncClient(transport=mock)
    aours = surface.AsyncResilientClient(transport=mock, **layers())
    abare = surface.AsyncResilientClient(transport=mock, **NO_LAYERS)
    asyn = bench_async(
        {
            f"{name}.AsyncClient": lambda: aplain.get(url),
            "AsyncResilientClient": lambda: aours.get(url),
            "AsyncResilientClient, no layers": lambda: abare.get(url),
        },
        number=number,
    )
    rows, notes = [], []
    for kind, base, cand, stats in (
        ("sync", f"{name}.Client", "ResilientClient", sync),
        ("async", f"{name}.AsyncClient", "AsyncResilientClient", asyn),
    ):
        b, c, n = stats[base], stats[cand], stats[f"{cand}, no layers"]
        rows.append([base, b.cell(), "1.00x", "—"])
        rows.append([cand, c.cell(), ratio(c, b), f"{c.median - b.median:+.1f}"])
        rows.append([f"{cand}, no layers", n.cell(), ratio(n, b), f"{n.median - b.median:+.1f}"])
        r = c.median / b.median
        notes.append(
            target(
                SECTION,
                f"(a) whole stack on MockTransport, {name}, {kind}",
                f"≤ {MOCK_TARGET:.2f}x plain {name}",
                f"{r:.2f}x ({c.median - b.median:+.1f} µs/request)",
                r <= MOCK_TARGET,
            )
        )
        notes.append(
            target(
                SECTION,
                f"(a) the five layers alone: every layer on vs none, {name}, {kind}",
                "(reported)",
                f"{c.median / n.median:.2f}x ({c.median - n.median:+.1f} µs/request)",
                None,
            )
        )
    return (
        table(["client (MockTransport)", "µs/request median (spread)", "ratio", "µs added"], rows)
        + "\n\n"
        + "\n".join(notes)
        + "\n\n"
        + COOKIE_NOTE
    )


def loopback(quick: bool, flavour: Flavour) -> str:
    lib, surface, name = flavour
    n_seq = 500 if quick else 2_000
    # Loopback runs swing from one to the next (two processes on two cores): the same
    # client's async runs at 10 tasks / 10 connections fall near 1,950 or near 2,450 req/s,
    # run by run. Many shorter interleaved runs per row keep the medians steady.
    n_async = 1_000 if quick else 2_000
    repeat = 3 if quick else 7
    repeat_async = 3 if quick else 15
    rows: list[list[str]] = []
    ratios: list[tuple[str, float]] = []

    def add(scenario: str, samples: dict[str, list[float]]) -> None:
        row, r = _rate_row(scenario, samples)
        rows.append(row)
        ratios.append((scenario, r))

    with server_process() as base_url:
        url = base_url + "/items"
        # Warm the server and the loopback path.
        with lib.Client() as warm:
            for _ in range(200):
                warm.get(url)

        def seq_row() -> None:
            samples: dict[str, list[float]] = {"plain": [], "ours": []}
            for _ in range(repeat):
                with lib.Client() as c:
                    samples["plain"].append(_sync_rate(c, url, n_seq))
                with surface.ResilientClient(**layers()) as c:
                    samples["ours"].append(_sync_rate(c, url, n_seq))
            add("sync, sequential", samples)

        def async_row(concurrency: int, connections: int) -> None:
            limits = lib.Limits(max_connections=connections, max_keepalive_connections=connections)
            samples: dict[str, list[float]] = {"plain": [], "ours": []}

            async def one(kind: str) -> float:
                if kind == "plain":
                    async with lib.AsyncClient(limits=limits) as c:
                        return await _async_rate(c, url, n_async, concurrency)
                async with surface.AsyncResilientClient(limits=limits, **layers()) as c:
                    return await _async_rate(c, url, n_async, concurrency)

            for _ in range(repeat_async):
                for kind in ("plain", "ours"):
                    samples[kind].append(anyio.run(one, kind))
            add(f"async, {concurrency} tasks, {connections} connections", samples)

        seq_row()
        for concurrency, connections in ((50, 10), (50, 50), (10, 10)):
            async_row(concurrency, connections)
    notes = [
        target(
            SECTION,
            f"(b) loopback, {name}, {scenario}",
            f"≥ {LOOPBACK_TARGET:.2f}x plain {name} throughput",
            f"{r:.3f}x ({(r - 1) * 100:+.1f}%)",
            r >= LOOPBACK_TARGET,
        )
        for scenario, r in ratios
    ]
    return (
        table(
            [
                f"loopback scenario ({name})",
                f"{name} req/s median (spread)",
                "klayengo req/s median (spread)",
                f"klayengo / {name} throughput",
            ],
            rows,
        )
        + "\n\n"
        + "\n".join(notes)
    )


def _rate_row(name: str, samples: dict[str, list[float]]) -> tuple[list[str], float]:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    r = statistics.median(samples["ours"]) / statistics.median(samples["plain"])
    row = [name, cell(samples["plain"]), cell(samples["ours"]), f"{r:.3f} ({(r - 1) * 100:+.1f}%)"]
    return row, r


_PROBE = """
import sys, time, importlib.abc
if {block}:
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "sniffio" or name.startswith("sniffio."):
                raise ModuleNotFoundError("blocked for the benchmark", name=name)
            return None
    sys.meta_path.insert(0, Block())
import anyio, httpx
from benchmarks._server import async_rate as _async_rate
url = sys.argv[1]
async def main():
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10)) as c:
        await _async_rate(c, url, 500, 10)
        return await _async_rate(c, url, {n}, 10)
print(anyio.run(main))
"""


def sniffio_trap(quick: bool) -> str:
    n = 1_000 if quick else 3_000
    rows = []
    with server_process() as base_url:
        results: dict[str, list[float]] = {"with sniffio": [], "sniffio blocked": []}
        for _ in range(3):
            for name, block in (("with sniffio", False), ("sniffio blocked", True)):
                out = subprocess.run(
                    [sys.executable, "-c", _PROBE.format(block=block, n=n), base_url + "/x"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[name].append(float(out.stdout.strip().splitlines()[-1]))
    base = statistics.median(results["with sniffio"])
    for name, values in results.items():
        med = statistics.median(values)
        rows.append(
            [name, f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})", f"{med / base:.2f}x"]
        )
    blocked = statistics.median(results["sniffio blocked"]) / base
    return (
        table(
            [
                "plain httpx.AsyncClient, 10 tasks/10 connections",
                "req/s median (spread)",
                "vs with sniffio",
            ],
            rows,
        )
        + "\n\n"
        + target(
            SECTION,
            "(c) a default install takes httpcore's fast path",
            "`sniffio` installed with klayengo (a declared dependency)",
            f"sniffio {_installed('sniffio')}; without it plain httpx runs at {blocked:.2f}x",
            _installed("sniffio") != "missing",
        )
    )


def _installed(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def run(quick: bool = False) -> str:
    parts = [
        "## 1. Stack overhead vs plain httpx and plain httpx2",
        "",
        "Every layer on: retry and breaker at defaults (breaker closed), rate limit 1e9/s with a "
        "burst of 1e6 (never binding), cache enabled with every response `no-store` (a miss "
        "each time), metrics on into a private registry. Targets: (a) ≤ 1.25x of plain httpx on "
        "MockTransport; (b) within 5% of plain httpx throughput against a loopback server.",
        "",
        "### (a) MockTransport, per request",
        "",
        "\n\n".join(mock_overhead(quick, flavour) for flavour in FLAVOURS),
        "",
        "### (b) Loopback server in a separate process (raw asyncio HTTP/1.1, TCP_NODELAY, keep-alive)",
        "",
        "A fresh client per row and per repeat; requests/s over the whole run. The same "
        "scenarios on httpx, then on httpx2 (klayengo.httpx2 against plain httpx2).",
        "",
        "\n\n".join(loopback(quick, flavour) for flavour in FLAVOURS),
        "",
        "### (c) httpcore without sniffio",
        "",
        "httpcore 1.0.9 tries `import sniffio` for every async lock it creates; anyio ≥ 4.16 no "
        "longer installs sniffio. klayengo depends on `sniffio` so a default install takes the "
        "fast path. Each row runs in a child process.",
        "",
        sniffio_trap(quick),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(run(quick="--quick" in args))


if __name__ == "__main__":
    main()
