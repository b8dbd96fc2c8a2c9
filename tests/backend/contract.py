"""Behaviour every backend's stores must share, run against each implementation."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from klayengo import CachePolicy
from klayengo._core.backend import CacheStore
from klayengo._core.cache import CacheEntry, VaryIndex, make_entry
from klayengo._core.clock import Clock


def entry(clock: Clock, key: str, ttl: float, body: bytes = b"body", **headers: str) -> CacheEntry:
    """A stored response to ``GET key`` fresh for ``ttl`` seconds from now."""
    return make_entry(
        key=key,
        host="a",
        status=200,
        headers=httpx.Headers({"Content-Type": "application/octet-stream", **headers}),
        body=body,
        stream=httpx.ByteStream(body),
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"OK"},
        vary=(),
        request_wall=clock.wall(),
        response_wall=clock.wall(),
        now=clock.monotonic(),
        policy=CachePolicy(ttl=ttl),
    )


def check_cache_store(cache: CacheStore, clock: Clock, pass_time: Callable[[float], None]) -> None:
    """get/set/delete of records kept until their ``keep_until``; ``pass_time(s)``
    lets ``s`` seconds go by on ``clock``."""
    assert isinstance(cache.key_salt, bytes) and len(cache.key_salt) >= 16
    stored = entry(clock, "GET https://a/", 0.2, bytes(range(256)) * 4)  # binary-safe
    assert cache.get("GET https://a/") is None
    cache.set("GET https://a/", stored)
    found = cache.get("GET https://a/")
    assert isinstance(found, CacheEntry)
    assert (found.key, found.status, found.body) == (stored.key, 200, stored.body)
    assert found.headers.raw == stored.headers.raw
    assert found.extensions == stored.extensions
    assert abs(found.fresh_until - stored.fresh_until) < 0.05
    assert abs(found.keep_until - stored.keep_until) < 0.05
    pass_time(0.25)
    assert cache.get("GET https://a/") is None  # past its keep_until
    cache.set("k", VaryIndex(("accept",), clock.monotonic() + 60))
    index = cache.get("k")
    assert isinstance(index, VaryIndex) and index.vary == ("accept",)
    cache.delete("k")
    cache.delete("k")  # absent: a no-op
    assert cache.get("k") is None
    cache.set("k", VaryIndex((), clock.monotonic()))  # nothing left to keep: not stored
    assert cache.get("k") is None
    cache.close()
