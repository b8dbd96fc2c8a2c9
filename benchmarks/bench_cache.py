"""Cached GET latency: klayengo's cache hit against plain httpx, a loopback GET and hishel.

Run from the repository root::

    python -m benchmarks.bench_cache          # full run (~30 s)
    python -m benchmarks.bench_cache --quick  # a smoke run

Every client asks for the same URL on a loopback HTTP/1.1 server that answers with
``Cache-Control: max-age=3600`` and an ``ETag``. Rows:

- *floor*: plain ``httpx.Client`` over ``httpx.MockTransport`` returning the response
  at once: httpx's own per-request cost with no network and no cache. No response
  served through an httpx client can beat it.
- *loopback, uncached*: plain ``httpx.Client`` going to the server every time.
- *klayengo hit*: ``ResilientClient(cache=CachePolicy())`` (default retry and breaker
  layers in the stack, ``metrics=False``), and the standalone ``CacheTransport`` on a
  plain ``httpx.Client``, after one request filled the cache.
- *hishel hit*: hishel's ``CacheTransport`` on a plain ``httpx.Client`` with an
  in-memory SQLite storage, in its default (TTL) mode and its RFC 9111 mode.

Each row is timed in ``REPEATS`` runs of ``ITERATIONS`` requests, round-robin over the
rows; the table shows the median per-request latency, the spread (min-max over runs)
and the ratio to the floor measured in the same run.

A klayengo hit with an unencoded body is handed to the client pre-read (as
MockTransport's responses are), so the client's read costs nothing; that is why a hit
can come in under the floor, whose handler builds and reads a new response each time.
The "no pre-read" row switches that off, to show what the client's read costs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import httpx2
from klayengo._httpx._transports import cache as cache_module

import klayengo
import klayengo.httpx2

from ._common import target

BODY = b'{"id": 1, "name": "widget", "tags": ["a", "b", "c"]}' * 8
HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "max-age=3600",
    "ETag": '"v1"',
}
ITERATIONS = 2000
REPEATS = 7
QUICK_ITERATIONS = 300
QUICK_REPEATS = 3
LOOPBACK_DIVISOR = 4  # the loopback row is ~10x slower: fewer requests per run
STREAMED_ROW = "klayengo ResilientClient, hit read via the stream (no pre-read)"
HIT_TARGET = 1.2  # a hit within 1.2x of the floor
HISHEL_TARGET = 1.5  # and at least 1.5x faster than hishel's fastest hit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, no Nagle: otherwise delayed ACKs add ~40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/items/1?fields=all"
    finally:
        server.shutdown()
        server.server_close()


def _mock_handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers=HEADERS, content=BODY)


def _mock_handler2(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers=HEADERS, content=BODY)


def _time_once(get: Callable[[], httpx.Response], iterations: int) -> float:
    """Per-request seconds over one run of ``iterations`` requests, GC paused."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(iterations):
            get()
        return (time.perf_counter() - start) / iterations
    finally:
        gc.enable()


def _hishel_transport(rfc: bool) -> httpx.BaseTransport:
    from hishel import SqliteStorage
    from hishel.httpx import CacheTransport as HishelTransport

    storage = SqliteStorage(
        connection=sqlite3.connect(":memory:", check_same_thread=False), default_ttl=3600
    )
    return HishelTransport(httpx.HTTPTransport(), storage=storage, rfc=rfc)


