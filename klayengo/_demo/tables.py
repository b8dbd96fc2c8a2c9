"""What the demo's tables and lines show, shared by the plain and the rich displays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from .stats import DemoSummary, HostStats, Recorder

if TYPE_CHECKING:
    from ..testing import Upstream
    from .options import DemoOptions
    from .scenario import Origin

__all__ = [
    "COUNT_COLUMNS",
    "INTRO_HEADERS",
    "LIVE_COUNT_COLUMNS",
    "LIVE_HEADERS",
    "SUMMARY_HEADERS",
    "BreakerStates",
    "breaker_states",
    "counts",
    "intro_head",
    "intro_rows",
    "layer_lines",
    "summary_rows",
]

#: (header, cell) of the count columns; "\n" splits a header on two lines.
COUNT_COLUMNS: Final[tuple[tuple[str, Callable[[HostStats], str]], ...]] = (
    ("reqs", lambda s: str(s.requests)),
    ("ok", lambda s: str(s.ok())),
    ("failed", lambda s: str(s.failed())),
    ("retries", lambda s: str(sum(s.retries.values()))),
    ("fast\nfails", lambda s: str(s.rejections)),
    ("rl\nwaits", lambda s: str(s.delayed)),
    ("rl\nrefused", lambda s: str(s.rate_limited)),
    ("cache\nh/r/s/m", lambda s: s.cache_text()),
)
#: The live table's count columns: all but "failed" (reqs - ok), so that a row, its
#: phase and breaker state included, fits 80 columns.
LIVE_COUNT_COLUMNS: Final = tuple(column for column in COUNT_COLUMNS if column[0] != "failed")
#: The intro's columns: every one is text (left-aligned).
INTRO_HEADERS: Final = ("origin", "port", "upstream behaviour", "client policy")
#: The live table's columns: the text ones, then :data:`LIVE_COUNT_COLUMNS`.
LIVE_HEADERS: Final = ("origin", "phase", "breaker", *(h for h, _ in LIVE_COUNT_COLUMNS))
#: The summary's columns: the origin, then numbers.
SUMMARY_HEADERS: Final = ("origin", "opened", *(h for h, _ in COUNT_COLUMNS))


def counts(
    stats: HostStats,
    columns: tuple[tuple[str, Callable[[HostStats], str]], ...] = COUNT_COLUMNS,
) -> list[str]:
    """The cells of ``columns`` for ``stats``."""
    return [cell(stats) for _, cell in columns]


def intro_head(options: DemoOptions, origins: int, seed: int) -> str:
    """The intro table's title."""
    return (
        f"klayengo demo: {options.concurrency} workers, one ResilientClient, "
        f"{origins} origins on loopback, {options.duration:g} s (seed {seed})"
    )


def intro_rows(scenario: list[Origin], upstream: Upstream) -> list[list[str]]:
    """A row of :data:`INTRO_HEADERS` per origin."""
    return [
        [o.name, str(upstream[o.name].port), o.upstream_text, o.policy_text()] for o in scenario
    ]


def _total(summary: DemoSummary) -> HostStats:
    total = HostStats(name="total", host="")
    for stats in summary.hosts.values():
        total.add(stats)
    return total


def summary_rows(summary: DemoSummary) -> list[list[str]]:
    """A row of :data:`SUMMARY_HEADERS` per origin, then the total's."""
    rows = [
        [stats.name, str(stats.transitions["open"]), *counts(stats)]
        for stats in summary.hosts.values()
    ]
    total = _total(summary)
    rows.append([total.name, str(total.transitions["open"]), *counts(total)])
    return rows


def _counter_text(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items()) if n) or "none"


def layer_lines(summary: DemoSummary) -> list[str]:
    """One line per layer (and one for the outcomes): what it did over the whole run."""
    total = _total(summary)
    hosts = summary.hosts.values()
    breakers = "; ".join(
        f"{s.name} opened {s.transitions['open']}x, closed again {s.transitions['closed']}x, "
        f"now {s.final_state}"
        for s in hosts
        if s.transitions
    )
    cache = total.cache
    return [
        f"outcomes:   {total.requests} requests, {total.ok()} ok, "
        f"{total.failed() - sum(total.errors.values())} HTTP errors, "
        f"exceptions: {_counter_text(total.errors)}",
        f"retry:      {sum(total.retries.values())} retries ({_counter_text(total.retries)}); "
        f"retry budget exhausted {total.budget_exhausted}x",
        f"breaker:    {breakers or 'never opened'}; "
        f"{total.rejections} calls failed fast while open",
        f"rate limit: {total.delayed} of {total.waits} admitted calls waited their turn, "
        f"{total.wait_seconds:.1f} s in total; {total.rate_limited} refused (past max_wait)",
        f"cache:      {cache['hit']} hits, {cache['revalidated']} revalidated, "
        f"{cache['stale']} stale on errors, {cache['miss']} misses, "
        f"{total.coalesced} coalesced",
    ]


class BreakerStates(Protocol):
    """What the displays read from the client (``ResilientClient.breaker_state``)."""

    def breaker_state(self, host: str) -> str: ...


def breaker_states(client: BreakerStates, recorder: Recorder) -> list[str]:
    """The breaker state of each origin, in the recorder's order."""
    # Never under the recorder's lock: reading a state may apply the lazy open ->
    # half_open transition, whose event the recorder receives (and locks for).
    return [client.breaker_state(host) for host in list(recorder.hosts)]
