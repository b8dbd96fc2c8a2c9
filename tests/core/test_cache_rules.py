"""RFC 9111 rules of klayengo._core.cache: pure functions, fake times."""

from __future__ import annotations

import math

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayengo import CachePolicy
from klayengo._core.cache import (
    EMPTY_DIRECTIVES,
    PLAIN_REQUEST,
    CacheControl,
    KeyMaker,
    conditional_headers,
    entry_usable,
    freshen,
    invalidates,
    make_entry,
    parse_cache_control,
    request_facts,
    response_fields,
    stale_if_error_ok,
    stale_while_revalidate_ok,
    validator_matches,
    vary_names,
    why_not_storable,
)
from klayengo._core.headers import MAX_DELTA_SECONDS

WALL = 1_700_000_000.0
NOW = 1000.0
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # == WALL
POLICY = CachePolicy(ttl=60)


def entry(headers: dict[str, str] | list[tuple[str, str]], policy: CachePolicy = POLICY, **kw):
    args = {
        "key": "GET http://a/",
        "host": "a",
        "status": 200,
        "headers": httpx.Headers(headers),
        "body": b"body",
        "stream": httpx.ByteStream(b"body"),
        "extensions": {"http_version": b"HTTP/1.1", "network_stream": object()},
        "vary": (),
        "request_wall": WALL,
        "response_wall": WALL,
        "now": NOW,
        "policy": policy,
    }
    args.update(kw)
    return make_entry(**args)


# -- Cache-Control parsing -------------------------------------------------------------
def test_parse_directives_case_insensitively_with_quoted_arguments() -> None:
    cc = parse_cache_control(['Max-Age="30", NO-CACHE', "private, must-revalidate"])
    assert cc.max_age == 30 and cc.no_cache and cc.private and cc.must_revalidate


def test_first_occurrence_of_a_directive_wins() -> None:
    assert parse_cache_control(["max-age=10, max-age=99"]).max_age == 10


def test_malformed_max_age_is_stale_and_other_malformed_arguments_are_ignored() -> None:
    cc = parse_cache_control(["max-age=abc, stale-if-error=-1, min-fresh=1.5"])
    assert cc.max_age == 0
    assert cc.stale_if_error is None and cc.min_fresh is None


def test_max_stale_without_argument_accepts_any_staleness() -> None:
    assert parse_cache_control(["max-stale"]).max_stale == MAX_DELTA_SECONDS
    assert parse_cache_control(["max-stale=5"]).max_stale == 5


def test_commas_inside_quotes_do_not_split() -> None:
    cc = parse_cache_control(['no-cache="set-cookie, x-foo", max-age=5'])
    assert cc.no_cache and cc.max_age == 5


def test_empty_and_unknown_directives_give_the_empty_result() -> None:
    assert parse_cache_control(["", " , ,", "foo=bar"]) is EMPTY_DIRECTIVES


def test_huge_delta_is_capped() -> None:
    assert parse_cache_control(["max-age=99999999999999999999"]).max_age == MAX_DELTA_SECONDS


@given(st.lists(st.text(max_size=80), max_size=4))
def test_parse_cache_control_never_raises(values: list[str]) -> None:
    cc = parse_cache_control(values)
    assert isinstance(cc, CacheControl)
    for name in ("max_age", "s_maxage", "max_stale", "min_fresh", "stale_if_error"):
        value = getattr(cc, name)
        assert value is None or 0 <= value <= MAX_DELTA_SECONDS


_header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.sampled_from(["0", "-1", DATE, "Thu, 01 Jan 1970 00:00:00 GMT", "garbage", "max-age=5"]),
)


@settings(max_examples=200, deadline=None)
@given(
    cache_control=_header_values,
    expires=_header_values,
    date=_header_values,
    age=_header_values,
    last_modified=_header_values,
    respect=st.booleans(),
)
def test_malformed_freshness_headers_never_raise_and_give_finite_deadlines(
    cache_control: str, expires: str, date: str, age: str, last_modified: str, respect: bool
) -> None:
    headers = {
        "Cache-Control": cache_control,
        "Expires": expires,
        "Date": date,
        "Age": age,
        "Last-Modified": last_modified,
    }
    e = entry(headers, CachePolicy(respect_cache_control=respect, stale_if_error=5))
    for value in (e.fresh_until, e.keep_until, e.stale_if_error_until, e.initial_age):
        assert math.isfinite(value)
    assert e.keep_until >= e.fresh_until
    conditional_headers(e)  # tolerates a malformed Last-Modified


# -- freshness -------------------------------------------------------------------------
def test_max_age_beats_expires() -> None:
    e = entry({"Cache-Control": "max-age=10", "Expires": "Wed, 15 Nov 2023 22:13:20 GMT"})
    assert e.lifetime == 10 and e.fresh_until == NOW + 10


