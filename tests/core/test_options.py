"""Per-request control through extensions={"klayengo": {...}}."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from klayengo import CachePolicy, RetryPolicy
from klayengo._core.options import DEFAULT_OPTIONS, request_options
from klayengo._policies import UNSET


def options(raw: Any) -> Any:
    return request_options(httpx.Request("GET", "https://x/", extensions={"klayengo": raw}))


def test_no_extension_is_the_default() -> None:
    assert request_options(httpx.Request("GET", "https://x/")) is DEFAULT_OPTIONS


def test_recognised_keys() -> None:
    parsed = options(
        {"retry": False, "deadline": 2, "breaker": False, "rate_limit": False, "cache": False}
    )
    assert parsed.retry is None and parsed.deadline == 2.0
    assert parsed.breaker is False and parsed.rate_limit is False and parsed.cache is False
    policy = RetryPolicy(max_retries=1)
    assert options({"retry": policy}).retry is policy
    assert options({"retry": True}).retry is UNSET
    assert options({"max_retries": 0}).max_retries == 0
    assert options({"deadline": None}).deadline is None
    assert isinstance(options({"cache": CachePolicy(ttl=1)}).cache, CachePolicy)


@pytest.mark.parametrize(
    ("raw", "error", "needle"),
    [
        ({"retries": 3}, TypeError, "'retries'"),
        ({"retry": 3}, TypeError, '"retry"'),
        ({"max_retries": "3"}, TypeError, '"max_retries"'),
        ({"max_retries": -1}, ValueError, '"max_retries"'),
        ({"deadline": 0}, ValueError, '"deadline"'),
        ({"deadline": "1"}, TypeError, '"deadline"'),
        ({"breaker": 0}, TypeError, '"breaker"'),
        ({"cache": "bypass"}, TypeError, '"cache"'),
        (["retry"], TypeError, "must be a dict"),
    ],
)
def test_bad_options_raise_clearly(raw: Any, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle.replace("[", r"\[")):
        options(raw)
