"""Behaviour every backend's stores must share, run against each implementation."""

from __future__ import annotations

from collections.abc import Callable

from klayengo._core.backend import CacheStore


def check_cache_store(cache: CacheStore, pass_time: Callable[[float], None]) -> None:
    """get/set/delete with a TTL; ``pass_time(s)`` lets ``s`` seconds go by."""
    value = bytes(range(256)) * 4  # binary-safe
    assert cache.get("GET https://a/") is None
    cache.set("GET https://a/", value, 0.2)
    assert cache.get("GET https://a/") == value
    pass_time(0.25)
    assert cache.get("GET https://a/") is None
    cache.set("k", b"v", 60)
    cache.delete("k")
    cache.delete("k")  # absent: a no-op
    assert cache.get("k") is None
    cache.set("k", b"v", 0)  # ttl <= 0 stores nothing
    assert cache.get("k") is None
