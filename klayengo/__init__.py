"""klayengo: a resilient, drop-in httpx client.

Per-host circuit breakers, retries with backoff and a retry budget, rate limiting,
an RFC 9111 response cache with request coalescing, and Prometheus metrics, for
sync, asyncio and trio alike. See the README for the guide.
"""

from __future__ import annotations

from ._backends.redis import RedisBackend
from ._client import AsyncResilientClient, ResilientClient
from ._core.breaker import BreakerSnapshot
from ._exceptions import CircuitOpenError, RateLimitExceeded, ResilienceError
from ._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    MetricsPolicy,
    RateLimitPolicy,
    RetryPolicy,
)
from ._server import metrics_asgi_app, serve_metrics
from ._transports.breaker import AsyncCircuitBreakerTransport, CircuitBreakerTransport
from ._transports.cache import AsyncCacheTransport, CacheTransport
from ._transports.ratelimit import AsyncRateLimitTransport, RateLimitTransport
from ._transports.retry import AsyncRetryTransport, RetryTransport

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

# Public objects report the package as their home, as httpx's do.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("klayengo."):
        _obj.__module__ = "klayengo"
del _name, _obj
