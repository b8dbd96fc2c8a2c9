"""ResilientClient / AsyncResilientClient: wiring only.

The clients are httpx's own clients with every transport httpx would use (the
default one built from the client's settings, the user's ``transport=``, every
``mounts=`` entry and every proxy transport) wrapped in klayengo's stack. All other
behaviour is httpx's, untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._context import LayerContext
from .._core.backend import Backend
from .._core.breaker import BreakerSnapshot
from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.hosts import PolicyResolver
from .._metrics import create_metrics
from .._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    MetricsPolicy,
    RateLimitPolicy,
    RetryPolicy,
    check_policy,
)
from . import httpx
from ._cookies import JAR
from ._transports import breaker as _breaker
from ._transports.stack import (
    AsyncStackTransport,
    StackTransport,
    build_async_stack,
    build_stack,
)

__all__ = ["AsyncResilientClient", "ResilientClient"]


class _Default:
    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()
_USE_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT
#: The auth of every request without one (see `_build_request_auth`).
_NO_AUTH: Final = httpx.Auth()


def _make_context(
    *,
    name: object,
    retry: Any,
    breaker: Any,
    rate_limit: Any,
    cache: Any,
    hosts: Mapping[str, HostPolicy] | None,
    metrics: object,
    backend: object,
    clock: Clock | None,
) -> LayerContext:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    retry = RetryPolicy() if retry is _DEFAULT else retry
    breaker = CircuitBreakerPolicy() if breaker is _DEFAULT else breaker
    check_policy("retry", retry, RetryPolicy)
    check_policy("breaker", breaker, CircuitBreakerPolicy)
    check_policy("rate_limit", rate_limit, RateLimitPolicy)
    check_policy("cache", cache, CachePolicy)
    resolver = PolicyResolver(
        retry=retry, breaker=breaker, rate_limit=rate_limit, cache=cache, hosts=hosts
    )
    context = LayerContext(name=name, resolver=resolver, clock=clock or SYSTEM_CLOCK, http=httpx)
    if clock is not None and hasattr(clock, "sleep") and hasattr(clock, "async_sleep"):
        # A FakeClock: sleeping advances it instead of waiting.
        context.sleep = clock.sleep
        context.async_sleep = clock.async_sleep
    if backend is not None and not isinstance(backend, Backend):
        raise TypeError(
            "backend must be None or a backend such as klayengo.RedisBackend "
            f"(with bind, close and aclose), got {type(backend).__name__}"
        )
    context.backend = backend
    create_metrics(context, metrics)
    # Once per client; what the backend reports reaches the metrics attached above.
    context.bind()
    return context


class _ResilientMixin:
    """Introspection shared by both clients."""

    _klayengo: LayerContext
    _cookies: httpx.Cookies

    @property
    def cookies(self) -> httpx.Cookies:
        """Cookie values to include when sending requests (as in httpx)."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        # httpx's own conversion (a CookieJar is shared, anything else copied), in
        # the jar wrapper that skips cookie parsing for responses without cookies
        # (on httpx; httpx2's own jar already does).
        self._cookies = JAR(cookies)

    def _build_request_auth(self, request: httpx.Request, auth: Any = _USE_DEFAULT) -> httpx.Auth:
        base: Any = super()
        found: httpx.Auth = base._build_request_auth(request, auth)
        # Without auth httpx builds a new `Auth()`, which holds no state, for every
        # request; each request in flight would keep one more object alive for the
        # collector to scan. One shared instance does the same.
        return _NO_AUTH if type(found) is httpx.Auth else found

    @property
    def klayengo_name(self) -> str:
        """The client's name (the ``client`` metrics label)."""
        return self._klayengo.name

    def breaker_state(self, host: str | httpx.URL) -> str:
        """The breaker state of ``host`` (a ``host[:port]`` key or an origin URL):
        ``"closed" | "open" | "half_open"``. An unknown host is ``"closed"``.
        """
        return _breaker.breaker_state(self._klayengo, host)

    def breaker_snapshot(self) -> Mapping[str, BreakerSnapshot]:
        """A snapshot of every breaker: host key -> :class:`BreakerSnapshot`."""
        return _breaker.breaker_snapshot(self._klayengo)

    def reset_breaker(self, host: str | httpx.URL) -> None:
        """Forget the breaker of ``host``: it starts closed with an empty window."""
        _breaker.reset_breaker(self._klayengo, host)


