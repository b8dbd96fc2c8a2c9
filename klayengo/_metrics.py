"""Events -> Prometheus series.

How it fits together:

- :func:`create_metrics` (called by the clients with their ``metrics=`` argument) finds
  the registry, gets the one :class:`KlayengoCollector` of that registry (registered on
  first use, so nothing exists at import time and a registry never holds two), and gets
  that collector's :class:`ClientMetrics` store for the client's name. The store is the
  client's events sink (``context.events``) and is what the stack's top,
  :class:`~klayengo._transports.stack.MeteredStackTransport`, counts requests in.
- A store keeps plain in-memory numbers under one short lock; nothing touches
  prometheus_client on a request. At scrape time the collector turns every store into
  ``CounterMetricFamily`` / ``GaugeMetricFamily`` / ``HistogramMetricFamily`` samples.
  This is cheaper per request than prometheus_client's labelled children (measured in
  ``benchmarks/bench_metrics.py``) and each metric is registered exactly once per
  registry however many clients exist.
- Clients with the same name share one store: their series are the same series (two
  stores would emit duplicate samples). The ``client`` label tells names apart.

The breaker state gauge is the exception to "plain numbers": it is read at scrape time
from the breaker registries of the store's open clients
(:meth:`ClientMetrics.breaker_states`), so every breaker a client holds has a series,
``0`` for one that never left ``closed``, and a breaker that was evicted or reset has
none. A store whose clients hold no breaker registry (breakers off, events sent by hand)
reports the states its ``breaker_transition`` events said.

Lifecycle (a documented decision): counters and histograms of a client name stay in the
registry after its clients close, so the counts of short-lived clients are not lost
between two scrapes and a later client of that name continues them; the gauges that
describe live state (in-flight requests, breaker states, cache size) disappear when the
last client of that name closes. Memory is bounded by the number of distinct client
names times ``max_hosts + 1`` hosts: creating and closing clients of one name any number
of times grows nothing. Use a fixed set of client names, as for any label.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from ._context import LayerContext
from ._core.breaker import STATE_RANK, BreakerRegistry
from ._core.events import NULL_EVENTS, Events, MultiEvents
from ._core.hosts import host_key
from ._core.labels import (
    BREAKER_STATES,
    ERROR_STATUS,
    OTHER_HOST,
    OTHER_VALUE,
    HostLabels,
    cache_result_label,
    client_label,
    error_type,
    method_label,
    retry_reason_label,
    safe_label,
    status_label,
    to_state_label,
)
from ._policies import DEFAULT_METRICS_MAX_HOSTS, MetricsPolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from ._flavour import httpx

__all__ = [
    "BREAKER_REGISTRY_KEY",
    "DURATION_BUCKETS",
    "METRICS_KEY",
    "METRIC_NAMES",
    "RATE_LIMIT_WAIT_BUCKETS",
    "ClientMetrics",
    "KlayengoCollector",
    "RequestSeries",
    "collector_for",
    "create_metrics",
    "metrics_of",
]

#: ``klayengo_request_duration_seconds`` buckets: OpenTelemetry's advised boundaries
#: for ``http.client.request.duration``.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: ``klayengo_rate_limit_wait_seconds`` buckets: from "no wait" to ``max_pause``'s 60 s.
RATE_LIMIT_WAIT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Distinct (host key, method) pairs whose series is memoized; past it the memo
#: starts over (hostile host churn costs time, never memory).
_SERIES_MEMO_SIZE: Final = 4096
#: Where a client's store lives in its :class:`LayerContext` (``context.peek(METRICS_KEY)``).
METRICS_KEY: Final = "metrics"
#: Distinct ``operation`` values of ``klayengo_backend_errors_total`` per client.
MAX_BACKEND_OPERATIONS: Final = 32
#: Where the breaker layer keeps a client's :class:`BreakerRegistry` in its context (the
#: bound breaker module's ``REGISTRY_KEY``; this module is flavour-free and cannot import
#: it, a test pins the two together).
BREAKER_REGISTRY_KEY: Final = "breaker.registry"


class _Histogram:
    """Non-cumulative bucket counts (the last one is +Inf) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, nbuckets: int) -> None:
        self.counts = [0] * (nbuckets + 1)
        self.sum = 0.0


