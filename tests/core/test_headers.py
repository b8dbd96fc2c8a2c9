"""The tolerant header parsers never raise."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klayengo._core import headers as headers_module
from klayengo._core.cache import parse_cache_control, response_fields, vary_names
from klayengo._core.headers import (
    fields,
    parse_delta_seconds,
    parse_http_date,
    parse_retry_after,
)

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


def test_retry_after_forms() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", NOW) == 10.0
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", NOW) == 10.0
    assert parse_retry_after("Sun Nov  6 08:49:47 1994", NOW) == 10.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", NOW) == 0.0  # in the past
    assert parse_retry_after("99999999999999999999", NOW) == 2.0**31


def test_malformed_retry_after_is_absent() -> None:
    for value in [None, "", "-1", "1.5", "soon", "Sun, 99 Nov 1994", "١٢", "0x10", "\x00"]:
        assert parse_retry_after(value, NOW) is None


@given(st.text())
def test_parsers_never_raise(value: str) -> None:
    parse_delta_seconds(value)
    parse_http_date(value)
    parse_retry_after(value, NOW)


@given(st.integers(min_value=0, max_value=2**40))
def test_delta_seconds_roundtrip(n: int) -> None:
    assert parse_delta_seconds(str(n)) == min(n, 2**31)


_NAMES = st.sampled_from(
    ["Cache-Control", "cache-control", "VARY", "Vary", "Content-Length", "X-Other", "Date"]
)
_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
).map(str.strip)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_fields_read_in_place_match_the_public_view(items: list[tuple[str, str]]) -> None:
    """The in-place read of httpx's field list (when this httpx keeps one) gives what
    the public ``.raw`` does, and ``response_fields`` agrees with the slower lookups."""
    headers = httpx.Headers([(name, value.encode("latin-1")) for name, value in items])
    expected = [(name, name.lower(), value) for name, value in headers.raw]
    assert list(fields(headers)) == expected
    assert list(headers_module._fields_copied(headers)) == expected
    directives, vary, length = response_fields(headers)
    assert directives == parse_cache_control(
        [v.decode("latin-1") for _, n, v in expected if n == b"cache-control"]
    )
    if all(value.isascii() for _, value in items):
        assert directives == parse_cache_control(headers.get_list("cache-control"))
        assert vary == vary_names(headers.get_list("vary"))
        lengths = headers.get_list("content-length")
        assert length == (lengths[0] if lengths else None)


def test_this_httpx_takes_the_in_place_read() -> None:
    # httpx 0.28 and httpx2 keep (raw, lower, value) triples: the fast path is in use.
    headers = httpx.Headers({"A": "b"})
    assert fields(headers) is headers._list


def test_a_headers_type_without_the_triples_is_read_through_raw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Plain(httpx.Headers):
        pass

    # As the probe finds for a Headers type that keeps its fields some other way.
    monkeypatch.setitem(headers_module._KEEPS_FIELDS, Plain, False)
    headers = Plain({"X-One": "1"})
    found = fields(headers)
    assert found is not headers._list
    assert list(found) == [(b"X-One", b"x-one", b"1")]
