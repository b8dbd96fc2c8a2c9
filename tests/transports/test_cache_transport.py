"""CacheTransport / AsyncCacheTransport behaviour, each test in sync, asyncio and trio."""

from __future__ import annotations

import gzip
import logging

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import klayengo
from klayengo import CachePolicy, CircuitOpenError, HostPolicy, RateLimitExceeded
from klayengo._core.report import report
from tests.transports._cache_helpers import MODES, Harness, respond, streamed

URL = "http://api.test/items?id=1"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- hits ------------------------------------------------------------------------------
def test_a_hit_looks_like_the_original_response(mode: str) -> None:
    h = Harness(mode, respond(body=b"payload", cache_control="max-age=60", x_custom="1"))
    first = h.get(URL, headers={"X-Req": "1"})
    second = h.get(URL, headers={"X-Req": "2"})
    assert len(h.calls) == 1
    assert report(first)["cache"] == "miss" and report(first)["attempts"] == 1
    assert report(second) == {"attempts": 0, "cache": "hit", "breaker": None, "wait": 0.0}
    assert second.status_code == 200 and second.content == b"payload"
    assert list(second.headers.multi_items()) == list(first.headers.multi_items())
    assert second.request.headers["x-req"] == "2"
    assert second.http_version == first.http_version and second.reason_phrase == "OK"
    assert h.events.kinds() == ["miss", "hit"]
    assert h.events.results[0][0] == "api.test"


def test_a_hit_can_be_streamed_raw_and_reports_an_elapsed_time(mode: str) -> None:
    h = Harness(mode, respond(body=b"abc" * 100))
    h.get(URL)
    assert h.stream_read(URL) == 300  # iter_raw over a hit
    hit = h.get(URL)
    assert hit.elapsed.total_seconds() >= 0 and hit.text == "abc" * 100
    assert h.events.kinds() == ["miss", "hit", "hit"]


def test_each_hit_is_its_own_response_object(mode: str) -> None:
    h = Harness(mode, respond())
    responses = [h.get(URL) for _ in range(3)]
    assert len({id(r) for r in responses}) == 3 and all(r.content == b"hello" for r in responses)


def test_compressed_bodies_are_stored_raw_and_decoded_on_each_hit(mode: str) -> None:
    packed = gzip.compress(b"unpacked text")
    h = Harness(mode, respond(body=packed, content_encoding="gzip"))
    assert h.get(URL).content == b"unpacked text"
    hit = h.get(URL)
    assert report(hit)["cache"] == "hit" and hit.content == b"unpacked text"


def test_head_and_get_are_separate_entries(mode: str) -> None:
    h = Harness(mode, respond())
    h.request("HEAD", URL)
    h.get(URL)
    assert report(h.request("HEAD", URL))["cache"] == "hit"
    assert len(h.calls) == 2


# -- storability ------------------------------------------------------------------------
def test_no_store_responses_are_never_stored(mode: str) -> None:
    h = Harness(mode, respond(cache_control="no-store, max-age=60"))
    h.get(URL)
    assert report(h.get(URL))["cache"] == "miss" and len(h.calls) == 2


def test_no_store_requests_are_never_stored(mode: str) -> None:
    h = Harness(mode, respond())
    h.get(URL, headers={"Cache-Control": "no-store"})
    h.get(URL)
    assert len(h.calls) == 2


def test_forced_ttl_still_never_stores_no_store(mode: str) -> None:
    h = Harness(mode, respond(cache_control="no-store"), CachePolicy(respect_cache_control=False))
    h.get(URL)
    h.get(URL)
    assert len(h.calls) == 2


def test_private_responses_are_stored(mode: str) -> None:
    h = Harness(mode, respond(cache_control="private, max-age=60"))
    h.get(URL)
    assert report(h.get(URL))["cache"] == "hit"


def test_uncacheable_status_is_not_stored(mode: str) -> None:
    h = Harness(mode, respond(status=500))
    h.get(URL)
    h.get(URL)
    assert len(h.calls) == 2


