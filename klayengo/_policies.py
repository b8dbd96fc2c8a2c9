"""The frozen policy dataclasses and their defaults.

Every policy is immutable (``@dataclass(frozen=True, slots=True, kw_only=True)``) and
validated when it is built: an invalid value raises ``ValueError`` (a value out of
range) or ``TypeError`` (a value of the wrong type) whose message names the field,
the rule and the value. Derive variants with :func:`dataclasses.replace`, which
validates again.

Every default is a module constant below and is documented once, here and in the
README's policy table.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._flavour import httpx

__all__ = [
    "UNSET",
    "CachePolicy",
    "CircuitBreakerPolicy",
    "HostPolicy",
    "MetricsPolicy",
    "RateLimitPolicy",
    "RetryPolicy",
]

# -- Retry ---------------------------------------------------------------------------
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_BACKOFF_BASE: Final = 0.1
DEFAULT_BACKOFF_MULTIPLIER: Final = 2.0
DEFAULT_BACKOFF_MAX: Final = 10.0
DEFAULT_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
#: RFC 9110 §9.2.2: the idempotent methods (the safe ones plus PUT and DELETE).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
DEFAULT_BUDGET_RATIO: Final = 0.2
DEFAULT_BUDGET_MIN_PER_SECOND: Final = 10.0
DEFAULT_BUDGET_WINDOW: Final = 10.0

# -- Circuit breaker -----------------------------------------------------------------
DEFAULT_FAILURE_RATE_THRESHOLD: Final = 0.5
DEFAULT_MINIMUM_CALLS: Final = 20
DEFAULT_WINDOW: Final = 30.0
DEFAULT_SLOW_CALL_RATE_THRESHOLD: Final = 1.0
DEFAULT_OPEN_DURATION: Final = 30.0
DEFAULT_HALF_OPEN_MAX_CALLS: Final = 1
DEFAULT_SUCCESS_THRESHOLD: Final = 1
DEFAULT_FAILURE_STATUSES: Final = frozenset({500, 502, 503, 504})
DEFAULT_BREAKER_MAX_HOSTS: Final = 1000

# -- Rate limiter --------------------------------------------------------------------
DEFAULT_PER: Final = 1.0
DEFAULT_BURST: Final = 1
DEFAULT_MAX_PAUSE: Final = 60.0
DEFAULT_LIMITER_MAX_HOSTS: Final = 1000

# -- Cache ---------------------------------------------------------------------------
DEFAULT_TTL: Final = 60.0
DEFAULT_STALE_IF_ERROR: Final = 0.0
DEFAULT_MAX_ENTRIES: Final = 1024
DEFAULT_MAX_BYTES: Final = 64 * 2**20
DEFAULT_MAX_ENTRY_BYTES: Final = 2**20
DEFAULT_CACHE_METHODS: Final = ("GET", "HEAD")
#: RFC 9110 §15.1 "heuristically cacheable" statuses, less 206 (no range support).
DEFAULT_CACHEABLE_STATUSES: Final = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)

# -- Metrics -------------------------------------------------------------------------
DEFAULT_METRICS_MAX_HOSTS: Final = 100

#: Signature of ``CircuitBreakerPolicy.is_failure``: ``(response, exception) -> bool``;
#: exactly one of the two is not ``None``.
#: The response is the client's flavour's (``httpx.Response`` or ``httpx2.Response``).
if TYPE_CHECKING:
    FailurePredicate = Callable[[httpx.Response | None, BaseException | None], bool]
else:
    FailurePredicate = Callable[[Any, BaseException | None], bool]
#: Signature of ``CircuitBreakerPolicy.on_state_change``: ``(host, old, new)``.
StateChangeCallback = Callable[[str, str, str], None]


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: Marks a :class:`HostPolicy` field that inherits the client's policy.
UNSET: Final = _Unset.UNSET


# -- validation helpers ----------------------------------------------------------------
def _number(owner: str, name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number or None" if allow_none else "a number"
        raise TypeError(f"{owner}.{name} must be {kind}, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{owner}.{name} must not be NaN, got {value!r}")


def _integer(owner: str, name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"{owner}.{name} must be {kind}, got {value!r}")


def _check(ok: bool, owner: str, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{owner}.{name} must be {rule}, got {value!r}")


def _bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}.{name} must be a bool, got {value!r}")


def _callable(owner: str, name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{owner}.{name} must be callable or None, got {value!r}")


def _statuses(owner: str, name: str, value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}.{name} must be a collection of status codes, got {value!r}")
    result = set()
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{owner}.{name} must contain ints, got {code!r} in {value!r}")
        if not 100 <= code <= 599:
            raise ValueError(
                f"{owner}.{name} must contain status codes between 100 and 599, "
                f"got {code!r} in {value!r}"
            )
        result.add(code)
    return frozenset(result)


def _methods(owner: str, name: str, value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}.{name} must be a collection of method names, got {value!r}")
    result = set()
    for method in value:
        if not isinstance(method, str) or not method or not method.isascii():
            raise TypeError(f"{owner}.{name} must contain method names, got {method!r}")
        if not method.isalpha():
            raise ValueError(
                f"{owner}.{name} must contain alphabetic method names, got {method!r} in {value!r}"
            )
        result.add(method.upper())
    return frozenset(result)


def _set(obj: object, name: str, value: object) -> None:
    # Normalizing a field of a frozen dataclass in __post_init__.
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how to retry a request.

    Usage::

        RetryPolicy()                               # 3 retries, 0.1 s doubling to 10 s
        RetryPolicy(max_retries=5, deadline=30.0)      # at most 30 s for all attempts and sleeps
        RetryPolicy(retry_non_idempotent=True)         # also retry POST/PATCH (you know it is safe)

    Attributes:
        max_retries: retries after the first attempt (``0`` disables retrying). Default 3.
        backoff_base: the first backoff ceiling in seconds. Default 0.1.
        backoff_multiplier: growth of the ceiling per retry. Default 2.
        backoff_max: the largest ceiling in seconds. Default 10.
        jitter: full jitter (sleep uniformly in ``[0, ceiling]``); ``False`` sleeps the
            ceiling itself. Default True.
        retry_statuses: response statuses that are retried. Default {429, 502, 503, 504}.
        methods: methods retried after a response or a read/write failure. Default the
            idempotent ones, GET HEAD OPTIONS PUT DELETE TRACE.
        idempotency_header: a request carrying this header is retried whatever its
            method (``None`` turns the rule off). Default ``"Idempotency-Key"``.
        retry_non_idempotent: retry every method as if it were idempotent. Default False.
        respect_retry_after: honour ``Retry-After`` on retried responses. Default True.
        max_retry_after: the longest ``Retry-After`` honoured, in seconds; a response asking
            for longer is returned without retrying. Default 60.
        deadline: seconds for the whole call, attempts and sleeps included; ``None`` means
            no deadline. Default None.
        retry_on_circuit_open: retry a ``CircuitOpenError``. Default False.
        retry_on_rate_limited: retry a ``RateLimitExceeded``. Default False.
        budget_ratio: retries allowed per request over the budget window. Default 0.2.
        budget_min_per_second: retries per second always allowed. Default 10.
        budget_window: the budget's sliding window in seconds. Default 10.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    backoff_max: float = DEFAULT_BACKOFF_MAX
    jitter: bool = True
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    methods: frozenset[str] = IDEMPOTENT_METHODS
    idempotency_header: str | None = DEFAULT_IDEMPOTENCY_HEADER
    retry_non_idempotent: bool = False
    respect_retry_after: bool = True
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    deadline: float | None = None
    retry_on_circuit_open: bool = False
    retry_on_rate_limited: bool = False
    budget_ratio: float = DEFAULT_BUDGET_RATIO
    budget_min_per_second: float = DEFAULT_BUDGET_MIN_PER_SECOND
    budget_window: float = DEFAULT_BUDGET_WINDOW

    def __post_init__(self) -> None:
        o = "RetryPolicy"
        _integer(o, "max_retries", self.max_retries)
        _check(self.max_retries >= 0, o, "max_retries", ">= 0", self.max_retries)
        for name in ("backoff_base", "backoff_multiplier", "backoff_max", "max_retry_after"):
            _number(o, name, getattr(self, name))
        _check(self.backoff_base > 0, o, "backoff_base", "> 0", self.backoff_base)
        _check(
            self.backoff_max >= self.backoff_base,
            o,
            "backoff_max",
            f">= backoff_base ({self.backoff_base!r})",
            self.backoff_max,
        )
        _check(math.isfinite(self.backoff_max), o, "backoff_max", "finite", self.backoff_max)
        _check(
            self.backoff_multiplier >= 1,
            o,
            "backoff_multiplier",
            ">= 1",
            self.backoff_multiplier,
        )
        _check(self.max_retry_after >= 0, o, "max_retry_after", ">= 0", self.max_retry_after)
        _number(o, "deadline", self.deadline, allow_none=True)
        if self.deadline is not None:
            _check(self.deadline > 0, o, "deadline", "None or > 0", self.deadline)
        for name in (
            "jitter",
            "retry_non_idempotent",
            "respect_retry_after",
            "retry_on_circuit_open",
            "retry_on_rate_limited",
        ):
            _bool(o, name, getattr(self, name))
        _set(self, "retry_statuses", _statuses(o, "retry_statuses", self.retry_statuses))
        _set(self, "methods", _methods(o, "methods", self.methods))
        if self.idempotency_header is not None:
            if not isinstance(self.idempotency_header, str):
                raise TypeError(
                    f"{o}.idempotency_header must be a str or None, got {self.idempotency_header!r}"
                )
            _check(
                bool(self.idempotency_header.strip()) and self.idempotency_header.isascii(),
                o,
                "idempotency_header",
                "a non-empty ASCII header name",
                self.idempotency_header,
            )
        for name in ("budget_ratio", "budget_min_per_second", "budget_window"):
            _number(o, name, getattr(self, name))
        _check(self.budget_ratio >= 0, o, "budget_ratio", ">= 0", self.budget_ratio)
        _check(
            self.budget_min_per_second >= 0,
            o,
            "budget_min_per_second",
            ">= 0",
            self.budget_min_per_second,
        )
        _check(self.budget_window > 0, o, "budget_window", "> 0", self.budget_window)


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerPolicy:
    """When a host's circuit breaker trips, and how it recovers.

    Usage::

        CircuitBreakerPolicy()                           # 50% failures over 30 s, >= 20 calls
        CircuitBreakerPolicy(consecutive_failures=5)     # also trip after 5 failures in a row
        CircuitBreakerPolicy(slow_call_duration=2.0, slow_call_rate_threshold=0.8)

    Attributes:
        failure_rate_threshold: trip when the failure rate over the window reaches this
            (0 < x <= 1). Default 0.5.
        minimum_calls: completed calls in the window before the rate rules apply. Default 20.
        window: the sliding time window in seconds. Default 30.
        consecutive_failures: trip after this many consecutive failures regardless of
            ``minimum_calls``; ``None`` turns the rule off. Default None.
        slow_call_duration: a call slower than this many seconds is slow; ``None`` turns the
            slow-call rule off. Default None.
        slow_call_rate_threshold: trip when the slow-call rate reaches this. Default 1.0.
        open_duration: seconds the breaker stays open before admitting probes. Default 30.
        half_open_max_calls: concurrent probes admitted while half-open. Default 1.
        success_threshold: successful probes that close the breaker. Default 1.
        failure_statuses: response statuses counted as failures. Default {500, 502, 503, 504}.
        is_failure: ``(response, exception) -> bool`` overriding the classification.
        on_state_change: ``(host, old, new)`` called after each transition, outside every
            lock; an exception it raises is logged and ignored.
        max_hosts: breakers kept per client; idle closed ones are evicted first. Default 1000.
    """

    failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    window: float = DEFAULT_WINDOW
    consecutive_failures: int | None = None
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = DEFAULT_SLOW_CALL_RATE_THRESHOLD
    open_duration: float = DEFAULT_OPEN_DURATION
    half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES
    is_failure: FailurePredicate | None = field(default=None, compare=False)
    on_state_change: StateChangeCallback | None = field(default=None, compare=False)
    max_hosts: int = DEFAULT_BREAKER_MAX_HOSTS

    def __post_init__(self) -> None:
        o = "CircuitBreakerPolicy"
        _number(o, "failure_rate_threshold", self.failure_rate_threshold)
        _check(
            0 < self.failure_rate_threshold <= 1,
            o,
            "failure_rate_threshold",
            "> 0 and <= 1",
            self.failure_rate_threshold,
        )
        _integer(o, "minimum_calls", self.minimum_calls)
        _check(self.minimum_calls >= 1, o, "minimum_calls", ">= 1", self.minimum_calls)
        for name in ("window", "open_duration"):
            value = getattr(self, name)
            _number(o, name, value)
            _check(value > 0 and math.isfinite(value), o, name, "> 0 and finite", value)
        _integer(o, "consecutive_failures", self.consecutive_failures, allow_none=True)
        if self.consecutive_failures is not None:
            _check(
                self.consecutive_failures >= 1,
                o,
                "consecutive_failures",
                "None or >= 1",
                self.consecutive_failures,
            )
        _number(o, "slow_call_duration", self.slow_call_duration, allow_none=True)
        if self.slow_call_duration is not None:
            _check(
                self.slow_call_duration > 0,
                o,
                "slow_call_duration",
                "None or > 0",
                self.slow_call_duration,
            )
        _number(o, "slow_call_rate_threshold", self.slow_call_rate_threshold)
        _check(
            0 < self.slow_call_rate_threshold <= 1,
            o,
            "slow_call_rate_threshold",
            "> 0 and <= 1",
            self.slow_call_rate_threshold,
        )
        for name in ("half_open_max_calls", "success_threshold", "max_hosts"):
            value = getattr(self, name)
            _integer(o, name, value)
            _check(value >= 1, o, name, ">= 1", value)
        _set(self, "failure_statuses", _statuses(o, "failure_statuses", self.failure_statuses))
        _callable(o, "is_failure", self.is_failure)
        _callable(o, "on_state_change", self.on_state_change)


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitPolicy:
    """A GCRA rate limit: ``rate`` requests per ``per`` seconds, with an explicit burst.

    Guarantee: in any interval of length ``T`` at most ``burst + rate * T / per``
    requests start. There is no hidden burst: ``burst`` requests may start at once,
    then one every ``per / rate`` seconds.

    Usage::

        RateLimitPolicy(rate=50)                        # 50/s, one at a time
        RateLimitPolicy(rate=100, per=60, burst=10)     # 100/min, 10 may go at once
        RateLimitPolicy(rate=5, max_wait=0)             # fail fast instead of waiting

    Attributes:
        rate: requests per ``per`` seconds (> 0). Required.
        per: the period in seconds. Default 1.
        burst: requests that may start at once. Default 1.
        scope: ``"host"`` keeps one limiter per origin, ``"client"`` one for the whole
            client. Default ``"host"``.
        max_wait: the longest a request may wait for its turn; past it ``RateLimitExceeded``
            is raised at once. ``None`` waits as long as needed, ``0`` is fail-fast.
            Default None.
        max_pause: the cap, in seconds, on a pause imposed by a 429/503 ``Retry-After``.
            Default 60.
        max_hosts: per-host limiters kept per client (idle ones are evicted). Default 1000.
    """

    rate: float
    per: float = DEFAULT_PER
    burst: int = DEFAULT_BURST
    scope: Literal["host", "client"] = "host"
    max_wait: float | None = None
    max_pause: float = DEFAULT_MAX_PAUSE
    max_hosts: int = DEFAULT_LIMITER_MAX_HOSTS

    def __post_init__(self) -> None:
        o = "RateLimitPolicy"
        for name in ("rate", "per"):
            value = getattr(self, name)
            _number(o, name, value)
            _check(value > 0 and math.isfinite(value), o, name, "> 0 and finite", value)
        _integer(o, "burst", self.burst)
        _check(self.burst >= 1, o, "burst", ">= 1", self.burst)
        if self.scope not in ("host", "client"):
            raise ValueError(f"{o}.scope must be 'host' or 'client', got {self.scope!r}")
        _number(o, "max_wait", self.max_wait, allow_none=True)
        if self.max_wait is not None:
            _check(self.max_wait >= 0, o, "max_wait", "None or >= 0", self.max_wait)
        _number(o, "max_pause", self.max_pause)
        _check(self.max_pause >= 0, o, "max_pause", ">= 0", self.max_pause)
        _integer(o, "max_hosts", self.max_hosts)
        _check(self.max_hosts >= 1, o, "max_hosts", ">= 1", self.max_hosts)


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """A private, in-memory HTTP cache (RFC 9111) bounded by entries and bytes.

    Usage::

        CachePolicy()                                     # 60 s when the server says nothing
        CachePolicy(ttl=300, stale_if_error=3600)         # serve stale for 1 h if upstream fails
        CachePolicy(respect_cache_control=False, ttl=5)   # 5 s for everything storable

    Attributes:
        ttl: freshness in seconds when the response states none. Default 60.
        respect_cache_control: honour ``Cache-Control``/``Expires`` freshness; ``False``
            forces ``ttl`` (``no-store`` is still never stored). Default True.
        stale_if_error: seconds past expiry a stale entry may be served when the layers
            below fail (a response's ``stale-if-error`` directive also counts). Default 0.
        max_entries: stored responses. Default 1024.
        max_bytes: stored body bytes for the whole cache. Default 64 MiB.
        max_entry_bytes: the largest body stored; larger ones stream through uncached and
            unbuffered. Default 1 MiB.
        coalesce: merge concurrent identical misses into one upstream request. Default True.
        methods: the methods whose responses are stored. Default ``("GET", "HEAD")``.
        cacheable_statuses: statuses that may be stored. Default RFC 9110's heuristically
            cacheable set, less 206.
    """

    ttl: float = DEFAULT_TTL
    respect_cache_control: bool = True
    stale_if_error: float = DEFAULT_STALE_IF_ERROR
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    coalesce: bool = True
    methods: tuple[str, ...] = DEFAULT_CACHE_METHODS
    cacheable_statuses: frozenset[int] = DEFAULT_CACHEABLE_STATUSES

    def __post_init__(self) -> None:
        o = "CachePolicy"
        for name in ("ttl", "stale_if_error"):
            value = getattr(self, name)
            _number(o, name, value)
            _check(value >= 0, o, name, ">= 0", value)
        for name in ("max_entries", "max_bytes", "max_entry_bytes"):
            value = getattr(self, name)
            _integer(o, name, value)
            _check(value >= 1, o, name, ">= 1", value)
        _check(
            self.max_entry_bytes <= self.max_bytes,
            o,
            "max_entry_bytes",
            f"<= max_bytes ({self.max_bytes!r})",
            self.max_entry_bytes,
        )
        _bool(o, "respect_cache_control", self.respect_cache_control)
        _bool(o, "coalesce", self.coalesce)
        methods = _methods(o, "methods", self.methods)
        _check(bool(methods), o, "methods", "non-empty", self.methods)
        _set(self, "methods", tuple(sorted(methods)))
        _set(
            self,
            "cacheable_statuses",
            _statuses(o, "cacheable_statuses", self.cacheable_statuses),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsPolicy:
    """Where metrics go and how many host label values a client may create.

    Attributes:
        registry: the ``prometheus_client.CollectorRegistry``; ``None`` means the default
            ``REGISTRY``. Default None.
        max_hosts: distinct ``host`` label values per client; later hosts are reported as
            ``_other``. Default 100.
    """

    registry: CollectorRegistry | None = field(default=None, compare=False)
    max_hosts: int = DEFAULT_METRICS_MAX_HOSTS

    def __post_init__(self) -> None:
        o = "MetricsPolicy"
        _integer(o, "max_hosts", self.max_hosts)
        _check(self.max_hosts >= 1, o, "max_hosts", ">= 1", self.max_hosts)
        if self.registry is not None:
            from prometheus_client import CollectorRegistry

            if not isinstance(self.registry, CollectorRegistry):
                raise TypeError(
                    f"{o}.registry must be a prometheus_client.CollectorRegistry or None, "
                    f"got {self.registry!r}"
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPolicy:
    """Per-host overrides for ``ResilientClient(hosts={pattern: HostPolicy(...)})``.

    A field left unset inherits the client's policy; ``None`` disables that layer for
    the matching hosts.

    Usage::

        HostPolicy(retry=None)                                    # never retry this host
        HostPolicy(breaker=CircuitBreakerPolicy(minimum_calls=5)) # a stricter breaker
    """

    retry: RetryPolicy | _Unset | None = UNSET
    breaker: CircuitBreakerPolicy | _Unset | None = UNSET
    rate_limit: RateLimitPolicy | _Unset | None = UNSET
    cache: CachePolicy | _Unset | None = UNSET

    def __post_init__(self) -> None:
        expected: dict[str, type[Any]] = {
            "retry": RetryPolicy,
            "breaker": CircuitBreakerPolicy,
            "rate_limit": RateLimitPolicy,
            "cache": CachePolicy,
        }
        for name, kind in expected.items():
            value = getattr(self, name)
            if value is not UNSET and value is not None and not isinstance(value, kind):
                raise TypeError(
                    f"HostPolicy.{name} must be a {kind.__name__}, None or unset, got {value!r}"
                )


def check_policy(name: str, value: object, kind: type[Any]) -> None:
    """Validate a client-level policy argument (``retry=``, ``breaker=``, ...)."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__} or None, got {value!r}")
