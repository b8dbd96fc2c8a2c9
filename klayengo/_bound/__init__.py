"""klayengo's flavour-bound code, written once, imported once per flavour.

This directory is imported as ``klayengo._httpx`` and as ``klayengo._httpx2`` (see
:mod:`klayengo._flavour`), never as ``klayengo._bound``. Its modules reach their HTTP
library through this package's ``httpx`` name (``from . import httpx``), which is
httpx in the first binding and httpx2 in the second, so every class here subclasses
the right library's classes. The public surfaces are ``klayengo`` (httpx) and
``klayengo.httpx2``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from .._flavour import BINDINGS

#: The flavour switch of the type checker (see :data:`klayengo._flavour.HTTPX2`).
HTTPX2: Final = False

if TYPE_CHECKING:
    if HTTPX2:
        import httpx2 as httpx
        from httpx2 import _content, _multipart
    else:
        import httpx
        from httpx import _content, _multipart
else:
    try:
        _library = BINDINGS[__name__]
    except KeyError:
        raise ImportError(
            "klayengo._bound is not importable as such: import klayengo or klayengo.httpx2"
        ) from None
    httpx = importlib.import_module(_library)
    # Request-body stream types the retry layer inspects (not re-exported by httpx).
    _content = importlib.import_module(f"{_library}._content")
    _multipart = importlib.import_module(f"{_library}._multipart")

from ._client import AsyncResilientClient, ResilientClient
from ._exceptions import CircuitOpenError, RateLimitExceeded, ResilienceError
from ._transports.breaker import (
    AsyncCircuitBreakerTransport,
    CircuitBreakerTransport,
)
from ._transports.cache import AsyncCacheTransport, CacheTransport
from ._transports.ratelimit import AsyncRateLimitTransport, RateLimitTransport
from ._transports.retry import AsyncRetryTransport, RetryTransport

#: The names each public surface re-exports (``klayengo._surface.BOUND_NAMES``).
__all__ = [
    "AsyncCacheTransport",
    "AsyncCircuitBreakerTransport",
    "AsyncRateLimitTransport",
    "AsyncResilientClient",
    "AsyncRetryTransport",
    "CacheTransport",
    "CircuitBreakerTransport",
    "CircuitOpenError",
    "RateLimitExceeded",
    "RateLimitTransport",
    "ResilienceError",
    "ResilientClient",
    "RetryTransport",
]