def test_vary_keys_the_entry_by_the_named_request_headers(mode: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        lang = request.headers.get("accept-language", "none")
        return httpx.Response(200, headers={"Vary": "Accept-Language"}, content=lang.encode())

    h = Harness(mode, handler)
    assert h.get(URL, headers={"Accept-Language": "en"}).content == b"en"
    assert h.get(URL, headers={"Accept-Language": "fr"}).content == b"fr"
    en = h.get(URL, headers={"Accept-Language": "en"})
    fr = h.get(URL, headers={"Accept-Language": "fr"})
    assert (en.content, fr.content) == (b"en", b"fr")
    assert report(en)["cache"] == report(fr)["cache"] == "hit"
    assert h.get(URL).content == b"none"
    assert len(h.calls) == 3


def test_vary_star_is_never_stored(mode: str) -> None:
    h = Harness(mode, respond(vary="*"))
    h.get(URL)
    h.get(URL)
    assert len(h.calls) == 2


@pytest.mark.parametrize("field", ["Authorization", "Cookie"])
def test_a_different_credential_never_gets_another_users_response(mode: str, field: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=request.headers.get(field, "anonymous").encode())

    h = Harness(mode, handler)
    assert h.get(URL, headers={field: "alice"}).content == b"alice"
    assert h.get(URL, headers={field: "bob"}).content == b"bob"
    assert h.get(URL).content == b"anonymous"
    alice = h.get(URL, headers={field: "alice"})
    assert alice.content == b"alice" and report(alice)["cache"] == "hit"
    assert h.get(URL).content == b"anonymous"
    assert len(h.calls) == 3


def test_a_response_to_an_anonymous_request_is_not_served_to_a_credentialed_one(
    mode: str,
) -> None:
    h = Harness(mode, respond())
    h.get(URL)
    h.get(URL, headers={"Authorization": "Bearer t"})
    assert len(h.calls) == 2


# -- freshness -------------------------------------------------------------------------
def test_max_age_decides_freshness(mode: str) -> None:
    h = Harness(mode, respond(cache_control="max-age=10"))
    h.get(URL)
    h.clock.advance(9)
    assert report(h.get(URL))["cache"] == "hit"
    h.clock.advance(2)
    assert report(h.get(URL))["cache"] == "miss"
    assert len(h.calls) == 2


def test_ttl_applies_when_the_server_states_no_freshness(mode: str) -> None:
    h = Harness(mode, respond(), CachePolicy(ttl=5))
    h.get(URL)
    h.clock.advance(4)
    assert report(h.get(URL))["cache"] == "hit"
    h.clock.advance(2)
    assert report(h.get(URL))["cache"] == "miss"


def test_respect_cache_control_false_forces_ttl(mode: str) -> None:
    h = Harness(
        mode,
        respond(cache_control="max-age=1000"),
        CachePolicy(ttl=5, respect_cache_control=False),
    )
    h.get(URL)
    h.clock.advance(6)
    assert report(h.get(URL))["cache"] == "miss"


# -- request directives ----------------------------------------------------------------
def _etag_handler(body: bytes = b"v1", etag: str = '"v1"', max_age: int = 10):
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"ETag": etag, "Cache-Control": f"max-age={max_age}", "X-Version": "2"}
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers=headers)
        return httpx.Response(200, headers={**headers, "X-Version": "1"}, content=body)

    return handler


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0"])
def test_request_no_cache_and_max_age_0_revalidate(mode: str, directive: str) -> None:
    h = Harness(mode, _etag_handler())
    h.get(URL)
    again = h.get(URL, headers={"Cache-Control": directive})
    assert report(again)["cache"] == "revalidated" and again.content == b"v1"
    assert h.calls[-1].headers["if-none-match"] == '"v1"'


def test_pragma_no_cache_revalidates(mode: str) -> None:
    h = Harness(mode, _etag_handler())
    h.get(URL)
    assert report(h.get(URL, headers={"Pragma": "no-cache"}))["cache"] == "revalidated"


def test_only_if_cached_answers_504_on_a_miss(mode: str) -> None:
    h = Harness(mode, respond())
    miss = h.get(URL, headers={"Cache-Control": "only-if-cached"})
    assert miss.status_code == 504 and miss.request.url == URL and not h.calls
    h.get(URL)
    hit = h.get(URL, headers={"Cache-Control": "only-if-cached"})
    assert hit.status_code == 200 and report(hit)["cache"] == "hit"


def test_a_conditional_request_of_the_user_goes_to_the_origin(mode: str) -> None:
    h = Harness(mode, _etag_handler())
    h.get(URL)
    mine = h.get(URL, headers={"If-None-Match": '"v1"'})
    assert mine.status_code == 304 and len(h.calls) == 2


