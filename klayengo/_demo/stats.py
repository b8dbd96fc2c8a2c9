"""The demo's numbers: per-origin counts, the run's summary, and the recorder that
fills them.

Where the numbers come from (so they can be checked against the metrics):

- per-request outcomes (status codes, exceptions, attempts, latency) are counted by
  the workers at the call site, from the response and ``response.extensions["klayengo"]``;
- what the layers did (retries and their reasons, breaker transitions and
  rejections, rate-limit waits and rejections, cache results, coalescing) is counted
  by :class:`Recorder`, an event sink the runner adds next to the metrics sink, so
  both sinks see exactly the same events;
- the breaker column is the public introspection ``client.breaker_state(host)``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .._core.events import Events
from .options import CLIENT_NAME

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = ["DemoSummary", "HostStats", "Recorder"]

#: Breaker transitions kept for the live view.
RECENT_EVENTS: Final = 6


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


class Recorder(Events):
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