class ResilientClient(_ResilientMixin, httpx.Client):
    """A drop-in :class:`httpx.Client` with klayengo's resilience stack.

    Usage::

        with klayengo.ResilientClient(base_url="https://api.example.com") as client:
            response = client.get("/items")

    Every ``httpx.Client`` argument works unchanged. Besides them:

    Args:
        name: the ``client`` label in metrics. Default ``"default"``.
        retry: a :class:`RetryPolicy`; ``None`` disables retries. Default ``RetryPolicy()``.
        breaker: a :class:`CircuitBreakerPolicy`; ``None`` disables breakers.
            Default ``CircuitBreakerPolicy()``.
        rate_limit: a :class:`RateLimitPolicy`, or ``None`` (default) for no limit.
        cache: a :class:`CachePolicy`, or ``None`` (default) for no cache.
        hosts: ``{pattern: HostPolicy}`` per-host overrides; the most specific pattern wins.
        metrics: ``True`` (default) for prometheus_client's default registry, a
            ``CollectorRegistry``, a :class:`MetricsPolicy`, or ``False`` for none.
        backend: where breaker signals, rate-limit quotas and cache entries live:
            ``None`` (default) keeps them in this client's memory;
            ``klayengo.RedisBackend(url)`` shares them with every process using the
            same Redis and prefix. A backend may serve several clients and is not
            closed by them: close it (or use it as a context manager) when done.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        retry: RetryPolicy | None = _DEFAULT,
        breaker: CircuitBreakerPolicy | None = _DEFAULT,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
        metrics: bool | MetricsPolicy | Any = True,
        backend: Backend | None = None,
        _clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        self._klayengo = _make_context(
            name=name,
            retry=retry,
            breaker=breaker,
            rate_limit=rate_limit,
            cache=cache,
            hosts=hosts,
            metrics=metrics,
            backend=backend,
            clock=_clock,
        )
        self._klayengo_stacks: dict[int, StackTransport] = {}
        super().__init__(**kwargs)
        self.cookies = self._cookies.jar  # httpx's jar, in klayengo's wrapper (see _cookies)
        # User mounts bypass the _init_* hooks: wrap them here.
        for pattern, transport in self._mounts.items():
            if transport is not None and not isinstance(transport, StackTransport):
                self._mounts[pattern] = self._klayengo_wrap(transport)

    def _klayengo_wrap(self, transport: httpx.BaseTransport) -> StackTransport:
        # One stack per distinct inner transport: the same object mounted twice is
        # wrapped once, so it is closed exactly once.
        found = self._klayengo_stacks.get(id(transport))
        if found is None or found.inner is not transport:
            found = build_stack(transport, self._klayengo)
            self._klayengo_stacks[id(transport)] = found
        return found

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return self._klayengo_wrap(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return self._klayengo_wrap(super()._init_proxy_transport(*args, **kwargs))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._klayengo.close()

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            self._klayengo.close()


class AsyncResilientClient(_ResilientMixin, httpx.AsyncClient):
    """A drop-in :class:`httpx.AsyncClient` with klayengo's resilience stack.

    Works on asyncio and trio. Takes every ``httpx.AsyncClient`` argument plus the
    same klayengo arguments as :class:`ResilientClient`.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        retry: RetryPolicy | None = _DEFAULT,
        breaker: CircuitBreakerPolicy | None = _DEFAULT,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
        metrics: bool | MetricsPolicy | Any = True,
        backend: Backend | None = None,
        _clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        self._klayengo = _make_context(
            name=name,
            retry=retry,
            breaker=breaker,
            rate_limit=rate_limit,
            cache=cache,
            hosts=hosts,
            metrics=metrics,
            backend=backend,
            clock=_clock,
        )
        self._klayengo_stacks: dict[int, AsyncStackTransport] = {}
        super().__init__(**kwargs)
        self.cookies = self._cookies.jar
        for pattern, transport in self._mounts.items():
            if transport is not None and not isinstance(transport, AsyncStackTransport):
                self._mounts[pattern] = self._klayengo_wrap(transport)

    def _klayengo_wrap(self, transport: httpx.AsyncBaseTransport) -> AsyncStackTransport:
        found = self._klayengo_stacks.get(id(transport))
        if found is None or found.inner is not transport:
            found = build_async_stack(transport, self._klayengo)
            self._klayengo_stacks[id(transport)] = found
        return found

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return self._klayengo_wrap(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return self._klayengo_wrap(super()._init_proxy_transport(*args, **kwargs))

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._klayengo.close()

    async def __aexit__(self, *args: Any) -> None:
        try:
            await super().__aexit__(*args)
        finally:
            self._klayengo.close()