# -- revalidation ----------------------------------------------------------------------
def test_stale_entries_are_revalidated_with_if_none_match_and_refreshed_by_304(
    mode: str,
) -> None:
    h = Harness(mode, _etag_handler())
    first = h.get(URL)
    assert first.headers["x-version"] == "1"
    h.clock.advance(11)
    again = h.get(URL)
    assert h.calls[-1].headers["if-none-match"] == '"v1"'
    assert "if-none-match" not in again.request.headers  # the caller's request, unchanged
    assert report(again)["cache"] == "revalidated" and report(again)["attempts"] == 1
    assert again.content == b"v1" and again.headers["x-version"] == "2"
    assert again.headers["content-length"] == "2"
    # The 304 refreshed the freshness too: a fresh hit follows.
    h.clock.advance(5)
    assert report(h.get(URL))["cache"] == "hit" and len(h.calls) == 2


def test_last_modified_is_revalidated_with_if_modified_since(mode: str) -> None:
    stamp = "Tue, 14 Nov 2023 22:13:20 GMT"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-modified-since") == stamp:
            return httpx.Response(304)
        return httpx.Response(
            200, headers={"Last-Modified": stamp, "Cache-Control": "max-age=1"}, content=b"x"
        )

    h = Harness(mode, handler)
    h.get(URL)
    h.clock.advance(2)
    assert report(h.get(URL))["cache"] == "revalidated"


def test_a_full_response_to_a_revalidation_replaces_the_entry(mode: str) -> None:
    versions = iter([b"one", b"two"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"ETag": '"x"', "Cache-Control": "max-age=1"}, content=next(versions)
        )

    h = Harness(mode, handler)
    h.get(URL)
    h.clock.advance(2)
    fresh = h.get(URL)
    assert fresh.content == b"two" and report(fresh)["cache"] == "miss"
    assert h.get(URL).content == b"two"


def test_a_304_for_another_etag_falls_back_to_a_plain_request(mode: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "if-none-match" in request.headers:
            return httpx.Response(304, headers={"ETag": '"other"'})
        return httpx.Response(
            200, headers={"ETag": '"v1"', "Cache-Control": "max-age=1"}, content=b"body"
        )

    h = Harness(mode, handler)
    h.get(URL)
    h.clock.advance(2)
    again = h.get(URL)
    assert again.status_code == 200 and again.content == b"body"
    assert "if-none-match" not in h.calls[-1].headers and len(h.calls) == 3


# -- stale-if-error ----------------------------------------------------------------------
def _failing_after_first(failure: Exception | int):
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, headers={"Cache-Control": "max-age=10"}, content=b"old")
        if isinstance(failure, int):
            return httpx.Response(failure, content=b"upstream broke")
        raise failure

    return handler


ERRORS = [
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"),
    CircuitOpenError("open", host="api.test", retry_after=3.0),
    RateLimitExceeded("limited", host="api.test", retry_after=1.0),
]


@pytest.mark.parametrize("failure", [*ERRORS, 500, 502, 503, 504], ids=repr)
def test_stale_if_error_serves_the_stale_entry_within_the_window(
    mode: str, failure: Exception | int
) -> None:
    h = Harness(mode, _failing_after_first(failure), CachePolicy(stale_if_error=60))
    h.get(URL)
    h.clock.advance(30)  # stale for 20 s
    stale = h.get(URL)
    assert stale.content == b"old" and stale.status_code == 200
    assert report(stale)["cache"] == "stale" and report(stale)["attempts"] == 0
    assert h.events.kinds()[-1] == "stale"


@pytest.mark.parametrize("failure", [ERRORS[0], 503], ids=repr)
def test_past_the_window_the_failure_goes_to_the_caller(
    mode: str, failure: Exception | int
) -> None:
    h = Harness(mode, _failing_after_first(failure), CachePolicy(stale_if_error=60))
    h.get(URL)
    h.clock.advance(71)
    if isinstance(failure, int):
        assert h.get(URL).status_code == failure
    else:
        with pytest.raises(type(failure)):
            h.get(URL)


def test_without_stale_if_error_the_error_is_raised(mode: str) -> None:
    h = Harness(mode, _failing_after_first(httpx.ConnectError("down")))
    h.get(URL)
    h.clock.advance(11)
    with pytest.raises(httpx.ConnectError):
        h.get(URL)


