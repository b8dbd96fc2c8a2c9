"""MemoryStore: bounds by entries and bytes, per-record expiry, events, memory."""

from __future__ import annotations

import gc
import math
import tracemalloc

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayengo import CachePolicy
from klayengo._core.cache import CacheEntry, VaryIndex, make_entry
from klayengo._core.cachestore import MemoryStore, decode_record, encode_record
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events

HEADERS = {
    "Content-Type": "application/json",
    "Date": "Tue, 14 Nov 2023 22:13:20 GMT",
    "Cache-Control": "max-age=60",
    "ETag": '"abc"',
}


class Recorder(Events):
    def __init__(self) -> None:
        self.evicted = 0
        self.sizes: list[tuple[int, int]] = []

    def cache_evicted(self, count: int) -> None:
        self.evicted += count

    def cache_size(self, entries: int, nbytes: int) -> None:
        self.sizes.append((entries, nbytes))


def make(clock: FakeClock, key: str, body: bytes = b"x" * 100, **headers: str) -> CacheEntry:
    return make_entry(
        key=key,
        host="example.test",
        status=200,
        headers=httpx.Headers({**HEADERS, **headers}),
        body=body,
        stream=httpx.ByteStream(body),
        extensions={"http_version": b"HTTP/1.1"},
        vary=(),
        request_wall=clock.wall(),
        response_wall=clock.wall(),
        now=clock.monotonic(),
        policy=CachePolicy(),
    )


def test_max_entries_evicts_least_recently_used_and_reports_it() -> None:
    clock, events = FakeClock(), Recorder()
    store = MemoryStore(max_entries=3, max_bytes=10**9, timer=clock.monotonic, events=events)
    for name in "abc":
        store.set(name, make(clock, name))
    assert store.get("a") is not None  # now "b" is the least recently used
    store.set("d", make(clock, "d"))
    assert store.get("b") is None
    assert {k for k in "acd" if store.get(k) is not None} == set("acd")
    assert events.evicted == 1 and events.sizes[-1][0] == 3 and len(store) == 3


def test_max_bytes_bounds_the_accounted_size() -> None:
    clock, events = FakeClock(), Recorder()
    one = make(clock, "k0", b"x" * 10_000)
    store = MemoryStore(
        max_entries=1000, max_bytes=one.size * 3, timer=clock.monotonic, events=events
    )
    for i in range(10):
        store.set(f"k{i}", make(clock, f"k{i}", b"x" * 10_000))
        assert store.nbytes <= store.max_bytes
    assert len(store) == 3 and events.evicted == 7
    assert events.sizes[-1] == (3, store.nbytes)


def test_a_record_larger_than_the_store_is_dropped_and_replaces_nothing() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=10, max_bytes=5000, timer=clock.monotonic)
    store.set("k", make(clock, "k"))
    store.set("k", make(clock, "k", b"x" * 10_000))
    assert store.get("k") is None  # the old response is stale news: forget it too
    store.set("j", make(clock, "j"))
    assert store.get("j") is not None


def test_records_expire_at_keep_until_not_at_freshness() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=10, max_bytes=10**7, timer=clock.monotonic)
    entry = make_entry(
        key="k",
        host="h",
        status=200,
        headers=httpx.Headers({"Cache-Control": "max-age=10"}),
        body=b"b",
        stream=httpx.ByteStream(b"b"),
        extensions={},
        vary=(),
        request_wall=clock.wall(),
        response_wall=clock.wall(),
        now=clock.monotonic(),
        policy=CachePolicy(stale_if_error=100),
    )
    store.set("k", entry)
    clock.advance(50)  # stale, but inside the stale-if-error window: kept
    assert store.get("k") is entry
    clock.advance(61)
    assert store.get("k") is None and len(store) == 0


def test_delete_and_vary_index_records() -> None:
    clock, events = FakeClock(), Recorder()
    store = MemoryStore(max_entries=10, max_bytes=10**7, timer=clock.monotonic, events=events)
    store.set("p", VaryIndex(("accept",), clock.monotonic() + 10))
    assert isinstance(store.get("p"), VaryIndex)
    store.delete("p")
    store.delete("missing")
    assert store.get("p") is None and events.sizes[-1] == (0, 0)


def test_accounted_size_covers_the_real_memory_of_an_entry() -> None:
    """ENTRY_OVERHEAD and FIELD_OVERHEAD are honest: tracemalloc agrees."""
    clock = FakeClock()
    n = 3000
    store = MemoryStore(max_entries=10**6, max_bytes=10**9, timer=clock.monotonic)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # Fresh header objects per entry, as a response from the network has.
            store.set(f"GET http://example.test/items/{i}?page=1", make(clock, f"{i}"))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= store.nbytes, (used / n, store.nbytes / n)