def run(quick: bool = False) -> str:
    """Run the benchmark; return its Markdown section."""
    iterations = QUICK_ITERATIONS if quick else ITERATIONS
    repeats = QUICK_REPEATS if quick else REPEATS
    with loopback() as url:
        clients: list[tuple[str, httpx.Client | httpx2.Client, bool, int]] = [
            (
                "floor: httpx.Client + MockTransport",
                httpx.Client(transport=httpx.MockTransport(_mock_handler)),
                False,
                iterations,
            ),
            (
                "klayengo ResilientClient, cache hit",
                klayengo.ResilientClient(cache=klayengo.CachePolicy(), metrics=False),
                True,
                iterations,
            ),
            (
                STREAMED_ROW,
                klayengo.ResilientClient(cache=klayengo.CachePolicy(), metrics=False),
                True,
                iterations,
            ),
            (
                "klayengo CacheTransport on httpx.Client, hit",
                httpx.Client(transport=klayengo.CacheTransport(httpx.HTTPTransport())),
                True,
                iterations,
            ),
            (
                FLOOR2_ROW,
                httpx2.Client(transport=httpx2.MockTransport(_mock_handler2)),
                False,
                iterations,
            ),
            (
                HIT2_ROW,
                klayengo.httpx2.ResilientClient(cache=klayengo.CachePolicy(), metrics=False),
                True,
                iterations,
            ),
        ]
        with contextlib.suppress(ImportError):  # hishel is in the `bench` extra
            clients += [
                (
                    "hishel CacheTransport (TTL mode), hit",
                    httpx.Client(transport=_hishel_transport(False)),
                    True,
                    iterations,
                ),
                (
                    "hishel CacheTransport (RFC 9111 mode), hit",
                    httpx.Client(transport=_hishel_transport(True)),
                    True,
                    iterations,
                ),
            ]
        clients.append(
            (
                "httpx.Client, uncached loopback GET",
                httpx.Client(),
                False,
                max(50, iterations // LOOPBACK_DIVISOR),
            )
        )
        gets = []
        for name, client, is_hit, n in clients:
            first = client.get(url)
            first.raise_for_status()
            if is_hit:  # prove the timed requests are hits
                again = client.get(url)
                hit = (
                    klayengo_hit(again)
                    if "klayengo" in name
                    else again.extensions.get("hishel_from_cache", True)
                )
                assert hit, f"{name}: the second request was not served from the cache"
            get = functools.partial(client.get, url)
            if name == STREAMED_ROW:
                get = functools.partial(_without_pre_read, get)
            for _ in range(min(200, n)):  # warm up
                get()
            gets.append((name, get, n, is_hit))
        # Round-robin over the rows, so that load from elsewhere on the machine
        # hits every row alike.
        runs: dict[str, list[float]] = {name: [] for name, *_ in gets}
        for _ in range(repeats):
            for name, get, n, _ in gets:
                runs[name].append(_time_once(get, n))
        rows = [(name, runs[name], is_hit) for name, _, _, is_hit in gets]  # name, runs, hit?
        for _, client, _, _ in clients:
            client.close()
    return _markdown(rows, iterations, repeats)


def _without_pre_read(get: Callable[[], httpx.Response]) -> httpx.Response:
    """A hit whose body the client reads through the stream, as from the network."""
    cache_module._PRELOAD = False  # type: ignore[misc]
    try:
        return get()
    finally:
        cache_module._PRELOAD = True  # type: ignore[misc]


def klayengo_hit(response: httpx.Response) -> bool:
    return bool(response.extensions.get("klayengo", {}).get("cache") == "hit")


FLOOR2_ROW = "floor: httpx2.Client + MockTransport"
HIT2_ROW = "klayengo.httpx2 ResilientClient, cache hit"


def _markdown(rows: list[tuple[str, list[float], bool]], iterations: int, repeats: int) -> str:
    floor = statistics.median(rows[0][1])
    lines = [
        "## 2. Cache: cached GET latency (httpx and httpx2)",
        "",
        f"Median per-request latency over {repeats} runs of {iterations} GETs of the same URL "
        "(loopback row: fewer requests per run); spread is min-max over runs; ratio is to the "
        "floor measured in the same run.",
        "",
        "| client | median (µs/req) | spread (µs) | ratio to floor |",
        "|---|---:|---:|---:|",
    ]
    medians = {}
    for name, runs, _ in rows:
        median = statistics.median(runs)
        medians[name] = median
        lines.append(
            f"| {name} | {median * 1e6:.1f} | {min(runs) * 1e6:.1f}-{max(runs) * 1e6:.1f} "
            f"| {median / floor:.2f}x |"
        )
    lines.append("")
    lines.append(
        f"The httpx2 rows' ratio to their own floor (httpx2 + MockTransport): "
        f"{medians[HIT2_ROW] / medians[FLOOR2_ROW]:.2f}x."
    )
    ours = medians["klayengo ResilientClient, cache hit"]
    hishel = [m for name, m in medians.items() if name.startswith("hishel")]
    lines += [
        "",
        target(
            "2. cache",
            "ResilientClient cache hit vs the plain-httpx MockTransport floor",
            f"≤ {HIT_TARGET}x",
            f"{ours / floor:.2f}x",
            ours / floor <= HIT_TARGET,
        ),
    ]
    ours2, floor2 = medians[HIT2_ROW], medians[FLOOR2_ROW]
    lines.append(
        target(
            "2. cache",
            "klayengo.httpx2 ResilientClient cache hit vs the plain-httpx2 MockTransport floor",
            f"≤ {HIT_TARGET}x",
            f"{ours2 / floor2:.2f}x",
            ours2 / floor2 <= HIT_TARGET,
        )
    )
    if hishel:
        lines.append(
            target(
                "2. cache",
                "hishel's fastest hit vs klayengo's hit",
                f"hishel ≥ {HISHEL_TARGET}x slower",
                f"{min(hishel) / ours:.2f}x slower",
                min(hishel) / ours >= HISHEL_TARGET,
            )
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
