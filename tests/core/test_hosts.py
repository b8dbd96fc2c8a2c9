"""Host keys and host-pattern resolution."""

from __future__ import annotations

import httpx
import pytest

from klayengo import CachePolicy, CircuitBreakerPolicy, HostPolicy, RateLimitPolicy, RetryPolicy
from klayengo._core.hosts import PolicyResolver, host_key, origin


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://Example.COM/path?q=1#frag", "example.com"),
        ("https://example.com:443/", "example.com"),
        ("http://example.com:443/", "example.com:443"),
        ("https://user:secret@api.example.com:8443/x?token=abc", "api.example.com:8443"),
        ("https://bücher.de/", "xn--bcher-kva.de"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://127.0.0.1:80/", "127.0.0.1"),
    ],
)
def test_host_key(url: str, key: str) -> None:
    assert host_key(httpx.URL(url)) == key


def test_origin_fills_in_default_ports() -> None:
    assert origin(httpx.URL("https://a.example/")) == ("https", "a.example", 443)
    assert origin(httpx.URL("http://a.example:8080/")) == ("http", "a.example", 8080)


STRICT = CircuitBreakerPolicy(minimum_calls=5)
LOOSE = CircuitBreakerPolicy(minimum_calls=100)
PORT = CircuitBreakerPolicy(minimum_calls=7)
DEEP = CircuitBreakerPolicy(minimum_calls=9)


def resolver() -> PolicyResolver:
    return PolicyResolver(
        retry=RetryPolicy(),
        breaker=CircuitBreakerPolicy(),
        hosts={
            "api.example.com": HostPolicy(breaker=STRICT),
            "api.example.com:8443": HostPolicy(breaker=PORT),
            "*.example.com": HostPolicy(breaker=LOOSE, retry=None),
            "*.deep.example.com": HostPolicy(breaker=DEEP),
            "Bücher.DE": HostPolicy(rate_limit=RateLimitPolicy(rate=1)),
        },
    )


@pytest.mark.parametrize(
    ("url", "breaker"),
    [
        ("https://api.example.com/", STRICT),
        ("https://api.example.com:8443/", PORT),
        ("http://api.example.com:8443/", PORT),
        ("https://x.example.com/", LOOSE),
        ("https://a.deep.example.com/", DEEP),
        ("https://deep.example.com/", LOOSE),  # *.example.com matches deep.example.com
        ("https://example.com/", CircuitBreakerPolicy()),  # *.suffix is not the bare suffix
        ("https://notexample.com/", CircuitBreakerPolicy()),
    ],
)
def test_most_specific_pattern_wins(url: str, breaker: CircuitBreakerPolicy) -> None:
    assert resolver().resolve(httpx.URL(url)).breaker == breaker


def test_unset_inherits_and_none_disables() -> None:
    r = resolver()
    sub = r.resolve(httpx.URL("https://x.example.com/"))
    assert sub.retry is None  # disabled by the pattern
    api = r.resolve(httpx.URL("https://api.example.com/"))
    assert api.retry == RetryPolicy()  # unset: inherited
    idna = r.resolve(httpx.URL("https://xn--bcher-kva.de/"))
    assert idna.rate_limit == RateLimitPolicy(rate=1)
    assert idna.cache is None


def test_any_layer() -> None:
    r = resolver()
    assert r.any("rate_limit") and r.any("breaker") and not r.any("cache")
    assert PolicyResolver(hosts={"a": HostPolicy(cache=CachePolicy())}).any("cache")
    assert not PolicyResolver(hosts={"a": HostPolicy(cache=None)}).any("cache")


def test_resolution_memo_is_bounded() -> None:
    r = resolver()
    for i in range(10_000):
        r.resolve(httpx.URL(f"https://h{i}.example.com/"))
    assert len(r._memo) <= 4096


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        " api.example.com",
        "https://api.example.com",
        "api.example.com/path",
        "api.*.com",
        "*example.com",
        "*.",
        "*.a:80",
        "a:b",
        "a:0",
        "a:70000",
        "a:1:2",
        "user@host",
        "[::1",
        "[nothost]:80",
        "bad_label-.com",
        "a..b",
    ],
)
def test_unknown_pattern_syntax_is_rejected(pattern: str) -> None:
    with pytest.raises(ValueError, match="host pattern"):
        PolicyResolver(hosts={pattern: HostPolicy()})


def test_pattern_types() -> None:
    with pytest.raises(TypeError, match="pattern"):
        PolicyResolver(hosts={1: HostPolicy()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="HostPolicy"):
        PolicyResolver(hosts={"a": RetryPolicy()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mapping"):
        PolicyResolver(hosts=["a"])  # type: ignore[arg-type]


def test_ipv6_patterns() -> None:
    r = PolicyResolver(
        breaker=CircuitBreakerPolicy(),
        hosts={"[::1]:8080": HostPolicy(breaker=None), "[::1]": HostPolicy(breaker=STRICT)},
    )
    assert r.resolve(httpx.URL("http://[::1]:8080/")).breaker is None
    assert r.resolve(httpx.URL("http://[::1]:9090/")).breaker == STRICT


def test_host_names_are_memoized_correctly_and_bounded() -> None:
    from klayengo._core import hosts

    urls = [httpx.URL(f"https://h{i % 7}.Example:{8000 + i % 3}/p?q={i}") for i in range(50)]
    # Same answers however the calls interleave (the one-URL slot and the memo).
    for url in urls + urls[::-1]:
        assert host_key(url) == f"{url.host}:{url.port}"
        assert origin(url) == ("https", url.host, url.port)
    default = httpx.URL("http://api.example:80/")
    assert (host_key(default), origin(default)) == ("api.example", ("http", "api.example", 80))
    for i in range(hosts.HOST_MEMO_SIZE + 10):
        host_key(httpx.URL(f"http://churn-{i}.example/"))
    assert len(hosts._memo) <= hosts.HOST_MEMO_SIZE
    assert host_key(urls[0]) == "h0.example:8000"