@pytest.mark.slow
def test_memory_stays_bounded_while_a_million_distinct_urls_pass_through() -> None:
    """1,000,000 distinct URLs go into a 4 MiB store.

    tracemalloc runs over the last ``TRACED`` inserts only (it slows allocation
    several-fold): by then the store has been replaced many times over, so every
    record it still holds was allocated while traced, and what is still traced at
    the end is the store's whole content plus any leak.
    """
    clock = FakeClock()
    max_bytes, total, traced = 4 * 2**20, 1_000_000, 50_000
    store = MemoryStore(max_entries=100_000, max_bytes=max_bytes, timer=clock.monotonic)
    template = make(clock, "template")
    fields = {name: getattr(template, name) for name in CacheEntry.__slots__}
    gc.collect()
    try:
        for i in range(total):
            if i == total - traced:
                tracemalloc.start()
            key = f"GET http://h{i % 1000}.example.test/item/{i}?q={i}"
            body = i.to_bytes(8, "big") * 16  # a distinct 128-byte body
            fields["key"], fields["body"] = key, body
            fields["stream"] = httpx.ByteStream(body)
            fields["size"] = template.size - len(template.body) + len(body)
            store.set(key, CacheEntry(**fields))
            if i % 10_000 == 0:
                assert store.nbytes <= max_bytes
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    entries = len(store)
    assert store.nbytes <= max_bytes
    assert traced > entries > 1000  # the traced inserts replaced the whole store
    assert current <= max_bytes, current
    assert peak <= max_bytes * 1.1, peak


# -- the serialized form ------------------------------------------------------------------


_DEADLINES = {
    "stored_at",
    "fresh_until",
    "stale_if_error_until",
    "stale_while_revalidate_until",
    "keep_until",
}


def _fields(entry: CacheEntry) -> dict[str, object]:
    skip = {"headers", "stream"}
    return {name: getattr(entry, name) for name in CacheEntry.__slots__ if name not in skip}


def test_a_record_round_trips_through_its_serialized_form() -> None:
    clock = FakeClock()
    entry = make(clock, "GET http://example.test/a", b"\x00\xff" * 50, Vary="Accept")
    entry.vary = ("accept",)
    clock.advance(2.0)  # stored a little after it was made
    encoded = encode_record(entry, clock.monotonic())
    assert encoded is not None
    value, keep_ms = encoded
    assert keep_ms == math.floor((entry.keep_until - clock.monotonic()) * 1000)
    assert b"example.test/a" not in value  # the key is the reader's to know
    # Read in another process, whose monotonic clock is elsewhere, 1.5 s later.
    other = 10_000.0
    found = decode_record(entry.key, value, keep_ms - 1500, other, httpx)
    assert isinstance(found, CacheEntry)
    shift = other - 1.5 - clock.monotonic()  # the writer's "now" on the reader's clock
    for name, expected in _fields(entry).items():
        got = _fields(found)[name]
        if name in _DEADLINES:
            assert got == pytest.approx(expected + shift, abs=1e-3), name  # type: ignore[operator]
        else:
            assert got == expected, name
    assert found.headers.raw == entry.headers.raw
    assert found.age(other) == pytest.approx(entry.age(clock.monotonic()) + 1.5, abs=1e-3)
    assert b"".join(found.stream) == entry.body


def test_a_vary_index_round_trips_and_expired_records_are_not_encoded() -> None:
    clock = FakeClock()
    encoded = encode_record(VaryIndex(("accept", "cookie"), 5.0), 0.0)
    assert encoded is not None and encoded[1] == 5000
    found = decode_record("p", encoded[0], 4000, 3.0, httpx)
    assert isinstance(found, VaryIndex) and found.vary == ("accept", "cookie")
    assert found.keep_until == pytest.approx(7.0)
    assert encode_record(VaryIndex((), clock.monotonic()), clock.monotonic()) is None
    assert decode_record("p", encoded[0], 0, 3.0, httpx) is None  # no time left


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_decoding_garbage_is_a_miss_never_an_error(value: bytes) -> None:
    decode_record("k", b"klc1" + value, 1000, 0.0, httpx)  # whatever it finds, it does not raise
    assert decode_record("k", value, 1000, 0.0, httpx) is None


def test_decoding_a_tampered_record_is_a_miss() -> None:
    clock = FakeClock()
    encoded = encode_record(make(clock, "k"), clock.monotonic())
    assert encoded is not None
    value = encoded[0]
    tampered = [
        (b'"status":200', b'"status":"200"'),
        (b'"plain":true', b'"plain":1'),
        (b'"kind":"entry"', b'"kind":"other"'),
        (b'"headers":[', b'"headers":[1,'),
    ]
    for old, new in tampered:
        assert old in value
        assert decode_record("k", value.replace(old, new), 1000, 0.0, httpx) is None, new
    assert decode_record("k", value[:20], 1000, 0.0, httpx) is None
