"""A body larger than max_entry_bytes streams through uncached and is never buffered.

50 MiB go through the cache in 64 KiB chunks (the same chunk object each time, so
the upstream allocates nothing); tracemalloc's peak shows what the cache kept.
"""

from __future__ import annotations

import tracemalloc

import pytest

from klayengo import CachePolicy
from klayengo._core.report import report
from tests.transports._cache_helpers import Harness, streamed

URL = "http://big.test/file?id=7"
TOTAL = 50 * 2**20
CHUNK = 64 * 2**10
#: What the cache may hold of a too-large body: up to max_entry_bytes (1 MiB by
#: default) before it gives up, plus the bookkeeping of a few chunks.
PEAK_LIMIT = 3 * 2**20


@pytest.mark.parametrize("mode", ["sync", "asyncio", "trio"])
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_50_mib_body_streams_through_without_being_buffered(mode: str, length: bool) -> None:
    h = Harness(mode, streamed(TOTAL, CHUNK, length=length), CachePolicy())
    tracemalloc.start()
    try:
        read = h.stream_read(URL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == TOTAL
    assert peak < PEAK_LIMIT, peak
    assert h.events.kinds() == ["miss"] and not h.events.sizes  # nothing stored
    again = h.stream_read(URL)
    assert again == TOTAL and len(h.calls) == 2


def test_the_same_body_is_stored_when_the_limit_allows_it() -> None:
    """The control: with a limit above the size, the cache does keep the body."""
    h = Harness("sync", streamed(4 * 2**20, CHUNK), CachePolicy(max_entry_bytes=8 * 2**20))
    tracemalloc.start()
    try:
        h.stream_read(URL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > 4 * 2**20
    assert report(h.get(URL))["cache"] == "hit"


def test_many_distinct_urls_through_the_transport_keep_the_bounds_and_leak_nothing() -> None:
    h = Harness("sync", streamed(2000, 500), CachePolicy(max_entries=500, max_bytes=2**20))
    state = h.context.peek("cache.store")
    for i in range(5000):
        h.get(f"http://many.test/{i}?q={i}")
    assert len(state.store) <= 500 and state.store.nbytes <= 2**20
    assert not state.flights
    assert h.events.evicted >= 4000
