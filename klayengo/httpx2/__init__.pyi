# The types of klayengo.httpx2 as a type checker should see them: the same API as
# klayengo, on httpx2's classes. The module binds klayengo/_bound/ to httpx2 at run
# time, which no type checker can follow; this stub says what that binding is.
# tests/test_flavours.py runs mypy's stubtest against the module to keep them equal.
from collections.abc import Mapping
from typing import Any

import httpx2

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
from .._core.backend import Backend
from .._core.clock import Clock
from .._core.retry import RandomSource

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

class ResilienceError(httpx2.TransportError):
    host: str
    retry_after: float | None
    def __init__(
        self,
        message: str,
        *,
        request: httpx2.Request | None = None,
        host: str = "",
        retry_after: float | None = None,
    ) -> None: ...

class CircuitOpenError(ResilienceError): ...
class RateLimitExceeded(ResilienceError): ...

class _Introspection:
    def breaker_state(self, host: str | httpx2.URL) -> str: ...
    def breaker_snapshot(self) -> Mapping[str, BreakerSnapshot]: ...
    def reset_breaker(self, host: str | httpx2.URL) -> None: ...

class _ResilientMixin(_Introspection):
    @property
    def klayengo_name(self) -> str: ...

class ResilientClient(_ResilientMixin, httpx2.Client):
    def __init__(
        self,
        *,
        name: str = "default",
        retry: RetryPolicy | None = ...,
        breaker: CircuitBreakerPolicy | None = ...,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
        metrics: bool | MetricsPolicy | Any = True,
        backend: Backend | None = None,
        _clock: Clock | None = None,
        **kwargs: Any,
    ) -> None: ...

class AsyncResilientClient(_ResilientMixin, httpx2.AsyncClient):
    def __init__(
        self,
        *,
        name: str = "default",
        retry: RetryPolicy | None = ...,
        breaker: CircuitBreakerPolicy | None = ...,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
        metrics: bool | MetricsPolicy | Any = True,
        backend: Backend | None = None,
        _clock: Clock | None = None,
        **kwargs: Any,
    ) -> None: ...

class _Layer(httpx2.BaseTransport):
    @property
    def transport(self) -> httpx2.BaseTransport: ...

class _AsyncLayer(httpx2.AsyncBaseTransport):
    @property
    def transport(self) -> httpx2.AsyncBaseTransport: ...

class CacheTransport(_Layer):
    def __init__(
        self,
        transport: httpx2.BaseTransport,
        policy: CachePolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...

class AsyncCacheTransport(_AsyncLayer):
    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport,
        policy: CachePolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...

class RetryTransport(_Layer):
    def __init__(
        self,
        transport: httpx2.BaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _random: RandomSource | None = None,
    ) -> None: ...

class AsyncRetryTransport(_AsyncLayer):
    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _random: RandomSource | None = None,
    ) -> None: ...

class CircuitBreakerTransport(_Introspection, _Layer):
    def __init__(
        self,
        transport: httpx2.BaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...

class AsyncCircuitBreakerTransport(_Introspection, _AsyncLayer):
    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...

class RateLimitTransport(_Layer):
    def __init__(
        self,
        transport: httpx2.BaseTransport,
        policy: RateLimitPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...

class AsyncRateLimitTransport(_AsyncLayer):
    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport,
        policy: RateLimitPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None: ...
