"""Shared helpers for the benchmarks: timing, statistics, Markdown tables, machine facts.

Timing rules: every comparison measures the baseline and the candidate in the same
process run, interleaved over several repeats, and reports the median per-operation
time with its spread (min..max of the repeat medians) and the ratio of medians.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio


class Flavour(NamedTuple):
    """One HTTP library and klayengo's surface on it (``httpx``/``klayengo``,
    ``httpx2``/``klayengo.httpx2``), for sections that compare both."""

    library: Any
    surface: Any
    name: str


@dataclass(frozen=True)
class Stats:
    """Per-operation times in microseconds over ``repeat`` runs."""

    median: float
    low: float
    high: float

    def cell(self) -> str:
        return f"{self.median:,.1f} ({self.low:,.1f}-{self.high:,.1f})"


def _stats(samples: Sequence[float]) -> Stats:
    return Stats(statistics.median(samples), min(samples), max(samples))


def bench_sync(
    cases: dict[str, Callable[[], object]], *, number: int, repeat: int = 7, warmup: int = 200
) -> dict[str, Stats]:
    """Time each case ``number`` times per repeat, interleaving cases across repeats."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number * 1e6)
    return {name: _stats(values) for name, values in samples.items()}


def bench_async(
    cases: dict[str, Callable[[], Awaitable[object]]],
    *,
    number: int,
    repeat: int = 7,
    warmup: int = 200,
    backend: str = "asyncio",
) -> dict[str, Stats]:
    """Like :func:`bench_sync` for coroutine functions, all in one event loop."""

    async def main() -> dict[str, Stats]:
        for fn in cases.values():
            for _ in range(warmup):
                await fn()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, fn in cases.items():
                gc.collect()
                start = time.perf_counter()
                for _ in range(number):
                    await fn()
                samples[name].append((time.perf_counter() - start) / number * 1e6)
        return {name: _stats(values) for name, values in samples.items()}

    return anyio.run(main, backend=backend)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(candidate: Stats, baseline: Stats) -> str:
    return f"{candidate.median / baseline.median:.2f}x"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dists = [
        "httpx",
        "httpcore",
        "anyio",
        "sniffio",
        "h11",
        "cachetools",
        "prometheus-client",
        "hishel",
        "httpx-retries",
        "pybreaker",
        "aiolimiter",
        "redis",
    ]
    versions = ", ".join(f"{d} {version(d)}" for d in dists)
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()} "
        f"({platform.python_implementation()}) on {platform.system()} {platform.release()}\n"
        f"- klayengo {version('klayengo')}; {versions}"
    )


# -- targets: each section states its targets next to the measured figures, and the
# runner gathers them into the "Where we stand" table at the top of RESULTS.md.


@dataclass(frozen=True)
class Target:
    """One target of one section, as measured in this run.

    ``met`` is None for a figure reported without a pass/fail target.
    """

    section: str
    name: str
    goal: str
    measured: str
    met: bool | None


_TARGETS: list[Target] = []


def verdict(met: bool | None) -> str:
    return "info" if met is None else ("met" if met else "**NOT met**")


def target(section: str, name: str, goal: str, measured: str, met: bool | None) -> str:
    """Record a target for the summary; returns the Markdown line stating it in place."""
    _TARGETS.append(Target(section, name, goal, measured, met))
    return f"- TARGET {name}: {goal}; measured {measured} ({verdict(met)})"


def take_targets() -> list[Target]:
    """The targets recorded since the last call (the runner calls it per section)."""
    taken = list(_TARGETS)
    _TARGETS.clear()
    return taken


def summary(targets: Sequence[Target]) -> str:
    """The "Where we stand" table."""
    rows = [[t.section, t.name, t.goal, t.measured, verdict(t.met)] for t in targets]
    return table(["section", "what", "target", "measured", "status"], rows)
