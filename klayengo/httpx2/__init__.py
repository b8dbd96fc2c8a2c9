"""klayengo on httpx2: the same API as :mod:`klayengo`, bound to httpx2.

Usage::

    from klayengo.httpx2 import ResilientClient

    with ResilientClient(base_url="https://api.example.com") as client:
        response = client.get("/items")   # a subclass of httpx2.Client

The clients subclass ``httpx2.Client`` / ``httpx2.AsyncClient``, the layer
transports are httpx2 transports, and the exceptions subclass
``httpx2.TransportError`` (so ``except httpx2.HTTPError`` catches them). The policies,
``RedisBackend``, ``BreakerSnapshot`` and the metrics helpers are the very objects
:mod:`klayengo` exports: they belong to no flavour. Importing this module imports
httpx2 and never httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx2 as _httpx2  # noqa: F401  (fails early, with the library's own error)

from .. import (
    BreakerSnapshot,
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    MetricsPolicy,
    RateLimitPolicy,
    RedisBackend,
    RetryPolicy,
    __version__,
    metrics_asgi_app,
    serve_metrics,
)
from .._flavour import bind
from .._surface import BOUND_NAMES

if TYPE_CHECKING:
    from .._bound import (
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
else:
    _binding = bind("httpx2")
    for _name in BOUND_NAMES:
        _obj = getattr(_binding, _name)
        _obj.__module__ = __name__
        globals()[_name] = _obj
    del _binding, _name, _obj

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
    "__version__",
    "metrics_asgi_app",
    "serve_metrics",
]