def test_the_responses_stale_if_error_directive_counts(mode: str) -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] > 1:
            raise httpx.ConnectError("down")
        return httpx.Response(
            200, headers={"Cache-Control": "max-age=1, stale-if-error=100"}, content=b"old"
        )

    h = Harness(mode, handler)  # the policy's stale_if_error is 0
    h.get(URL)
    h.clock.advance(50)
    assert report(h.get(URL))["cache"] == "stale"


def test_must_revalidate_forbids_stale_if_error(mode: str) -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] > 1:
            raise httpx.ConnectError("down")
        return httpx.Response(
            200, headers={"Cache-Control": "max-age=1, must-revalidate"}, content=b"old"
        )

    h = Harness(mode, handler, CachePolicy(stale_if_error=100))
    h.get(URL)
    h.clock.advance(5)
    with pytest.raises(httpx.ConnectError):
        h.get(URL)


# -- size bounds -------------------------------------------------------------------------
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_body_larger_than_max_entry_bytes_is_not_stored(mode: str, length: bool) -> None:
    h = Harness(mode, streamed(5000, length=length), CachePolicy(max_entry_bytes=4000))
    assert len(h.get(URL).content) == 5000
    assert report(h.get(URL))["cache"] == "miss" and len(h.calls) == 2


def test_a_streamed_body_within_the_limit_is_stored_once_fully_read(mode: str) -> None:
    h = Harness(mode, streamed(3000), CachePolicy(max_entry_bytes=4000))
    assert h.stream_read(URL) == 3000
    hit = h.get(URL)
    assert report(hit)["cache"] == "hit" and hit.content == b"x" * 3000


def test_a_body_the_caller_did_not_finish_is_not_stored(mode: str) -> None:
    h = Harness(mode, streamed(3000), CachePolicy(max_entry_bytes=4000))
    # Async modes close without reading: breaking out of httpx's own async body
    # iterator half-way leaves it to the garbage collector, which trio warns about.
    chunks = 1 if mode == "sync" else 0
    assert h.stream_read(URL, chunks=chunks) == 1000 * chunks
    assert report(h.get(URL))["cache"] == "miss"


def test_whole_cache_bounds_evict_and_report(mode: str) -> None:
    h = Harness(mode, respond(), CachePolicy(max_entries=2))
    for i in range(4):
        h.get(f"http://api.test/{i}")
    assert h.events.evicted == 2 and h.events.sizes[-1][0] == 2
    assert report(h.get("http://api.test/0"))["cache"] == "miss"


# -- invalidation -------------------------------------------------------------------------
def _write_handler(status: int, **headers: str):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, content=b"g")
        fields = {k.replace("_", "-"): v for k, v in headers.items()}
        return httpx.Response(status, headers=fields)

    return handler


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unsafe_methods_with_success_invalidate_the_target(mode: str, method: str) -> None:
    h = Harness(mode, _write_handler(201))
    h.get(URL)
    h.request("HEAD", URL)
    written = h.request(method, URL)
    assert report(written)["cache"] is None
    assert report(h.get(URL))["cache"] == "miss"
    assert report(h.request("HEAD", URL))["cache"] == "miss"


def test_failed_unsafe_requests_invalidate_nothing(mode: str) -> None:
    h = Harness(mode, _write_handler(409))
    h.get(URL)
    h.request("POST", URL)
    assert report(h.get(URL))["cache"] == "hit"


def test_same_origin_location_is_invalidated_too(mode: str) -> None:
    h = Harness(mode, _write_handler(201, location="/other", content_location="http://elsewhere/x"))
    h.get("http://api.test/other")
    h.get("http://elsewhere/x")
    h.request("POST", "http://api.test/collection")
    assert report(h.get("http://api.test/other"))["cache"] == "miss"
    assert report(h.get("http://elsewhere/x"))["cache"] == "hit"


def test_invalidation_reaches_credentialed_and_varied_entries(mode: str) -> None:
    h = Harness(mode, _write_handler(204))
    h.get(URL, headers={"Authorization": "alice"})
    h.request("POST", URL, headers={"Authorization": "bob"})
    assert report(h.get(URL, headers={"Authorization": "alice"}))["cache"] == "miss"


