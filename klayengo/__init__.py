"""klayengo: a resilient, drop-in httpx client.

Per-host circuit breakers, retries with backoff and a retry budget, rate limiting,
an RFC 9111 response cache with request coalescing, and Prometheus metrics, for
sync, asyncio and trio alike. See the README for the guide.

This is the httpx surface: its clients subclass ``httpx.Client`` and
``httpx.AsyncClient``. The same API on httpx2 is :mod:`klayengo.httpx2`. The names
bound to httpx (the clients, the layer transports, the exceptions) are imported on
first use, so ``import klayengo.httpx2`` never imports httpx.
"""

from __future__ import annotations

import typing as _typing

from . import _flavour
from ._backends.redis import RedisBackend
from ._core.breaker import BreakerSnapshot
from ._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    MetricsPolicy,
    RateLimitPolicy,
    RetryPolicy,
)
from ._server import metrics_asgi_app, serve_metrics
from ._surface import BOUND_NAMES

if _typing.TYPE_CHECKING:
    from ._bound import (
        AsyncCacheTransport,
        AsyncCircuitBreakerTransport,
        AsyncRateLimitTransport,
        AsyncResilientClient,
        AsyncRetryTransport,
        CacheTransport,
        CircuitBreakerTransport,
        CircuitOpenError,
        RateLimitExceeded,
        RateLimitTransport,
        ResilienceError,
        ResilientClient,
        RetryTransport,
    )

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncCacheTransport",
    "AsyncCircuitBreakerTransport",
    "AsyncRateLimitTransport",
    "AsyncResilientClient",
    "AsyncRetryTransport",
    "BreakerSnapshot",
    "CachePolicy",
    "CacheTransport",
    "CircuitBreakerPolicy",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "HostPolicy",
    "MetricsPolicy",
    "RateLimitExceeded",
    "RateLimitPolicy",
    "RateLimitTransport",
    "RedisBackend",
    "ResilienceError",
    "ResilientClient",
    "RetryPolicy",
    "RetryTransport",
    "metrics_asgi_app",
    "serve_metrics",
]


def __getattr__(name: str) -> _typing.Any:
    # The httpx-bound names, imported with httpx on first use (PEP 562).
    from ._surface import export

    return export(globals(), "httpx", name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Public objects report the package as their home, as httpx's do.
for _name in sorted(set(__all__) - set(BOUND_NAMES)):  # the flavour-free names
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("klayengo."):
        _obj.__module__ = "klayengo"
del _name, _obj, _flavour, BOUND_NAMES