def test_expires_minus_date() -> None:
    e = entry({"Date": DATE, "Expires": "Tue, 14 Nov 2023 22:14:00 GMT"})
    assert e.lifetime == 40


def test_invalid_expires_means_already_expired() -> None:
    assert entry({"Expires": "0"}).lifetime == 0


def test_s_maxage_is_ignored_by_a_private_cache() -> None:
    assert entry({"Cache-Control": "s-maxage=5"}).lifetime == POLICY.ttl
    assert entry({"Cache-Control": "s-maxage=5, max-age=20"}).lifetime == 20


def test_no_explicit_freshness_uses_ttl() -> None:
    assert entry({}).lifetime == 60


def test_respect_cache_control_false_forces_ttl() -> None:
    policy = CachePolicy(ttl=7, respect_cache_control=False)
    e = entry({"Cache-Control": "max-age=1000, no-cache", "Age": "50"}, policy)
    assert e.lifetime == 7 and e.fresh_until == NOW + 7 and not e.no_cache


def test_age_header_and_response_delay_count_in_the_initial_age() -> None:
    e = entry({"Cache-Control": "max-age=100", "Age": "30"}, request_wall=WALL - 2)
    assert e.initial_age == 32 and e.fresh_until == NOW + 68


def test_apparent_age_from_date() -> None:
    e = entry({"Cache-Control": "max-age=100", "Date": DATE}, response_wall=WALL + 40)
    assert e.initial_age == 40


def test_stale_windows_from_policy_and_directives() -> None:
    e = entry(
        {"Cache-Control": "max-age=10, stale-if-error=100, stale-while-revalidate=20"},
        CachePolicy(stale_if_error=50),
    )
    assert e.stale_if_error_until == NOW + 110
    assert e.stale_while_revalidate_until == NOW + 30
    assert e.keep_until == NOW + 110
    assert stale_if_error_ok(e, NOW + 109) and not stale_if_error_ok(e, NOW + 110)
    assert stale_while_revalidate_ok(e, NOW + 29) and not stale_while_revalidate_ok(e, NOW + 31)


@pytest.mark.parametrize("directive", ["must-revalidate", "no-cache", "proxy-revalidate"])
def test_must_revalidate_and_no_cache_forbid_stale_use(directive: str) -> None:
    e = entry({"Cache-Control": f"max-age=10, stale-if-error=100, {directive}"})
    assert not stale_if_error_ok(e, NOW + 11)
    assert not stale_while_revalidate_ok(e, NOW + 11)


def test_validators_keep_an_entry_for_revalidation() -> None:
    e = entry({"Cache-Control": "max-age=10", "ETag": '"x"'})
    assert e.keep_until > e.fresh_until
    assert entry({"Cache-Control": "max-age=10"}).keep_until == e.fresh_until


def test_only_http_version_and_reason_are_kept_from_extensions() -> None:
    assert set(entry({}).extensions) == {"http_version"}


# -- storability -------------------------------------------------------------------------
def _why(
    status: int = 200,
    req: dict[str, str] | None = None,
    resp: dict[str, str] | None = None,
    method: str = "GET",
):
    request = request_facts(httpx.Headers(req or {}))
    headers = httpx.Headers(resp or {})
    directives, vary, _ = response_fields(headers)
    assert directives == parse_cache_control(headers.get_list("cache-control"))
    assert vary == vary_names(headers.get_list("vary"))
    return why_not_storable(method, status, request, directives, vary, POLICY)


def test_storable_basics() -> None:
    assert _why() is None
    assert _why(resp={"Cache-Control": "private"}) is None
    assert _why(req={"Authorization": "Bearer x"}) is None
    assert _why(method="POST") == "method"
    assert _why(status=500) == "status"
    assert _why(status=206) == "status"


def test_no_store_in_request_or_response_is_never_stored() -> None:
    assert _why(resp={"Cache-Control": "No-Store"}) == "no-store"
    assert _why(req={"Cache-Control": "no-store"}) == "no-store"
    forced = CachePolicy(respect_cache_control=False)
    assert (
        why_not_storable("GET", 200, PLAIN_REQUEST, parse_cache_control(["no-store"]), (), forced)
        == "no-store"
    )


def test_vary_star_is_never_stored() -> None:
    assert _why(resp={"Vary": "Accept, *"}) == "vary-star"
    assert vary_names(["Accept, accept-Encoding", "X"]) == (
        "accept",
        "accept-encoding",
        "x",
    )


# -- request directives ---------------------------------------------------------------
def test_request_facts() -> None:
    facts = request_facts(httpx.Headers({"Cache-Control": "max-age=0", "Cookie": "a=1"}))
    assert facts.directives.max_age == 0 and facts.credentials == ("cookie:a=1",)
    assert request_facts(httpx.Headers({"Pragma": "no-cache"})).directives.no_cache
    assert request_facts(httpx.Headers({"If-None-Match": '"x"'})).pass_through
    assert request_facts(httpx.Headers({"Accept": "*/*"})) is PLAIN_REQUEST


