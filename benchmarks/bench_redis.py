"""Shared-state cost: each backend operation on Redis (loopback) against the memory backend.

Run from the repository root::

    python -m benchmarks.bench_redis          # about 20 s
    python -m benchmarks.bench_redis --quick  # a few seconds, noisier

Starts its own ``redis-server`` on a free loopback port (``--save '' --appendonly no``)
and measures, per call, median and spread over repeated runs with all cases
interleaved so machine noise hits them alike:

- breaker hot path: ``get_signal`` (one Lua round trip: the signal and the
  server's clock);
- limiter hot path: ``reserve`` (the whole GCRA decision in one Lua round trip);
- a request with both (``get_signal`` + ``reserve``: two round trips);
- cache: ``get`` of a 1 KiB hit and ``set`` of 1 KiB with a TTL (one command each);
- the same breaker read through the asyncio client (``aget_signal``, asyncio);
- whole requests through ``ResilientClient`` (breaker and a rate limit on, retry
  and metrics off, ``httpx.MockTransport`` inner) with the memory backend and with
  Redis: what sharing adds per request (one round trip for the breaker signal,
  one for the limiter).

The ratio column is Redis over the memory backend measured in the same run; the
overhead column is the difference, i.e. what sharing adds to each request.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version

import httpx

from klayengo import RateLimitPolicy, RedisBackend, ResilientClient
from klayengo._core.backend import MemoryBackend, Stores
from klayengo._core.clock import SYSTEM_CLOCK
from klayengo._core.events import Events

_Case = Callable[[int], None]
_VALUE = b"x" * 1024
#: A tiny GCRA interval: reservations stay admitted with no wait however many run.
_INTERVAL = 1e-6


@contextmanager
def _redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            for _ in range(250):  # up to 5 s to start listening
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def _cases(stores: Stores) -> dict[str, _Case]:
    signals, limits, cache = stores.signals, stores.limits, stores.cache
    cache.set("hit", _VALUE, 3600)

    def get_signal(n: int) -> None:
        for _ in range(n):
            signals.get_signal("api.example")

    def reserve(n: int) -> None:
        for _ in range(n):
            limits.reserve("api.example", _INTERVAL, 1_000_000, None)

    def both(n: int) -> None:
        for _ in range(n):
            signals.get_signal("api.example")
            limits.reserve("api.example", _INTERVAL, 1_000_000, None)

    def cache_get(n: int) -> None:
        for _ in range(n):
            cache.get("hit")

    def cache_set(n: int) -> None:
        for _ in range(n):
            cache.set("written", _VALUE, 60)

    def aget_signal(n: int) -> None:
        async def main() -> None:
            for _ in range(n):
                await signals.aget_signal("api.example")

        asyncio.run(main())

    return {
        "breaker: get_signal": get_signal,
        "limiter: reserve": reserve,
        "request: get_signal + reserve": both,
        "cache: get (1 KiB hit)": cache_get,
        "cache: set (1 KiB, TTL)": cache_set,
        "breaker: aget_signal (asyncio)": aget_signal,
    }


def _client_case(backend: RedisBackend | None) -> tuple[_Case, ResilientClient]:
    client = ResilientClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
        backend=backend,
        retry=None,
        metrics=False,
        # A limit that never makes a request wait: the cost measured is the decision.
        rate_limit=RateLimitPolicy(rate=1e6, burst=1_000_000),
    )

    def get(n: int) -> None:
        for _ in range(n):
            client.get("http://api.example/items")

    return get, client


def _measure(cases: dict[str, _Case], number: int, repeats: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():  # warm-up: connections, script cache
        case(50)
    for _ in range(repeats):
        for name, case in cases.items():
            start = time.perf_counter_ns()
            case(number)
            samples[name].append((time.perf_counter_ns() - start) / number)
    return samples


def _fmt(ns: float) -> str:
    return f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    number, repeats = (300, 3) if quick else (2_000, 7)
    lines = ["## Redis backend", ""]
    try:
        server = _redis_server()
        url = server.__enter__()
    except FileNotFoundError:
        return "\n".join([*lines, "Skipped: no `redis-server` binary on PATH.", ""])
    try:
        memory = _cases(MemoryBackend().bind(clock=SYSTEM_CLOCK, events=Events()))
        backend = RedisBackend(url, prefix="bench:", timeout=1.0)
        redis = _cases(backend.bind(clock=SYSTEM_CLOCK, events=Events()))
        memory_get, memory_client = _client_case(None)
        redis_get, redis_client = _client_case(backend)
        memory["client: GET, breaker + limiter"] = memory_get
        redis["client: GET, breaker + limiter"] = redis_get
        cases = {f"memory {k}": v for k, v in memory.items()}
        cases.update({f"redis {k}": v for k, v in redis.items()})
        samples = _measure(cases, number, repeats)
        memory_client.close()
        redis_client.close()
        backend.close()
        server_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]
    finally:
        server.__exit__(None, None, None)
    lines += [
        f"Per call; median and spread (min-max) over {repeats} runs of {number:,} calls, "
        f"one client over loopback, Python {sys.version.split()[0]}, "
        f"redis-py {version('redis')}, Redis {server_version.removeprefix('v=')}.",
        "",
        "| operation | memory | Redis | Redis spread | overhead | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in memory:
        mem = statistics.median(samples[f"memory {name}"])
        red_samples = samples[f"redis {name}"]
        red = statistics.median(red_samples)
        lines.append(
            f"| {name} | {_fmt(mem)} | {_fmt(red)} | "
            f"{_fmt(min(red_samples))} - {_fmt(max(red_samples))} | "
            f"+{_fmt(red - mem)} | {red / mem:.0f}x |"
        )
    lines += [
        "",
        "Each Redis operation is one round trip (the limiter's whole decision and the "
        "breaker signal read are single Lua scripts); a request through breaker and "
        "limiter pays two. The async row includes `asyncio.run` once per run. The client "
        "row is a whole `ResilientClient.get` (MockTransport inner): a closed breaker "
        "reads the shared signal (one round trip) and the limiter reserves (one).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