# -- per-request and per-host control ----------------------------------------------------
def test_bypass_neither_serves_nor_stores(mode: str) -> None:
    h = Harness(mode, respond())
    h.get(URL)
    bypass = {"klayengo": {"cache": False}}
    skipped = h.get(URL, extensions=bypass)
    assert report(skipped)["cache"] == "bypass" and len(h.calls) == 2
    assert h.events.kinds()[-1] == "bypass"
    h.get("http://api.test/new", extensions=bypass)
    assert report(h.get("http://api.test/new"))["cache"] == "miss"


def test_a_per_request_policy_applies_to_that_request(mode: str) -> None:
    h = Harness(mode, respond())
    h.get(URL, extensions={"klayengo": {"cache": CachePolicy(ttl=1)}})
    h.clock.advance(2)
    assert report(h.get(URL))["cache"] == "miss"


def test_a_host_without_cache_passes_through(mode: str) -> None:
    h = Harness(mode, respond(), hosts={"nocache.test": HostPolicy(cache=None)})
    h.get("http://nocache.test/")
    plain = h.get("http://nocache.test/")
    assert report(plain)["cache"] is None and len(h.calls) == 2


def test_methods_outside_the_policy_pass_through(mode: str) -> None:
    h = Harness(mode, respond())
    assert report(h.request("OPTIONS", URL))["cache"] is None


# -- logging ---------------------------------------------------------------------------
def test_debug_logs_name_the_host_never_the_query(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(mode, respond())
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        h.get("http://user:pw@api.test/secret/path?token=s3cr3t")
        h.get("http://user:pw@api.test/secret/path?token=s3cr3t")
        h.request("POST", "http://user:pw@api.test/secret/path?token=s3cr3t")
    assert "api.test" in caplog.text
    for leak in ("s3cr3t", "secret/path", "pw"):
        assert leak not in caplog.text
    assert all(record.levelno == logging.DEBUG for record in caplog.records)


# -- through the client ------------------------------------------------------------------
def test_resilient_client_serves_hits_with_no_attempt() -> None:
    handler = respond(cache_control="max-age=60")
    calls: list[httpx.Request] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return handler(request)

    with klayengo.ResilientClient(
        cache=CachePolicy(), transport=httpx.MockTransport(counting), metrics=False
    ) as client:
        client.get(URL)
        hit = client.get(URL)
    assert report(hit)["cache"] == "hit" and report(hit)["attempts"] == 0 and len(calls) == 1
    assert len(client._klayengo.peek("cache.store").store) == 0  # closing freed it


@pytest.mark.anyio
async def test_async_resilient_client_serves_hits_with_no_attempt() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=b"x")

    async with klayengo.AsyncResilientClient(
        cache=CachePolicy(), transport=httpx.MockTransport(handler), metrics=False
    ) as client:
        await client.get(URL)
        hit = await client.get(URL)
    assert report(hit)["cache"] == "hit" and len(calls) == 1


def test_standalone_transport_defaults_to_the_default_policy() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=klayengo.CacheTransport(httpx.MockTransport(handler))) as client:
        client.get(URL)
        client.get(URL)
    assert len(calls) == 1


# -- hostile servers -----------------------------------------------------------------------
_hostile = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [b"*", b"max-age=-1", b"max-age=1e9", b'W/"\xe9"', b"0", b"accept, \xff", b"a\x00b"]
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cache_control=_hostile,
    expires=_hostile,
    vary=_hostile,
    etag=_hostile,
    last_modified=_hostile,
    age=_hostile,
    date=_hostile,
)
def test_malformed_response_headers_never_break_a_request(
    cache_control: bytes,
    expires: bytes,
    vary: bytes,
    etag: bytes,
    last_modified: bytes,
    age: bytes,
    date: bytes,
) -> None:
    headers = [
        (b"Cache-Control", cache_control),
        (b"Expires", expires),
        (b"Vary", vary),
        (b"ETag", etag),
        (b"Last-Modified", last_modified),
        (b"Age", age),
        (b"Date", date),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=b"body")

    h = Harness("sync", handler, CachePolicy(stale_if_error=10))
    for advance in (0, 5, 100):
        h.clock.advance(advance)
        response = h.get(URL, headers={"Accept": "x"})
        assert response.status_code == 200 and response.content == b"body"
        assert report(response)["cache"] in ("hit", "miss", "revalidated")
    h.request("POST", URL)
