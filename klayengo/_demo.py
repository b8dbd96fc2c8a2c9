"""``klayengo demo``: one client, five misbehaving origins on loopback, live.

The demo starts a :class:`klayengo.testing.Upstream` of five origins (healthy, slow,
flaky, rate-limiting, cacheable), serves the client's metrics on a loopback
``/metrics`` endpoint, and drives concurrent traffic through ONE
:class:`klayengo.ResilientClient` configured per host. It shows, live, what each
layer does, then a table headed ``Summary``.

Where the numbers come from (so they can be checked against the metrics):

- per-request outcomes (status codes, exceptions, attempts, latency) are counted by
  the workers at the call site, from the response and ``response.extensions["klayengo"]``;
- what the layers did (retries and their reasons, breaker transitions and
  rejections, rate-limit waits and rejections, cache results, coalescing) is counted
  by an event sink added next to the metrics sink: the client's ``LayerContext.events``
  is wrapped in ``MultiEvents([metrics_sink, demo_sink])`` right after construction,
  so both sinks see exactly the same events;
- the breaker column is the public introspection ``client.breaker_state(host)``.

The whole scenario scales with ``--duration`` (phases, open durations, freshness),
so a 4-second run in the test suite goes through the same story as the default one.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from ._cli import describe_breaker, describe_cache, describe_rate_limit, describe_retry
from ._core.errors import error_names
from ._core.events import Events, MultiEvents
from ._core.labels import error_type
from ._flavour import bind
from ._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    RateLimitPolicy,
    RetryPolicy,
)
from ._server import serve_metrics
from .testing import (
    LOOPBACK,
    Behaviour,
    Cacheable,
    Fail,
    Healthy,
    Intermittent,
    Phases,
    RateLimited,
    Slow,
    Upstream,
)

if TYPE_CHECKING:
    from ._bound import ResilientClient
    from ._flavour import httpx

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]

#: Default length of the demo, seconds; the scenario's timeline is scaled to it.
DEFAULT_DURATION: Final = 20.0
#: Default number of worker threads sharing the one client.
DEFAULT_CONCURRENCY: Final = 8
#: The client's name, i.e. the ``client`` label of its metrics.
CLIENT_NAME: Final = "demo"
#: Every request's timeout; the slow origin's spikes exceed it on purpose.
REQUEST_TIMEOUT: Final = 1.0
#: Pause between two requests of one worker (uniform in this range), seconds. Keeps the
#: load light: the demo must run happily on a laptop next to other work.
THINK_TIME: Final = (0.02, 0.08)
#: How often the live table refreshes, seconds.
LIVE_REFRESH: Final = 0.25
#: Plain mode prints a status block every this many seconds (at least), ...
PLAIN_MIN_INTERVAL: Final = 1.0
#: ... or ten times per run, whichever is rarer.
PLAIN_TICKS: Final = 10
#: Breaker transitions kept for the live view.
RECENT_EVENTS: Final = 6
#: Seconds to wait for the workers' last requests after the end.
JOIN_TIMEOUT: Final = 10.0

# The scenario, as fractions of the duration.
FLAKY_INTERMITTENT: Final = 0.3
FLAKY_DOWN: Final = 0.25
FLAKY_FAILURE_RATE: Final = 0.3
CACHEABLE_UP: Final = 0.45
CACHEABLE_DOWN: Final = 0.25
CACHEABLE_CHANGE_EVERY: Final = 0.3
CACHEABLE_ITEMS: Final = 6
SLOW_DELAY: Final = (0.05, 0.3)
SLOW_SPIKE_RATE: Final = 0.08
SLOW_SPIKE: Final = 1.5
SERVER_RATE: Final = 5.0
CLIENT_RATE: Final = 6.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Settings of one demo run (the command-line flags).

    Attributes:
        duration: seconds of traffic.
        metrics_port: the ``/metrics`` port on 127.0.0.1; 0 picks a free one.
        live: ``True`` forces the rich live table, ``False`` plain lines, ``None`` picks
            the live table when the output is a terminal and rich is installed.
        concurrency: worker threads sharing the client.
        seed: seeds the traffic mix and the upstream's random failures (``None``: random).
        json: also print the summary as JSON on stdout (the rest goes to stderr).
        flavour: the HTTP library the client runs on, ``"httpx"`` or ``"httpx2"``.
    """

    duration: float = DEFAULT_DURATION
    metrics_port: int = 0
    live: bool | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int | None = None
    json: bool = False
    flavour: str = "httpx"


