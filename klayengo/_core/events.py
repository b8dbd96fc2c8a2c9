"""Events the layers emit, and the sinks that receive them.

A layer never talks to Prometheus or to a UI: it calls a method of the
:class:`Events` sink it was given. The base class ignores everything, so a client
with ``metrics=False`` does no metric work at all; ``klayengo._metrics`` turns the
calls into Prometheus series, and :class:`MultiEvents` fans out to several sinks
(the demo's live view, tests).

Every ``host`` argument is a host key (see :mod:`klayengo._core.hosts`). Sinks must
be cheap and must not raise; :class:`MultiEvents` guards against sinks that do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["NULL_EVENTS", "Events", "MultiEvents"]

_log = logging.getLogger("klayengo")


class Events:
    """The event sink interface. Every method is a no-op here; override what you need."""

    __slots__ = ()

    # -- retry ---------------------------------------------------------------------
    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        """A retry was scheduled: ``reason`` in {status, connect, timeout, network}."""

    def retry_budget_exhausted(self, host: str) -> None:
        """A retry was refused because the host's retry budget is spent."""

    # -- circuit breaker -----------------------------------------------------------
    def breaker_transition(self, host: str, old: str, new: str) -> None:
        """A breaker changed state (``"closed" | "open" | "half_open"``)."""

    def breaker_rejected(self, host: str) -> None:
        """A call was refused with ``CircuitOpenError``."""

    def breaker_removed(self, host: str) -> None:
        """A breaker left the registry (evicted or reset to nothing)."""

    # -- rate limiter --------------------------------------------------------------
    def rate_limited(self, host: str) -> None:
        """A call was refused with ``RateLimitExceeded``."""

    def rate_limit_wait(self, host: str, seconds: float) -> None:
        """A call waited ``seconds`` for its turn (reported for every admitted call)."""

    # -- cache ---------------------------------------------------------------------
    def cache_result(self, host: str, result: str) -> None:
        """``result`` in {hit, miss, stale, revalidated, bypass}."""

    def cache_size(self, entries: int, nbytes: int) -> None:
        """The cache now holds ``entries`` responses and ``nbytes`` body bytes."""

    def cache_evicted(self, count: int) -> None:
        """``count`` entries were evicted to respect the bounds."""

    def coalesced(self, host: str) -> None:
        """A request waited for an identical in-flight request instead of going upstream."""

    # -- shared state backend ------------------------------------------------------
    def backend_error(self, operation: str) -> None:
        """A shared-state backend call failed; the layer fell back to local state."""


#: The sink that ignores everything.
NULL_EVENTS = Events()

_METHODS = tuple(
    name for name, value in vars(Events).items() if callable(value) and not name.startswith("_")
)


class MultiEvents(Events):
    """Sends each event to every sink; a sink that raises is logged and skipped."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: Iterable[Events]) -> None:
        self.sinks = tuple(sinks)

    def _dispatch(self, name: str, *args: object) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, name)(*args)
            except Exception:
                _log.warning("klayengo event sink %r failed on %s", sink, name, exc_info=True)

    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        self._dispatch("retry", host, reason, attempt, delay)

    def retry_budget_exhausted(self, host: str) -> None:
        self._dispatch("retry_budget_exhausted", host)

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        self._dispatch("breaker_transition", host, old, new)

    def breaker_rejected(self, host: str) -> None:
        self._dispatch("breaker_rejected", host)

    def breaker_removed(self, host: str) -> None:
        self._dispatch("breaker_removed", host)

    def rate_limited(self, host: str) -> None:
        self._dispatch("rate_limited", host)

    def rate_limit_wait(self, host: str, seconds: float) -> None:
        self._dispatch("rate_limit_wait", host, seconds)

    def cache_result(self, host: str, result: str) -> None:
        self._dispatch("cache_result", host, result)

    def cache_size(self, entries: int, nbytes: int) -> None:
        self._dispatch("cache_size", entries, nbytes)

    def cache_evicted(self, count: int) -> None:
        self._dispatch("cache_evicted", count)

    def coalesced(self, host: str) -> None:
        self._dispatch("coalesced", host)

    def backend_error(self, operation: str) -> None:
        self._dispatch("backend_error", operation)


assert set(_METHODS) <= set(vars(MultiEvents)), "MultiEvents must forward every event"
