"""How a public surface (``klayengo``, ``klayengo.httpx2``) exports its binding's names."""

from __future__ import annotations

from typing import Any, Final

from ._flavour import bind

__all__ = ["BOUND_NAMES", "export"]

#: The public names of every binding (``klayengo/_bound/__init__.py``'s ``__all__``).
BOUND_NAMES: Final = (
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
)


def export(namespace: dict[str, Any], flavour: str, name: str) -> Any:
    """The public ``name`` of ``flavour``'s binding, cached in the surface's ``namespace``.

    Binds the flavour on first use; each exported object reports the surface as its
    home (``klayengo.ResilientClient``, ``klayengo.httpx2.ResilientClient``).

    Raises:
        AttributeError: ``name`` is not one of the binding's public names.
    """
    module = namespace["__name__"]
    if name not in BOUND_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    value = getattr(bind(flavour), name)
    if getattr(value, "__module__", "").startswith("klayengo."):
        value.__module__ = module
    namespace[name] = value
    return value
