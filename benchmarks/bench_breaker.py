"""Circuit breaker cost: the core against pybreaker, and a client-level rejection against httpx.

Run from the repository root::

    python -m benchmarks.bench_breaker          # about 15 s
    python -m benchmarks.bench_breaker --quick  # a few seconds, noisier

What is measured (per call, median and spread over repeated runs, all cases
interleaved so machine noise hits them alike):

- core, closed: ``allow`` + a no-op call + ``record``, with the two monotonic clock
  reads the transport makes, against ``pybreaker.CircuitBreaker.call`` of the same
  no-op in its closed state;
- core, open: ``allow`` answering a ``Rejection`` (plus one clock read), and the same
  rejection raised as ``CircuitOpenError`` the way the transport does, against
  ``pybreaker``'s ``call`` raising ``CircuitBreakerError`` in its open state;
- client, open: ``ResilientClient.get`` refused by an open breaker (the exception
  caught), against a plain ``httpx.Client.get`` answered by a ``MockTransport``:
  the floor of any request made through an httpx client. With the client's default
  retry policy and with ``retry=None``; metrics off in both;
- client, closed: for reference, a successful ``ResilientClient.get`` with only the
  breaker on, against the same floor (what the breaker adds to a normal request).

Targets (issue 4): core at most pybreaker's cost in both states; a client-level
rejection within 1.2x of the httpx floor.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import httpx
import pybreaker

from klayengo import CircuitBreakerPolicy, CircuitOpenError, ResilientClient
from klayengo._core.breaker import Breaker, Permit, Rejection

from ._common import target

_Case = Callable[[int], None]

_URL = "http://api.example/items"
#: The breaker core costs at most what pybreaker does, closed and open.
CORE_TARGET = 1.0
#: An open-breaker rejection through the client within this factor of httpx's floor.
CLIENT_TARGET = 1.2


def _noop() -> None:
    return None


def _core_closed() -> _Case:
    breaker = Breaker("api.example", CircuitBreakerPolicy(), time.monotonic())
    mono = time.monotonic

    def run(n: int) -> None:
        for _ in range(n):
            start = mono()
            permit = breaker.allow(start)
            assert isinstance(permit, Permit)
            _noop()
            now = mono()
            breaker.record(permit, False, now, now - start)

    return run


def _tripped_core() -> Breaker:
    policy = CircuitBreakerPolicy(consecutive_failures=1, open_duration=1e9)
    breaker = Breaker("api.example", policy, time.monotonic())
    permit = breaker.allow(time.monotonic())
    assert isinstance(permit, Permit)
    breaker.record(permit, True, time.monotonic())
    return breaker


def _core_open() -> _Case:
    breaker = _tripped_core()
    mono = time.monotonic

    def run(n: int) -> None:
        for _ in range(n):
            result = breaker.allow(mono())
            assert isinstance(result, Rejection)

    return run


def _core_open_raised() -> _Case:
    breaker = _tripped_core()
    mono = time.monotonic
    request = httpx.Request("GET", _URL)

    def run(n: int) -> None:
        for _ in range(n):
            result = breaker.allow(mono())
            assert isinstance(result, Rejection)
            try:
                raise CircuitOpenError(
                    "open", request=request, host=breaker.host, retry_after=result.retry_after
                )
            except CircuitOpenError:
                pass

    return run


def _pybreaker_closed() -> _Case:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    def run(n: int) -> None:
        call = breaker.call
        for _ in range(n):
            call(_noop)

    return run


def _pybreaker_open() -> _Case:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=1e9)

    def fail() -> None:
        raise ValueError("down")

    with contextlib.suppress(pybreaker.CircuitBreakerError):
        breaker.call(fail)
    assert breaker.current_state == "open"

    def run(n: int) -> None:
        for _ in range(n):
            # try/except, not contextlib.suppress: no context manager cost in timed loops.
            try:  # noqa: SIM105
                breaker.call(_noop)
            except pybreaker.CircuitBreakerError:
                pass

    return run


def _httpx_floor() -> _Case:
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))

    def run(n: int) -> None:
        for _ in range(n):
            client.get(_URL)

    return run


def _client_open(**kwargs: object) -> _Case:
    client = ResilientClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(503)),
        breaker=CircuitBreakerPolicy(consecutive_failures=1, open_duration=1e9),
        metrics=False,
        **kwargs,  # type: ignore[arg-type]
    )
    client.get(_URL, extensions={"klayengo": {"retry": None}})
    assert client.breaker_state("api.example") == "open"

    def run(n: int) -> None:
        for _ in range(n):
            try:  # noqa: SIM105
                client.get(_URL)
            except CircuitOpenError:
                pass

    return run


def _client_closed() -> _Case:
    client = ResilientClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
        retry=None,
        metrics=False,
    )

    def run(n: int) -> None:
        for _ in range(n):
            client.get(_URL)

    return run


def _measure(
    cases: dict[str, _Case], number: dict[str, int], repeats: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():  # warm-up
        case(200)
    for _ in range(repeats):
        for name, case in cases.items():
            n = number[name]
            start = time.perf_counter_ns()
            case(n)
            samples[name].append((time.perf_counter_ns() - start) / n)
    return samples


def _fmt(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    core_n, client_n, repeats = (2_000, 300, 5) if quick else (50_000, 3_000, 21)
    cases: dict[str, _Case] = {
        "core closed (allow + record)": _core_closed(),
        "pybreaker closed (call)": _pybreaker_closed(),
        "core open (allow -> Rejection)": _core_open(),
        "core open, raised as CircuitOpenError": _core_open_raised(),
        "pybreaker open (call -> CircuitBreakerError)": _pybreaker_open(),
        "ResilientClient open rejection (default retry)": _client_open(),
        "ResilientClient open rejection (retry=None)": _client_open(retry=None),
        "ResilientClient closed, 200 (retry=None)": _client_closed(),
        "httpx.Client + MockTransport (floor)": _httpx_floor(),
    }
    number = {name: client_n if "Client" in name else core_n for name in cases}
    samples = _measure(cases, number, repeats)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baselines = {
        "core closed (allow + record)": "pybreaker closed (call)",
        "core open (allow -> Rejection)": "pybreaker open (call -> CircuitBreakerError)",
        "core open, raised as CircuitOpenError": "pybreaker open (call -> CircuitBreakerError)",
        "ResilientClient open rejection (default retry)": "httpx.Client + MockTransport (floor)",
        "ResilientClient open rejection (retry=None)": "httpx.Client + MockTransport (floor)",
        "ResilientClient closed, 200 (retry=None)": "httpx.Client + MockTransport (floor)",
    }
    lines = [
        "## 3. Circuit breaker",
        "",
        f"Per call; median and spread (min-max) over {repeats} runs "
        f"({core_n:,} core / {client_n:,} client calls each), Python "
        f"{sys.version.split()[0]}, pybreaker {version('pybreaker')}, httpx {httpx.__version__}.",
        "",
        "| case | median | spread | ratio | baseline |",
        "|---|---:|---:|---:|---|",
    ]
    for name, values in samples.items():
        base = baselines.get(name)
        ratio = f"{medians[name] / medians[base]:.2f}x" if base else "—"
        lines.append(
            f"| {name} | {_fmt(medians[name])} | {_fmt(min(values))} - {_fmt(max(values))} "
            f"| {ratio} | {base or 'baseline'} |"
        )
    goals = {
        "core closed (allow + record)": ("core closed path vs pybreaker", CORE_TARGET),
        "core open, raised as CircuitOpenError": (
            "core open rejection (raised) vs pybreaker",
            CORE_TARGET,
        ),
        "ResilientClient open rejection (default retry)": (
            "client open rejection (default retry) vs httpx floor",
            CLIENT_TARGET,
        ),
        "ResilientClient open rejection (retry=None)": (
            "client open rejection (retry=None) vs httpx floor",
            CLIENT_TARGET,
        ),
    }
    lines.append("")
    for name, (what, goal) in goals.items():
        r = medians[name] / medians[baselines[name]]
        lines.append(target("3. breaker", what, f"≤ {goal:.2f}x", f"{r:.2f}x", r <= goal))
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]))