# -- the numbers -------------------------------------------------------------------------
@dataclass
class HostStats:
    """What happened to one origin. Call-site counts and layer events, side by side.

    ``requests``, ``statuses``, ``errors``, ``attempts`` and ``seconds`` are counted by
    the workers; the rest comes from the layers' events. ``waits`` counts the calls the
    rate limiter admitted (it reports each, like the wait histogram's count) and
    ``delayed`` those of them that actually waited.
    """

    name: str
    host: str
    # call site
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    seconds: float = 0.0
    # layer events
    retries: Counter[str] = field(default_factory=Counter)
    budget_exhausted: int = 0
    transitions: Counter[str] = field(default_factory=Counter)
    rejections: int = 0
    rate_limited: int = 0
    waits: int = 0
    delayed: int = 0
    wait_seconds: float = 0.0
    cache: Counter[str] = field(default_factory=Counter)
    coalesced: int = 0
    final_state: str = "closed"

    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.isdigit() and code < "400")

    def failed(self) -> int:
        """Requests that ended in a 4xx/5xx response or an exception."""
        return self.requests - self.ok()

    def cache_text(self) -> str:
        if not self.cache:
            return "-"
        return "/".join(str(self.cache[k]) for k in ("hit", "revalidated", "stale", "miss"))

    def add(self, other: HostStats) -> None:
        """Add ``other``'s counts to these (for a total)."""
        self.requests += other.requests
        self.attempts += other.attempts
        self.seconds += other.seconds
        self.budget_exhausted += other.budget_exhausted
        self.rejections += other.rejections
        self.rate_limited += other.rate_limited
        self.waits += other.waits
        self.delayed += other.delayed
        self.wait_seconds += other.wait_seconds
        self.coalesced += other.coalesced
        for mine, theirs in (
            (self.statuses, other.statuses),
            (self.errors, other.errors),
            (self.retries, other.retries),
            (self.transitions, other.transitions),
            (self.cache, other.cache),
        ):
            mine.update(theirs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "requests": self.requests,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(sorted(self.errors.items())),
            "attempts": self.attempts,
            "retries": dict(sorted(self.retries.items())),
            "retry_budget_exhausted": self.budget_exhausted,
            "breaker_transitions": dict(sorted(self.transitions.items())),
            "breaker_rejections": self.rejections,
            "breaker_state": self.final_state,
            "rate_limited": self.rate_limited,
            "rate_limit_waits": self.waits,
            "rate_limit_delayed": self.delayed,
            "rate_limit_wait_seconds": round(self.wait_seconds, 6),
            "cache": dict(sorted(self.cache.items())),
            "coalesced": self.coalesced,
        }