class _HostSeries:
    """Per-host numbers the outermost layer updates on every request."""

    __slots__ = ("errors", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.errors: dict[str, int] = {}


class RequestSeries:
    """The series of one (host, method): what a request in flight updates at its end."""

    __slots__ = ("duration", "host", "host_series", "method", "statuses")

    def __init__(self, host: str, method: str, host_series: _HostSeries) -> None:
        self.host = host
        self.method = method
        self.host_series = host_series
        self.duration = _Histogram(len(DURATION_BUCKETS))
        self.statuses: dict[str, int] = {}


class ClientMetrics(Events):
    """The metric store and events sink of one client name in one registry.

    Every method is cheap, takes at most one short lock and never raises on odd input
    (labels are sanitized and bounded here). ``live`` counts the open clients using it.
    """

    __slots__ = (
        "_backend_errors",
        "_breaker_rejections",
        "_breaker_state",
        "_by_key",
        "_cache_bytes",
        "_cache_entries",
        "_cache_evictions",
        "_cache_results",
        "_coalesced",
        "_contexts",
        "_host_series",
        "_lock",
        "_rate_limit_wait",
        "_rate_limited",
        "_requests",
        "_retries",
        "_retry_budget",
        "_transitions",
        "client",
        "hosts",
        "live",
    )

    def __init__(self, client: str, max_hosts: int = DEFAULT_METRICS_MAX_HOSTS) -> None:
        self.client = client
        self.hosts = HostLabels(max_hosts)
        self.live = 0
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], RequestSeries] = {}
        #: (host key, method as sent) -> its series, so a request skips the labelling.
        self._by_key: dict[tuple[str, str], RequestSeries] = {}
        self._host_series: dict[str, _HostSeries] = {}
        self._retries: dict[tuple[str, str], int] = {}
        self._retry_budget: dict[str, int] = {}
        self._breaker_state: dict[str, int] = {}
        self._transitions: dict[tuple[str, str], int] = {}
        self._breaker_rejections: dict[str, int] = {}
        self._rate_limited: dict[str, int] = {}
        self._rate_limit_wait: dict[str, _Histogram] = {}
        self._cache_results: dict[tuple[str, str], int] = {}
        self._cache_entries: int | None = None
        self._cache_bytes: int | None = None
        self._cache_evictions = 0
        self._coalesced: dict[str, int] = {}
        self._backend_errors: dict[str, int] = {}
        #: The contexts of the open clients using this store, by lease token. Weak: a
        #: client dropped without closing must stay collectable (its lease releases it).
        self._contexts: dict[object, weakref.ref[LayerContext]] = {}

    def __repr__(self) -> str:
        return f"<ClientMetrics client={self.client!r} live={self.live}>"

    # -- lifecycle ---------------------------------------------------------------
    def acquire(self, max_hosts: int, context: LayerContext | None = None) -> object:
        """A client starts using this store (its ``max_hosts`` may raise the cap).

        Args:
            max_hosts: the client's host-label cap.
            context: the client's context, whose breaker registry the state gauge reads
                at scrape time.

        Returns:
            The token to hand back to :meth:`release`.
        """
        token = object()
        with self._lock:
            self.live += 1
            if max_hosts > self.hosts.max_hosts:
                self.hosts.max_hosts = max_hosts
            if context is not None:
                self._contexts[token] = weakref.ref(context)
        return token

    def release(self, token: object = None) -> None:
        """A client closed; the last one to close drops the live-state gauges."""
        with self._lock:
            self._contexts.pop(token, None)
            self.live = max(0, self.live - 1)
            if self.live == 0:
                self._breaker_state.clear()
                self._cache_entries = self._cache_bytes = None

    # -- requests (the outermost layer) --------------------------------------------
    def host_of(self, url: httpx.URL) -> str:
        """The ``host`` label of ``url`` (host keys are memoized in ``_core.hosts``)."""
        return self.hosts.label(host_key(url))

    def _series(self, host: str, method: str) -> RequestSeries:
        with self._lock:
            found = self._requests.get((host, method))
            if found is None:
                hs = self._host_series.get(host)
                if hs is None:
                    hs = self._host_series[host] = _HostSeries()
                found = self._requests[(host, method)] = RequestSeries(host, method, hs)
            return found

    def request_started(self, request: httpx.Request) -> RequestSeries:
        """Count ``request`` in flight; returns what :meth:`request_finished` needs."""
        url, method = request.url, request.method
        hk = host_key(url)
        series = self._by_key.get((hk, method))
        if series is None:
            host, label = self.host_of(url), method_label(method)
            series = self._requests.get((host, label)) or self._series(host, label)
            if len(self._by_key) >= _SERIES_MEMO_SIZE:
                self._by_key.clear()
            self._by_key[(hk, method)] = series
        with self._lock:
            series.host_series.in_flight += 1
        return series

    def request_finished(self, series: RequestSeries, status: str, duration: float) -> None:
        """One logical request ended with ``status`` (a label) after ``duration`` seconds."""
        hist = series.duration
        index = bisect_left(DURATION_BUCKETS, duration)
        statuses = series.statuses
        with self._lock:
            series.host_series.in_flight -= 1
            statuses[status] = statuses.get(status, 0) + 1
            hist.counts[index] += 1
            hist.sum += duration

    def request_response(self, series: RequestSeries, status_code: int, duration: float) -> None:
        """One logical request returned a response."""
        self.request_finished(series, status_label(status_code), duration)

    def request_error(self, series: RequestSeries, exc: BaseException, duration: float) -> None:
        """One logical request raised ``exc``."""
        kind = error_type(exc)
        errors = series.host_series.errors
        with self._lock:
            errors[kind] = errors.get(kind, 0) + 1
        self.request_finished(series, ERROR_STATUS, duration)

    # -- events from the layers ----------------------------------------------------
    def _inc(self, table: dict[Any, int], key: Any, by: int = 1) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + by

    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        self._inc(self._retries, (self.hosts.label(host), retry_reason_label(reason)))

    def retry_budget_exhausted(self, host: str) -> None:
        self._inc(self._retry_budget, self.hosts.label(host))

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        label = self.hosts.label(host)
        state = BREAKER_STATES.get(new)
        with self._lock:
            key = (label, to_state_label(new))
            self._transitions[key] = self._transitions.get(key, 0) + 1
            # One gauge cannot hold the states of every host folded into `_other`.
            if label != OTHER_HOST and state is not None:
                self._breaker_state[label] = state

    def breaker_rejected(self, host: str) -> None:
        self._inc(self._breaker_rejections, self.hosts.label(host))

    def breaker_removed(self, host: str) -> None:
        label = self.hosts.label(host)
        with self._lock:
            self._breaker_state.pop(label, None)

    def rate_limited(self, host: str) -> None:
        self._inc(self._rate_limited, self.hosts.label(host))

    def rate_limit_wait(self, host: str, seconds: float) -> None:
        label = self.hosts.label(host)
        if seconds > 0.0:
            seconds = float(seconds)
            index = bisect_left(RATE_LIMIT_WAIT_BUCKETS, seconds)
        else:  # the common case: no wait (and a negative or NaN wait counts as none)
            seconds, index = 0.0, 0
        with self._lock:
            hist = self._rate_limit_wait.get(label)
            if hist is None:
                hist = self._rate_limit_wait[label] = _Histogram(len(RATE_LIMIT_WAIT_BUCKETS))
            hist.counts[index] += 1
            hist.sum += seconds

    def cache_result(self, host: str, result: str) -> None:
        self._inc(self._cache_results, (self.hosts.label(host), cache_result_label(result)))

    def cache_size(self, entries: int, nbytes: int) -> None:
        with self._lock:
            self._cache_entries = entries
            self._cache_bytes = nbytes

    def cache_evicted(self, count: int) -> None:
        with self._lock:
            self._cache_evictions += max(0, int(count))

    def coalesced(self, host: str) -> None:
        self._inc(self._coalesced, self.hosts.label(host))

    def backend_error(self, operation: str) -> None:
        label = safe_label(operation)
        with self._lock:
            table = self._backend_errors
            if label not in table and len(table) >= MAX_BACKEND_OPERATIONS:
                label = OTHER_VALUE
            table[label] = table.get(label, 0) + 1

    # -- scrape ------------------------------------------------------------------
    def breaker_states(self) -> dict[str, int] | None:
        """Host label -> state gauge value of every breaker the open clients hold, now.

        Reads each client's breaker registry (never under this store's lock) and applies
        the lazy open -> half_open transition, as ``breaker_state()`` does. That
        transition is then reported (log, events, ``on_state_change``) by the next call
        to that host or the next introspection, as it would have been without the scrape;
        until then ``klayengo_circuit_breaker_transitions_total`` has not counted it.
        Several breakers under one label (origins sharing a host key, clients sharing a
        name) report the worst state. Hosts folded into ``_other`` are left out: one
        gauge cannot hold the states of many hosts.

        Returns:
            The states, or None when no open client has a breaker registry (the caller
            falls back to the states the events reported).
        """
        with self._lock:
            refs = list(self._contexts.values())
        found = False
        worst: dict[str, str] = {}
        for ref in refs:
            context = ref()
            registry = None if context is None else context.peek(BREAKER_REGISTRY_KEY)
            if context is None or not isinstance(registry, BreakerRegistry):
                continue
            found = True
            now = context.clock.monotonic()
            for _, breaker in registry.items():
                label = self.hosts.label(breaker.host)
                if label == OTHER_HOST:
                    continue
                state = breaker.current_state(now)
                seen = worst.get(label)
                if seen is None or STATE_RANK[state] > STATE_RANK[seen]:
                    worst[label] = state
        if not found:
            return None
        return {label: BREAKER_STATES[state] for label, state in worst.items()}

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every number, taken under the lock."""
        with self._lock:
            live = self.live > 0
            return {
                "live": live,
                "requests": [
                    (s.host, s.method, dict(s.statuses), list(s.duration.counts), s.duration.sum)
                    for s in self._requests.values()
                ],
                "in_flight": {h: hs.in_flight for h, hs in self._host_series.items()}
                if live
                else {},
                "errors": {
                    (h, kind): n
                    for h, hs in self._host_series.items()
                    for kind, n in hs.errors.items()
                },
                "retries": dict(self._retries),
                "retry_budget": dict(self._retry_budget),
                "breaker_state": dict(self._breaker_state),
                "transitions": dict(self._transitions),
                "breaker_rejections": dict(self._breaker_rejections),
                "rate_limited": dict(self._rate_limited),
                "rate_limit_wait": {
                    h: (list(hist.counts), hist.sum) for h, hist in self._rate_limit_wait.items()
                },
                "cache_results": dict(self._cache_results),
                "cache_entries": self._cache_entries,
                "cache_bytes": self._cache_bytes,
                "cache_evictions": self._cache_evictions,
                "coalesced": dict(self._coalesced),
                "backend_errors": dict(self._backend_errors),
            }


# name -> (type, help, label names); the order is the exposition order.
_FAMILIES: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "klayengo_requests_total": (
        "counter",
        "Logical requests made through klayengo clients (cache hits included).",
        ("client", "host", "method", "status_code"),
    ),
    "klayengo_request_duration_seconds": (
        "histogram",
        "Duration of logical requests, from the call to the response headers, in seconds.",
        ("client", "host", "method"),
    ),
    "klayengo_requests_in_flight": (
        "gauge",
        "Logical requests currently in progress.",
        ("client", "host"),
    ),
    "klayengo_errors_total": (
        "counter",
        "Logical requests that raised an exception, by error type.",
        ("client", "host", "type"),
    ),
    "klayengo_retries_total": (
        "counter",
        "Retries scheduled, by reason.",
        ("client", "host", "reason"),
    ),
    "klayengo_retry_budget_exhausted_total": (
        "counter",
        "Retries refused because the host's retry budget was spent.",
        ("client", "host"),
    ),
    "klayengo_circuit_breaker_state": (
        "gauge",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        ("client", "host"),
    ),
    "klayengo_circuit_breaker_transitions_total": (
        "counter",
        "Circuit breaker state changes, by the state entered.",
        ("client", "host", "to_state"),
    ),
    "klayengo_circuit_breaker_rejections_total": (
        "counter",
        "Calls refused by an open circuit breaker.",
        ("client", "host"),
    ),
    "klayengo_rate_limited_total": (
        "counter",
        "Calls refused by the rate limiter (RateLimitExceeded).",
        ("client", "host"),
    ),
    "klayengo_rate_limit_wait_seconds": (
        "histogram",
        "Time admitted calls waited for the rate limiter, in seconds.",
        ("client", "host"),
    ),
    "klayengo_cache_requests_total": (
        "counter",
        "Cache lookups, by result.",
        ("client", "host", "result"),
    ),
    "klayengo_cache_entries": (
        "gauge",
        "Responses held in the cache.",
        ("client",),
    ),
    "klayengo_cache_bytes": (
        "gauge",
        "Body bytes held in the cache.",
        ("client",),
    ),
    "klayengo_cache_evictions_total": (
        "counter",
        "Cache entries evicted to respect the cache's bounds.",
        ("client",),
    ),
    "klayengo_coalesced_requests_total": (
        "counter",
        "Requests that waited for an identical in-flight request instead of going upstream.",
        ("client", "host"),
    ),
    "klayengo_backend_errors_total": (
        "counter",
        "Failed calls to the shared-state backend (the layer fell back to local state).",
        ("client", "operation"),
    ),
}

#: The names of every metric klayengo exposes.
METRIC_NAMES: Final = tuple(_FAMILIES)


def _bucket_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    # The ``le`` values as prometheus_client writes them for its own histograms.
    return (*(repr(float(b)) for b in bounds), "+Inf")


def _cumulative(les: tuple[str, ...], counts: list[int]) -> list[tuple[str, float]]:
    total = 0
    buckets: list[tuple[str, float]] = []
    for le, n in zip(les, counts, strict=True):
        total += n
        buckets.append((le, float(total)))
    return buckets


class KlayengoCollector:
    """The one collector klayengo registers in a registry; yields every client's series."""

    def __init__(self) -> None:
        self._stores: dict[str, ClientMetrics] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<KlayengoCollector clients={sorted(self._stores)!r}>"

    def store(self, client: str, max_hosts: int) -> ClientMetrics:
        """The store of ``client`` (a sanitized name), created on first use."""
        with self._lock:
            found = self._stores.get(client)
            if found is None:
                found = self._stores[client] = ClientMetrics(client, max_hosts)
            return found

    def stores(self) -> list[ClientMetrics]:
        with self._lock:
            return list(self._stores.values())

    def _empty(self) -> dict[str, Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        kinds: dict[str, Any] = {
            "counter": CounterMetricFamily,
            "gauge": GaugeMetricFamily,
            "histogram": HistogramMetricFamily,
        }
        return {
            name: kinds[kind](name, doc, labels=list(labels))
            for name, (kind, doc, labels) in _FAMILIES.items()
        }

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: lets the registry detect name clashes."""
        yield from self._empty().values()

    def collect(self) -> Iterator[Metric]:
        families = self._empty()
        duration_les = _bucket_labels(DURATION_BUCKETS)
        wait_les = _bucket_labels(RATE_LIMIT_WAIT_BUCKETS)

        def add(name: str, labels: list[str], value: Any) -> None:
            families[name].add_metric(labels, value)  # type: ignore[attr-defined]

        for store in sorted(self.stores(), key=lambda s: s.client):
            c = store.client
            breakers = store.breaker_states()
            snap = store.snapshot()
            if breakers is not None:
                snap["breaker_state"] = breakers
            for host, method, statuses, counts, total in snap["requests"]:
                for status, n in sorted(statuses.items()):
                    add("klayengo_requests_total", [c, host, method, status], n)
                families["klayengo_request_duration_seconds"].add_metric(  # type: ignore[attr-defined]
                    [c, host, method], _cumulative(duration_les, counts), total
                )
            for host, n in sorted(snap["in_flight"].items()):
                add("klayengo_requests_in_flight", [c, host], n)
            for (host, kind), n in sorted(snap["errors"].items()):
                add("klayengo_errors_total", [c, host, kind], n)
            for (host, reason), n in sorted(snap["retries"].items()):
                add("klayengo_retries_total", [c, host, reason], n)
            for host, n in sorted(snap["retry_budget"].items()):
                add("klayengo_retry_budget_exhausted_total", [c, host], n)
            for host, n in sorted(snap["breaker_state"].items()):
                add("klayengo_circuit_breaker_state", [c, host], n)
            for (host, state), n in sorted(snap["transitions"].items()):
                add("klayengo_circuit_breaker_transitions_total", [c, host, state], n)
            for host, n in sorted(snap["breaker_rejections"].items()):
                add("klayengo_circuit_breaker_rejections_total", [c, host], n)
            for host, n in sorted(snap["rate_limited"].items()):
                add("klayengo_rate_limited_total", [c, host], n)
            for host, (counts, total) in sorted(snap["rate_limit_wait"].items()):
                families["klayengo_rate_limit_wait_seconds"].add_metric(  # type: ignore[attr-defined]
                    [c, host], _cumulative(wait_les, counts), total
                )
            for (host, result), n in sorted(snap["cache_results"].items()):
                add("klayengo_cache_requests_total", [c, host, result], n)
            if snap["live"] and snap["cache_entries"] is not None:
                add("klayengo_cache_entries", [c], snap["cache_entries"])
                add("klayengo_cache_bytes", [c], snap["cache_bytes"])
            if snap["cache_evictions"]:
                add("klayengo_cache_evictions_total", [c], snap["cache_evictions"])
            for host, n in sorted(snap["coalesced"].items()):
                add("klayengo_coalesced_requests_total", [c, host], n)
            for operation, n in sorted(snap["backend_errors"].items()):
                add("klayengo_backend_errors_total", [c, operation], n)
        yield from families.values()


# registry -> its collector. Weak keys: a registry the user drops takes our collector
# (which it alone references) with it.
_COLLECTORS: weakref.WeakKeyDictionary[Any, KlayengoCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def collector_for(registry: CollectorRegistry) -> KlayengoCollector:
    """The klayengo collector of ``registry``, registered there on first use."""
    with _COLLECTORS_LOCK:
        found = _COLLECTORS.get(registry)
        if found is None:
            found = KlayengoCollector()
            registry.register(found)  # raises if another collector owns our names
            _COLLECTORS[registry] = found
        return found


def _resolve(metrics: object) -> tuple[CollectorRegistry, int] | None:
    """``metrics=`` -> (registry, max_hosts), or None when metrics are off."""
    if metrics is None or metrics is False:
        return None
    from prometheus_client import REGISTRY, CollectorRegistry

    if metrics is True:
        return REGISTRY, DEFAULT_METRICS_MAX_HOSTS
    if isinstance(metrics, MetricsPolicy):
        registry = metrics.registry if metrics.registry is not None else REGISTRY
        return registry, metrics.max_hosts
    if isinstance(metrics, CollectorRegistry):
        return metrics, DEFAULT_METRICS_MAX_HOSTS
    raise TypeError(
        "metrics must be True, False, None, a prometheus_client.CollectorRegistry "
        f"or a MetricsPolicy, got {metrics!r}"
    )


class _Lease:
    """One client's use of a store, released exactly once (on close or collection)."""

    __slots__ = ("_lock", "_store", "_token")

    def __init__(self, store: ClientMetrics, token: object) -> None:
        self._store: ClientMetrics | None = store
        self._token = token
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.release(self._token)


def create_metrics(context: LayerContext, metrics: object) -> ClientMetrics | None:
    """Validate ``metrics=`` and attach the client's metrics sink to ``context``.

    ``True``: prometheus_client's default ``REGISTRY``; a ``CollectorRegistry``; a
    :class:`MetricsPolicy` (registry and ``max_hosts``); ``False``/``None``: no metric
    work at all (the context keeps its events sink and the stack gets no metrics layer).

    The store becomes ``context.events`` (joined with any sink already there through
    :class:`MultiEvents`) and ``context.peek(METRICS_KEY)``; the client's closing
    releases it.
    """
    resolved = _resolve(metrics)
    if resolved is None:
        return None
    registry, max_hosts = resolved
    store = collector_for(registry).store(client_label(context.name), max_hosts)
    lease = _Lease(store, store.acquire(max_hosts, context))
    context.on_close(lease.release)
    # A client dropped without being closed releases its store when collected.
    weakref.finalize(context, lease.release)
    context.shared(METRICS_KEY, lambda: store)
    if context.events is NULL_EVENTS:
        context.events = store
    else:
        context.events = MultiEvents([context.events, store])
    return store


def metrics_of(context: LayerContext) -> ClientMetrics | None:
    """The metrics store attached to ``context``, or None when metrics are off."""
    found = context.peek(METRICS_KEY)
    return found if isinstance(found, ClientMetrics) else None
