"""One-line descriptions for people: of policies, of a response's layer report, of an
error. Shared by ``klayengo get`` and ``klayengo demo``; flavour-free.

Nothing here ever shows a URL's userinfo or query: hosts are shown as host keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._core.errors import error_names
from ._core.hosts import host_key
from ._policies import CachePolicy, CircuitBreakerPolicy, RateLimitPolicy, RetryPolicy

if TYPE_CHECKING:
    from ._flavour import httpx

__all__ = [
    "describe_breaker",
    "describe_cache",
    "describe_error",
    "describe_rate_limit",
    "describe_retry",
    "layer_report",
]


def describe_retry(policy: RetryPolicy) -> str:
    """``"retry 3x, deadline 5 s"``."""
    text = f"retry {policy.max_retries}x"
    if policy.deadline is not None:
        text += f", deadline {policy.deadline:g} s"
    return text


def describe_breaker(policy: CircuitBreakerPolicy) -> str:
    """``"breaker: 5 in a row or 50% of >= 20 calls, open 30 s"``."""
    text = "breaker: "
    if policy.consecutive_failures is not None:
        text += f"{policy.consecutive_failures} in a row or "
    return (
        text + f"{policy.failure_rate_threshold:.0%} of >= {policy.minimum_calls} calls, "
        f"open {policy.open_duration:g} s"
    )


def describe_rate_limit(policy: RateLimitPolicy) -> str:
    """``"rate limit 10/1 s, burst 1, max_wait 0.5 s"``."""
    text = f"rate limit {policy.rate:g}/{policy.per:g} s, burst {policy.burst}"
    if policy.max_wait is not None:
        text += f", max_wait {policy.max_wait:g} s"
    return text


def describe_cache(policy: CachePolicy) -> str:
    """``"cache ttl 60 s, stale-if-error 40 s"``."""
    text = f"cache ttl {policy.ttl:g} s"
    if policy.stale_if_error:
        text += f", stale-if-error {policy.stale_if_error:g} s"
    return text


def layer_report(response: httpx.Response) -> str:
    """``attempts=1 cache=miss breaker=closed wait=0.000s`` from the response's report."""
    report = response.extensions.get("klayengo") or {}
    attempts = report.get("attempts", 1)
    cache = report.get("cache") or "off"
    breaker = report.get("breaker") or "off"
    wait = float(report.get("wait") or 0.0)
    return f"attempts={attempts} cache={cache} breaker={breaker} wait={wait:.3f}s"


def describe_error(exc: httpx.HTTPError, url: httpx.URL, attempts: int = 0) -> str:
    """One line for an expected failure: what happened and to which host, never the
    query string or credentials of the URL; then, when ``attempts`` is not 0, how many
    attempts were sent (``"... (after 4 attempts)"``)."""
    text = _what_failed(exc, host_key(url))
    if attempts > 0:
        text += f" (after {attempts} attempt{'' if attempts == 1 else 's'})"
    return text


def _what_failed(exc: httpx.HTTPError, host: str) -> str:
    names = error_names(type(exc))
    if "ResilienceError" in names:
        retry_after = getattr(exc, "retry_after", None)
        where = getattr(exc, "host", "") or host
        if "CircuitOpenError" in names:
            after = f"; next probe in {retry_after:.1f} s" if retry_after else ""
            return f"circuit open for {where}: not sent{after}"
        if "RateLimitExceeded" in names:
            after = f"; next turn in {retry_after:.1f} s" if retry_after else ""
            return f"rate limited for {where}: not sent{after}"
    if "TimeoutException" in names:
        return f"timed out talking to {host}: {type(exc).__name__}"
    if "ConnectError" in names:
        return f"cannot connect to {host}: {_reason(exc)}"
    return f"{type(exc).__name__} from {host}: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
