"""The exceptions klayengo raises.

Every one of them subclasses :class:`httpx.TransportError`, so code that already
handles ``httpx.HTTPError`` (or ``httpx.RequestError``/``httpx.TransportError``)
keeps working unchanged when klayengo's client is swapped in::

    httpx.HTTPError
    └── httpx.RequestError
        └── httpx.TransportError
            └── ResilienceError            a resilience layer refused the request
                ├── CircuitOpenError       the host's breaker is open (or its probes are taken)
                └── RateLimitExceeded      the limiter would make the request wait past max_wait

Errors raised by the network itself (``httpx.ConnectError``, ``httpx.ReadTimeout``,
...) are passed through untouched: klayengo never wraps or renames them.
"""

from __future__ import annotations

from . import httpx

__all__ = ["CircuitOpenError", "RateLimitExceeded", "ResilienceError"]


class ResilienceError(httpx.TransportError):
    """A resilience layer refused to send the request.

    Attributes:
        host: the sanitized ``host[:port]`` key the refusal applies to.
        retry_after: seconds after which the same request may succeed, or ``None``
            when that is unknown.
        request: the refused :class:`httpx.Request` (as on every httpx request error).
    """

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        host: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.host = host
        self.retry_after = retry_after


class CircuitOpenError(ResilienceError):
    """The circuit breaker for ``host`` is open, or all its half-open probe slots are taken.

    No network traffic was attempted and no rate-limit token was spent.
    ``retry_after`` is the number of seconds until the breaker admits a probe
    (``0.0`` when it is half-open and merely busy).
    """


class RateLimitExceeded(ResilienceError):
    """The rate limiter would have made the request wait longer than ``max_wait``.

    The request was not sent and spent no token; ``retry_after`` is the number of
    seconds until it would be admitted.
    """
