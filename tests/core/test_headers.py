"""The tolerant header parsers never raise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from klayengo._core.headers import parse_delta_seconds, parse_http_date, parse_retry_after

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
