"""Policy validation: every invalid value names the field and the value."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from klayengo import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    MetricsPolicy,
    RateLimitPolicy,
    RetryPolicy,
)


def test_documented_defaults() -> None:
    r = RetryPolicy()
    assert (r.max_retries, r.backoff_base, r.backoff_multiplier, r.backoff_max) == (3, 0.1, 2, 10)
    assert r.retry_statuses == {429, 502, 503, 504}
    assert r.methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert r.idempotency_header == "Idempotency-Key"
    assert r.max_retry_after == 60 and r.deadline is None
    assert (r.budget_ratio, r.budget_min_per_second, r.budget_window) == (0.2, 10, 10)
    assert not r.retry_on_circuit_open and not r.retry_on_rate_limited

    b = CircuitBreakerPolicy()
    assert (b.window, b.minimum_calls, b.failure_rate_threshold) == (30, 20, 0.5)
    assert b.consecutive_failures is None and b.slow_call_duration is None
    assert (b.open_duration, b.half_open_max_calls, b.success_threshold) == (30, 1, 1)
    assert b.failure_statuses == {500, 502, 503, 504} and b.max_hosts == 1000

    rl = RateLimitPolicy(rate=5)
    assert (rl.per, rl.burst, rl.scope, rl.max_wait, rl.max_pause) == (1, 1, "host", None, 60)

    c = CachePolicy()
    assert (c.ttl, c.respect_cache_control, c.stale_if_error) == (60, True, 0)
    assert (c.max_entries, c.max_bytes, c.max_entry_bytes) == (1024, 64 * 2**20, 2**20)
    assert c.coalesce and c.methods == ("GET", "HEAD")

    assert MetricsPolicy().max_hosts == 100 and MetricsPolicy().registry is None


INVALID: list[tuple[type[Any], dict[str, Any], type[Exception], str]] = [
    (RetryPolicy, {"max_retries": -1}, ValueError, "max_retries"),
    (RetryPolicy, {"max_retries": 1.5}, TypeError, "max_retries"),
    (RetryPolicy, {"max_retries": True}, TypeError, "max_retries"),
    (RetryPolicy, {"backoff_base": 0}, ValueError, "backoff_base"),
    (RetryPolicy, {"backoff_base": "1"}, TypeError, "backoff_base"),
    (RetryPolicy, {"backoff_base": math.nan}, ValueError, "backoff_base"),
    (RetryPolicy, {"backoff_max": 0.05}, ValueError, "backoff_max"),
    (RetryPolicy, {"backoff_max": math.inf}, ValueError, "backoff_max"),
    (RetryPolicy, {"backoff_multiplier": 0.5}, ValueError, "backoff_multiplier"),
    (RetryPolicy, {"max_retry_after": -1}, ValueError, "max_retry_after"),
    (RetryPolicy, {"deadline": 0}, ValueError, "deadline"),
    (RetryPolicy, {"deadline": "5"}, TypeError, "deadline"),
    (RetryPolicy, {"budget_ratio": -0.1}, ValueError, "budget_ratio"),
    (RetryPolicy, {"budget_min_per_second": -1}, ValueError, "budget_min_per_second"),
    (RetryPolicy, {"budget_window": 0}, ValueError, "budget_window"),
    (RetryPolicy, {"retry_statuses": {700}}, ValueError, "retry_statuses"),
    (RetryPolicy, {"retry_statuses": "500"}, TypeError, "retry_statuses"),
    (RetryPolicy, {"methods": {"GE T"}}, ValueError, "methods"),
    (RetryPolicy, {"idempotency_header": ""}, ValueError, "idempotency_header"),
    (RetryPolicy, {"jitter": 1}, TypeError, "jitter"),
    (CircuitBreakerPolicy, {"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold"),
    (CircuitBreakerPolicy, {"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
    (CircuitBreakerPolicy, {"minimum_calls": 0}, ValueError, "minimum_calls"),
    (CircuitBreakerPolicy, {"window": 0}, ValueError, "window"),
    (CircuitBreakerPolicy, {"open_duration": -1}, ValueError, "open_duration"),
    (CircuitBreakerPolicy, {"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
    (CircuitBreakerPolicy, {"success_threshold": 0}, ValueError, "success_threshold"),
    (CircuitBreakerPolicy, {"consecutive_failures": 0}, ValueError, "consecutive_failures"),
    (CircuitBreakerPolicy, {"slow_call_duration": 0}, ValueError, "slow_call_duration"),
    (CircuitBreakerPolicy, {"slow_call_rate_threshold": 0}, ValueError, "slow_call_rate_threshold"),
    (CircuitBreakerPolicy, {"max_hosts": 0}, ValueError, "max_hosts"),
    (CircuitBreakerPolicy, {"on_state_change": "print"}, TypeError, "on_state_change"),
    (CircuitBreakerPolicy, {"is_failure": 3}, TypeError, "is_failure"),
    (RateLimitPolicy, {"rate": 0}, ValueError, "rate"),
    (RateLimitPolicy, {"rate": 1, "per": 0}, ValueError, "per"),
    (RateLimitPolicy, {"rate": 1, "burst": 0}, ValueError, "burst"),
    (RateLimitPolicy, {"rate": 1, "burst": 1.5}, TypeError, "burst"),
    (RateLimitPolicy, {"rate": 1, "scope": "global"}, ValueError, "scope"),
    (RateLimitPolicy, {"rate": 1, "max_wait": -1}, ValueError, "max_wait"),
    (RateLimitPolicy, {"rate": 1, "max_pause": -1}, ValueError, "max_pause"),
    (CachePolicy, {"ttl": -1}, ValueError, "ttl"),
    (CachePolicy, {"stale_if_error": -1}, ValueError, "stale_if_error"),
    (CachePolicy, {"max_entries": 0}, ValueError, "max_entries"),
    (CachePolicy, {"max_bytes": 0}, ValueError, "max_bytes"),
    (CachePolicy, {"max_entry_bytes": 0}, ValueError, "max_entry_bytes"),
    (CachePolicy, {"max_bytes": 10, "max_entry_bytes": 11}, ValueError, "max_entry_bytes"),
    (CachePolicy, {"methods": ()}, ValueError, "methods"),
    (CachePolicy, {"coalesce": "yes"}, TypeError, "coalesce"),
    (MetricsPolicy, {"max_hosts": 0}, ValueError, "max_hosts"),
    (MetricsPolicy, {"registry": object()}, TypeError, "registry"),
    (HostPolicy, {"retry": CachePolicy()}, TypeError, "retry"),
    (HostPolicy, {"cache": 5}, TypeError, "cache"),
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "field"), INVALID)
def test_invalid_values_raise_naming_field_and_value(
    cls: type[Any], kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    if cls is RateLimitPolicy:
        kwargs = {"rate": 1, **kwargs}
    with pytest.raises(error) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"{cls.__name__}.{field}" in message
    value = kwargs[field]
    assert repr(value) in message or str(value) in message


def test_policies_are_frozen_and_replace_validates_again() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_retries = 5  # type: ignore[misc]
    assert dataclasses.replace(policy, max_retries=5).max_retries == 5
    with pytest.raises(ValueError, match="max_retries"):
        dataclasses.replace(policy, max_retries=-2)


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]


def test_collections_are_normalized() -> None:
    policy = RetryPolicy(methods=["get", "post"], retry_statuses=[503])
    assert policy.methods == frozenset({"GET", "POST"})
    assert policy.retry_statuses == frozenset({503})
    assert CachePolicy(methods=["head", "get"]).methods == ("GET", "HEAD")
    assert hash(policy) == hash(RetryPolicy(methods=["post", "get"], retry_statuses=[503]))