def test_entry_usable_honours_request_directives() -> None:
    e = entry({"Cache-Control": "max-age=100"})
    cc = parse_cache_control
    assert entry_usable(e, NOW + 50, EMPTY_DIRECTIVES)
    assert not entry_usable(e, NOW + 100, EMPTY_DIRECTIVES)
    assert not entry_usable(e, NOW, cc(["no-cache"]))
    assert not entry_usable(e, NOW + 1, cc(["max-age=0"]))
    assert entry_usable(e, NOW + 1, cc(["max-age=5"]))
    assert not entry_usable(e, NOW + 95, cc(["min-fresh=10"]))
    assert entry_usable(e, NOW + 150, cc(["max-stale=60"]))
    assert not entry_usable(e, NOW + 170, cc(["max-stale=60"]))
    strict = entry({"Cache-Control": "max-age=100, must-revalidate"})
    assert not entry_usable(strict, NOW + 150, cc(["max-stale"]))
    assert not entry_usable(entry({"Cache-Control": "no-cache"}), NOW, EMPTY_DIRECTIVES)


# -- revalidation -----------------------------------------------------------------------
def test_conditional_headers() -> None:
    e = entry({"ETag": 'W/"v1"', "Last-Modified": DATE})
    assert conditional_headers(e) == [("If-None-Match", 'W/"v1"'), ("If-Modified-Since", DATE)]
    assert conditional_headers(entry({"Last-Modified": "nonsense"})) == []


def test_freshen_replaces_fields_but_not_framing_or_coding() -> None:
    e = entry(
        [
            ("Content-Length", "4"),
            ("Content-Encoding", "gzip"),
            ("Cache-Control", "max-age=1"),
            ("X-Old", "1"),
            ("X-Old", "2"),
            ("ETag", '"v1"'),
        ]
    )
    not_modified = httpx.Headers(
        [
            ("Cache-Control", "max-age=50"),
            ("Content-Length", "0"),
            ("Content-Encoding", "br"),
            ("X-Old", "3"),
            ("X-New", "n"),
            ("Connection", "close"),
        ]
    )
    new = freshen(
        e,
        not_modified,
        request_wall=WALL + 10,
        response_wall=WALL + 10,
        now=NOW + 10,
        policy=POLICY,
    )
    assert new.headers.get_list("x-old") == ["3"]
    assert new.headers["x-new"] == "n"
    assert new.headers["content-length"] == "4"
    assert new.headers["content-encoding"] == "gzip"
    assert "connection" not in new.headers
    assert new.body == b"body" and new.fresh_until == NOW + 60


def test_validator_matching_uses_weak_comparison() -> None:
    e = entry({"ETag": 'W/"v1"'})
    assert validator_matches(e, httpx.Headers({"ETag": '"v1"'}))
    assert validator_matches(e, httpx.Headers({}))
    assert not validator_matches(e, httpx.Headers({"ETag": '"v2"'}))
    assert not validator_matches(entry({}), httpx.Headers({"ETag": '"v2"'}))


# -- keys and invalidation ---------------------------------------------------------------
def test_keys_separate_credentials_and_vary_values_and_depend_on_the_salt() -> None:
    keys = KeyMaker(b"s" * 16)
    primary = keys.primary("GET", httpx.URL("http://a/x?q=1#frag"))
    assert primary == "GET http://a/x?q=1"
    h1 = httpx.Headers({"Accept": "a"})
    h2 = httpx.Headers({"Accept": "b"})
    k1 = keys.secondary(primary, ("authorization:A",), ("accept",), h1)
    assert k1 == keys.secondary(primary, ("authorization:A",), ("accept",), h1)
    assert k1 != keys.secondary(primary, ("authorization:B",), ("accept",), h1)
    assert k1 != keys.secondary(primary, ("authorization:A",), ("accept",), h2)
    assert k1 != KeyMaker(b"t" * 16).secondary(primary, ("authorization:A",), ("accept",), h1)
    assert "A" not in k1.split("\n")[1]


def test_unsafe_methods_invalidate_on_success_and_redirect() -> None:
    assert invalidates("POST", 201) and invalidates("DELETE", 302)
    assert not invalidates("POST", 404) and not invalidates("GET", 200)


def test_the_current_requests_stale_if_error_counts() -> None:
    e = entry({"Cache-Control": "max-age=10"})
    assert not stale_if_error_ok(e, NOW + 30)
    assert stale_if_error_ok(e, NOW + 30, parse_cache_control(["stale-if-error=60"]))
    assert not stale_if_error_ok(e, NOW + 80, parse_cache_control(["stale-if-error=60"]))