@dataclass
class DemoSummary:
    """The demo's numbers, per origin, in origin order.

    Attributes:
        hosts: host key -> :class:`HostStats`.
        elapsed: seconds from the first to the last request.
        seed: the seed used.
        metrics_url: where the metrics were served.
        unexpected: tracebacks of exceptions that are not ``httpx.HTTPError`` (bugs).
        interrupted: the run was stopped by Ctrl-C.
    """

    hosts: dict[str, HostStats]
    elapsed: float
    seed: int
    metrics_url: str
    unexpected: list[str] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output)."""
        return {
            "client": CLIENT_NAME,
            "elapsed": round(self.elapsed, 3),
            "seed": self.seed,
            "metrics_url": self.metrics_url,
            "hosts": {key: stats.as_dict() for key, stats in self.hosts.items()},
            "unexpected_errors": len(self.unexpected),
        }


class _Recorder(Events):
    """The demo's event sink, and the workers' call-site counters; one lock for all."""

    def __init__(self, hosts: dict[str, HostStats], started: float) -> None:
        self.hosts = hosts
        self.started = started
        self.lock = threading.Lock()
        self.recent: deque[str] = deque(maxlen=RECENT_EVENTS)
        self.pending_lines: list[str] = []
        self.unexpected: list[str] = []

    def _stats(self, host: str) -> HostStats:
        found = self.hosts.get(host)
        if found is None:  # not one of ours: still counted, so totals stay honest
            found = self.hosts[host] = HostStats(name=host, host=host)
        return found

    # -- call site -----------------------------------------------------------------------
    def response(self, host: str, response: httpx.Response, seconds: float) -> None:
        report = response.extensions.get("klayengo") or {}
        with self.lock:
            stats = self._stats(host)
            stats.requests += 1
            stats.statuses[str(response.status_code)] += 1
            stats.attempts += int(report.get("attempts", 1))
            stats.seconds += seconds

    def error(self, host: str, kind: str, seconds: float) -> None:
        with self.lock:
            stats = self._stats(host)
            stats.requests += 1
            stats.statuses["error"] += 1
            stats.errors[kind] += 1
            stats.seconds += seconds

    def bug(self, host: str, text: str, seconds: float) -> None:
        with self.lock:
            self.unexpected.append(text)
        self.error(host, "other", seconds)

    # -- layer events (called from the layers; cheap, never raise) -----------------------
    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        with self.lock:
            self._stats(host).retries[reason] += 1

    def retry_budget_exhausted(self, host: str) -> None:
        with self.lock:
            self._stats(host).budget_exhausted += 1

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        with self.lock:
            stats = self._stats(host)
            stats.transitions[new] += 1
            line = f"{time.monotonic() - self.started:5.1f}s  {stats.name}: breaker {old} -> {new}"
            self.recent.append(line)
            self.pending_lines.append(line)

    def breaker_rejected(self, host: str) -> None:
        with self.lock:
            self._stats(host).rejections += 1

    def rate_limited(self, host: str) -> None:
        with self.lock:
            self._stats(host).rate_limited += 1

    def rate_limit_wait(self, host: str, seconds: float) -> None:
        with self.lock:
            stats = self._stats(host)
            stats.waits += 1
            stats.delayed += seconds > 0
            stats.wait_seconds += seconds

    def cache_result(self, host: str, result: str) -> None:
        with self.lock:
            self._stats(host).cache[result] += 1

    def coalesced(self, host: str) -> None:
        with self.lock:
            self._stats(host).coalesced += 1

    def take_lines(self) -> list[str]:
        with self.lock:
            lines, self.pending_lines = self.pending_lines, []
        return lines


# -- the scenario ------------------------------------------------------------------------
@dataclass
class _Origin:
    name: str
    weight: int
    behaviour: Behaviour
    upstream_text: str
    policy: HostPolicy | None = None
    phases: Phases | None = None
    phase_labels: tuple[str, ...] = ("up",)
    paths: tuple[str, ...] = ("/",)

    def phase(self, now: float) -> str:
        if self.phases is None:
            return self.phase_labels[0]
        return self.phase_labels[self.phases.phase_index(now)]

    def policy_text(self) -> str:
        if self.policy is None:
            return (
                f"client defaults: {describe_retry(CLIENT_RETRY)}; "
                f"{describe_breaker(CircuitBreakerPolicy())}"
            )
        parts = []
        if isinstance(self.policy.retry, RetryPolicy):
            parts.append(describe_retry(self.policy.retry))
        if isinstance(self.policy.breaker, CircuitBreakerPolicy):
            parts.append(describe_breaker(self.policy.breaker))
        if isinstance(self.policy.rate_limit, RateLimitPolicy):
            parts.append(describe_rate_limit(self.policy.rate_limit))
        if isinstance(self.policy.cache, CachePolicy):
            parts.append(describe_cache(self.policy.cache))
        return "; ".join(parts)


#: The client's own retry policy: quick retries, so the demo moves along.
CLIENT_RETRY: Final = RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.5)


def _scenario(duration: float, seed: int) -> list[_Origin]:
    """The five origins: what each upstream does, and the client's policy for it.

    Time-based settings scale with ``duration`` so that short runs tell the same story:
    the breakers must open while an origin is down and close again after it recovers,
    which the default policy's 30 s window and open duration would outlast.
    """
    strict_breaker = CircuitBreakerPolicy(
        window=max(1.0, duration / 5),
        minimum_calls=10,
        failure_rate_threshold=0.6,
        consecutive_failures=5,
        open_duration=max(0.25, duration * 0.075),
    )
    flaky = Phases(
        (duration * FLAKY_INTERMITTENT, Intermittent(FLAKY_FAILURE_RATE, seed=seed)),
        (duration * FLAKY_DOWN, Fail(503)),
        (None, Healthy()),
    )
    resource = Cacheable(
        max_age=max(1.0, duration / 10), change_every=duration * CACHEABLE_CHANGE_EVERY
    )
    cacheable = Phases(
        (duration * CACHEABLE_UP, resource),
        (duration * CACHEABLE_DOWN, Fail(503)),
        (None, resource),
    )
    slow = Intermittent(
        SLOW_SPIKE_RATE,
        fail=Slow(SLOW_SPIKE),
        then=Slow(SLOW_DELAY, seed=seed),
        seed=seed + 1,
    )
    low, high = SLOW_DELAY
    return [
        _Origin("healthy", 3, Healthy(), "always 200"),
        _Origin(
            "slow",
            2,
            slow,
            f"{low * 1000:.0f}-{high * 1000:.0f} ms; {SLOW_SPIKE_RATE:.0%} take {SLOW_SPIKE:g} s "
            f"(timeout {REQUEST_TIMEOUT:g} s)",
            HostPolicy(
                retry=RetryPolicy(max_retries=1, backoff_base=0.05, deadline=2.5 * REQUEST_TIMEOUT)
            ),
            phase_labels=("slow",),
        ),
        _Origin(
            "flaky",
            3,
            flaky,
            f"{FLAKY_FAILURE_RATE:.0%} 503s -> down (503) -> recovers",
            HostPolicy(breaker=strict_breaker),
            phases=flaky,
            phase_labels=("intermittent", "down", "recovered"),
        ),
        _Origin(
            "limited",
            1,
            RateLimited(SERVER_RATE),
            f"429 + Retry-After over {SERVER_RATE:g} req/s",
            HostPolicy(rate_limit=RateLimitPolicy(rate=CLIENT_RATE, burst=2, max_wait=0.5)),
            phase_labels=(f"{SERVER_RATE:g}/s",),
        ),
        _Origin(
            "cacheable",
            3,
            cacheable,
            "ETag, Last-Modified, max-age; down for a while",
            HostPolicy(cache=CachePolicy(stale_if_error=2 * duration), breaker=strict_breaker),
            phases=cacheable,
            phase_labels=("up", "down", "up"),
            paths=tuple(f"/items/{n}" for n in range(1, CACHEABLE_ITEMS + 1)),
        ),
    ]


# -- output --------------------------------------------------------------------------------
#: (header, cell) of the columns both tables share; "\n" splits a header on two lines.
_COUNT_COLUMNS: Final = (
    ("reqs", lambda s: str(s.requests)),
    ("ok", lambda s: str(s.ok())),
    ("failed", lambda s: str(s.failed())),
    ("retries", lambda s: str(sum(s.retries.values()))),
    ("fast\nfails", lambda s: str(s.rejections)),
    ("rl\nwaits", lambda s: str(s.delayed)),
    ("rl\nrefused", lambda s: str(s.rate_limited)),
    ("cache\nh/r/s/m", lambda s: s.cache_text()),
)
_LIVE_HEADERS: Final = ("origin", "breaker", *(h for h, _ in _COUNT_COLUMNS))
_SUMMARY_HEADERS: Final = ("origin", "opened", *(h for h, _ in _COUNT_COLUMNS))


def _counter_text(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items()) if n) or "none"


def _counts(stats: HostStats) -> list[str]:
    return [cell(stats) for _, cell in _COUNT_COLUMNS]


def _summary_rows(summary: DemoSummary) -> list[list[str]]:
    total = HostStats(name="total", host="")
    rows = []
    for stats in summary.hosts.values():
        rows.append([stats.name, str(stats.transitions["open"]), *_counts(stats)])
        total.add(stats)
    rows.append([total.name, str(total.transitions["open"]), *_counts(total)])
    return rows


def _layer_lines(summary: DemoSummary) -> list[str]:
    """One line per layer (and one for the outcomes): what it did over the whole run."""
    total = HostStats(name="total", host="")
    for stats in summary.hosts.values():
        total.add(stats)
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


def _plain_table(title: str, headers: Sequence[str], rows: list[list[str]]) -> str:
    columns = [h.replace("\n", " ") for h in headers]
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(columns)]
    lines = [title]
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _load_rich() -> Any:
    """The rich package, or None when it is not installed (rich is the optional ``cli``
    extra; ``import klayengo`` never imports it)."""
    try:
        import rich.box
        import rich.console
        import rich.live
        import rich.table
        import rich.text
    except ImportError:
        return None
    return rich


def _rich_table(rich: Any, title: str, headers: Sequence[str]) -> Any:
    table = rich.table.Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=rich.box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),  # the box's blank separator is enough: fits 80 columns
    )
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < 2 else "right", no_wrap=True)
    return table


def run_demo(
    options: DemoOptions,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    on_finish: Callable[[DemoSummary], None] | None = None,
) -> DemoSummary:
    """Run the demo and return its numbers.

    Args:
        options: the settings.
        out: where the display and the summary go (default ``sys.stdout``; with
            ``options.json``, ``sys.stderr``, and the JSON goes to ``sys.stdout``).
        err: where warnings go (default ``sys.stderr``).
        on_finish: called with the summary after the traffic stops and before the
            ``/metrics`` endpoint closes (the tests scrape it there).

    Raises:
        OSError: the metrics port cannot be bound.
        KeyboardInterrupt: after printing the summary, when interrupted.
    """
    json_out = sys.stdout
    if out is None:
        out = sys.stderr if options.json else sys.stdout
    if err is None:
        err = sys.stderr
    rich = _load_rich()
    live = options.live
    if live is None:
        live = rich is not None and _isatty(out) and not options.json
    if live and rich is None:
        print("klayengo demo: rich is not installed (pip install 'klayengo[cli]')", file=err)
        live = False
    shown = rich if live else None
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    scenario = _scenario(options.duration, seed)
    from prometheus_client import CollectorRegistry

    # A registry of its own: the demo's series never mix with the process's default one.
    registry = CollectorRegistry()
    with Upstream({o.name: o.behaviour for o in scenario}) as upstream:
        keys = {o.name: upstream[o.name].host_key for o in scenario}
        endpoint = serve_metrics(options.metrics_port, LOOPBACK, registry)
        try:
            with bind(options.flavour).ResilientClient(
                name=CLIENT_NAME,
                timeout=REQUEST_TIMEOUT,
                retry=CLIENT_RETRY,
                hosts={keys[o.name]: o.policy for o in scenario if o.policy is not None},
                metrics=registry,
            ) as client:
                summary = _drive(
                    client, scenario, upstream, options, seed, endpoint.url, out, shown
                )
            _print_summary(out, shown, summary)
            if summary.unexpected:
                print(
                    f"klayengo demo: {len(summary.unexpected)} unexpected errors (a bug); "
                    f"the first:\n{summary.unexpected[0]}",
                    file=err,
                )
            if options.json:
                json_out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
                json_out.flush()
            if on_finish is not None:
                on_finish(summary)
            if summary.interrupted:
                raise KeyboardInterrupt
            return summary
        finally:
            endpoint.stop()


def _drive(
    client: ResilientClient,
    scenario: list[_Origin],
    upstream: Upstream,
    options: DemoOptions,
    seed: int,
    metrics_url: str,
    out: IO[str],
    rich: Any,
) -> DemoSummary:
    hosts = {
        upstream[o.name].host_key: HostStats(name=o.name, host=upstream[o.name].host_key)
        for o in scenario
    }
    started = time.monotonic()
    recorder = _Recorder(hosts, started)
    # The layers read context.events at call time: from now on both the metrics sink and
    # the demo's recorder see every event.
    context = client._klayengo
    context.events = MultiEvents([context.events, recorder])
    _intro(out, rich, scenario, upstream, metrics_url, options, seed)
    stop = threading.Event()
    end = started + options.duration
    workers = [
        threading.Thread(
            target=_worker,
            args=(client, scenario, upstream, recorder, stop, end, random.Random(seed + n + 1)),
            name=f"klayengo-demo-{n}",
            daemon=True,
        )
        for n in range(options.concurrency)
    ]
    for worker in workers:
        worker.start()
    display = _LiveDisplay(rich, out) if rich is not None else _PlainDisplay(out, options.duration)
    interrupted = False
    try:
        display.run(client, scenario, recorder, stop, started, end)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        for worker in workers:
            worker.join(JOIN_TIMEOUT)
    for stats in hosts.values():
        stats.final_state = client.breaker_state(stats.host)
    return DemoSummary(
        hosts=hosts,
        elapsed=time.monotonic() - started,
        seed=seed,
        metrics_url=metrics_url,
        unexpected=list(recorder.unexpected),
        interrupted=interrupted,
    )


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _worker(
    client: ResilientClient,
    scenario: list[_Origin],
    upstream: Upstream,
    recorder: _Recorder,
    stop: threading.Event,
    end: float,
    rng: random.Random,
) -> None:
    weights = [o.weight for o in scenario]
    while not stop.is_set() and time.monotonic() < end:
        origin = rng.choices(scenario, weights)[0]
        server = upstream[origin.name]
        url = server.url(rng.choice(origin.paths))
        started = time.monotonic()
        try:
            response = client.get(url)
        except Exception as exc:
            if "HTTPError" in error_names(type(exc)):  # httpx's or httpx2's
                recorder.error(server.host_key, error_type(exc), time.monotonic() - started)
            else:
                recorder.bug(server.host_key, traceback.format_exc(), time.monotonic() - started)
        else:
            recorder.response(server.host_key, response, time.monotonic() - started)
        stop.wait(rng.uniform(*THINK_TIME))


def _intro(
    out: IO[str],
    rich: Any,
    scenario: list[_Origin],
    upstream: Upstream,
    metrics_url: str,
    options: DemoOptions,
    seed: int,
) -> None:
    head = (
        f"klayengo demo: {options.concurrency} workers, one ResilientClient, "
        f"{len(scenario)} origins on loopback, {options.duration:g} s (seed {seed})"
    )
    headers = ("origin", "port", "upstream behaviour", "client policy")
    rows = [
        [o.name, str(upstream[o.name].port), o.upstream_text, o.policy_text()] for o in scenario
    ]
    if rich is not None:
        console = rich.console.Console(file=out)
        table = _rich_table(rich, head, headers)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(f"metrics: [bold]{metrics_url}[/bold]", highlight=False)
    else:
        out.write(_plain_table(head, headers, rows) + "\n")
        out.write(f"metrics: {metrics_url}\n")
    out.flush()


def _breaker_states(client: ResilientClient, recorder: _Recorder) -> list[str]:
    # Never under the recorder's lock: reading a state may apply the lazy open ->
    # half_open transition, whose event the recorder receives (and locks for).
    return [client.breaker_state(host) for host in list(recorder.hosts)]


class _PlainDisplay:
    """Periodic plain lines, no control codes: for CI logs and pipes."""

    def __init__(self, out: IO[str], duration: float) -> None:
        self.out = out
        self.interval = max(PLAIN_MIN_INTERVAL, duration / PLAIN_TICKS)

    def run(
        self,
        client: ResilientClient,
        scenario: list[_Origin],
        recorder: _Recorder,
        stop: threading.Event,
        started: float,
        end: float,
    ) -> None:
        next_tick = started + self.interval
        while True:
            now = time.monotonic()
            for line in recorder.take_lines():
                self.out.write(line + "\n")
            if now >= next_tick or now >= end:
                self.tick(client, scenario, recorder, now, now - started)
                next_tick += self.interval
            self.out.flush()
            if now >= end:
                return
            stop.wait(min(LIVE_REFRESH, end - now))

    def tick(
        self,
        client: ResilientClient,
        scenario: list[_Origin],
        recorder: _Recorder,
        now: float,
        elapsed: float,
    ) -> None:
        states = _breaker_states(client, recorder)
        with recorder.lock:
            for origin, stats, state in zip(
                scenario, recorder.hosts.values(), states, strict=False
            ):
                cells = " ".join(
                    f"{header.replace(chr(10), ' ')} {cell(stats)}"
                    for header, cell in _COUNT_COLUMNS
                )
                self.out.write(
                    f"{elapsed:5.1f}s  {origin.name:<9} {origin.phase(now):<12} "
                    f"breaker {state:<9} {cells}\n"
                )


_STATE_STYLES: Final = {"closed": "green", "open": "bold red", "half_open": "yellow"}


class _LiveDisplay:
    """A rich ``Live`` table, refreshed a few times a second."""

    def __init__(self, rich: Any, out: IO[str]) -> None:
        self.rich = rich
        self.console = rich.console.Console(file=out)

    def render(
        self,
        client: ResilientClient,
        scenario: list[_Origin],
        recorder: _Recorder,
        started: float,
        end: float,
    ) -> Any:
        rich = self.rich
        now = time.monotonic()
        elapsed = min(now, end) - started
        table = _rich_table(
            rich, f"klayengo demo  {elapsed:4.1f} / {end - started:g} s", _LIVE_HEADERS
        )
        states = _breaker_states(client, recorder)
        with recorder.lock:
            for origin, stats, state in zip(
                scenario, recorder.hosts.values(), states, strict=False
            ):
                name = rich.text.Text(origin.name)
                name.append(f"\n{origin.phase(now)}", style="dim")
                badge = rich.text.Text(state, style=_STATE_STYLES.get(state, ""))
                table.add_row(name, badge, *_counts(stats))
            recent = list(recorder.recent)
        log = rich.text.Text("\n".join(recent) or "no breaker transitions yet", style="dim")
        return rich.console.Group(table, log)

    def run(
        self,
        client: ResilientClient,
        scenario: list[_Origin],
        recorder: _Recorder,
        stop: threading.Event,
        started: float,
        end: float,
    ) -> None:
        with self.rich.live.Live(
            self.render(client, scenario, recorder, started, end),
            console=self.console,
            auto_refresh=False,
        ) as live:
            while True:
                now = time.monotonic()
                recorder.take_lines()
                live.update(self.render(client, scenario, recorder, started, end), refresh=True)
                if now >= end:
                    return
                stop.wait(min(LIVE_REFRESH, end - now))


def _print_summary(out: IO[str], rich: Any, summary: DemoSummary) -> None:
    rows = _summary_rows(summary)
    layers = _layer_lines(summary)
    footer = f"{summary.elapsed:.1f} s; the metrics were served at {summary.metrics_url}"
    if rich is not None:
        console = rich.console.Console(file=out)
        table = _rich_table(rich, "Summary", _SUMMARY_HEADERS)
        for row in rows[:-1]:
            table.add_row(*row)
        table.add_row(*rows[-1], style="bold")
        console.print(table)
        for line in layers:
            console.print(line, highlight=False)
        console.print(footer, style="dim", highlight=False)
    else:
        out.write("\n" + _plain_table("Summary", _SUMMARY_HEADERS, rows) + "\n")
        out.write("\n".join(layers) + "\n" + footer + "\n")
    out.flush()
