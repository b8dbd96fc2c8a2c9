"""The clients' cookie jar: httpx's behaviour, without httpx's cost on cookie-less responses.

``ResilientClient.cookies`` is a ``ResponseCookies`` (an ``httpx.Cookies``) that skips
building httpx's urllib-compatible request/response wrappers when a response has no
``Set-Cookie``/``Set-Cookie2`` field. Every test here compares the jar with plain
httpx's after the same responses.
"""

from __future__ import annotations

import http.cookiejar
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from klayengo._httpx._cookies import JAR, ResponseCookies

import klayengo

Handler = Callable[[httpx.Request], httpx.Response]


def jar_state(client: httpx.Client | httpx.AsyncClient) -> list[tuple[Any, ...]]:
    return sorted(
        # Whether a cookie expires, not when: a Max-Age counts from the second the jar
        # read it, which may differ by one between two clients.
        (c.name, c.value, c.domain, c.path, c.secure, c.expires is not None)
        for c in client.cookies.jar
    )


def both(handler: Handler, **kwargs: Any) -> tuple[httpx.Client, klayengo.ResilientClient]:
    return (
        httpx.Client(transport=httpx.MockTransport(handler), **kwargs),
        klayengo.ResilientClient(transport=httpx.MockTransport(handler), metrics=False, **kwargs),
    )


def test_the_jar_is_an_httpx_cookies_and_keeps_the_users_jar() -> None:
    jar = http.cookiejar.CookieJar()
    with klayengo.ResilientClient(cookies=jar, metrics=False) as client:
        assert isinstance(client.cookies, httpx.Cookies)
        assert type(client.cookies) is JAR
        assert client.cookies.jar is jar  # httpx shares a CookieJar it is given
        other = http.cookiejar.CookieJar()
        client.cookies = other  # type: ignore[assignment]
        assert type(client.cookies) is JAR and client.cookies.jar is other
        client.cookies = {"a": "1"}  # type: ignore[assignment]
        assert type(client.cookies) is JAR and client.cookies["a"] == "1"


# Header names as servers spell them, and a few that only look alike.
NAMES = st.sampled_from(
    ["Set-Cookie", "set-cookie", "SET-COOKIE", "Set-Cookie2", "X-Set-Cookie", "Cookie", "ETag"]
)
VALUES = st.sampled_from(
    [
        "a=1",
        "a=2; Path=/",
        "b=x; Max-Age=0",
        "a=; Max-Age=0",
        'c="quoted"; Domain=x',
        "d=1; Secure",
        "e=1; Max-Age=3600",
        "garbage;;;=",
        "",
    ]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.lists(st.tuples(NAMES, VALUES), max_size=4), min_size=1, max_size=4))
def test_the_jar_ends_up_as_httpxs_after_any_responses(
    responses: list[list[tuple[str, str]]],
) -> None:
    replies = iter(responses * 2)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=next(replies))

    plain, ours = both(handler, cookies={"pre": "1"})
    with plain, ours:
        for client in (plain, ours):
            for _ in responses:
                client.get("https://x/")
        assert jar_state(ours) == jar_state(plain)


def test_the_wrapper_is_used_on_httpx_only() -> None:
    # httpx2 returns early itself for a response without cookies: its jar is kept.
    assert (JAR is ResponseCookies) is (httpx.__name__ == "httpx")


def test_a_response_without_cookies_skips_the_urllib_wrappers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    original = httpx.Cookies._CookieCompatRequest.__init__

    def counting(self: Any, request: httpx.Request) -> None:
        built.append(str(request.url))
        original(self, request)

    monkeypatch.setattr(httpx.Cookies._CookieCompatRequest, "__init__", counting)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, headers={"Set-Cookie": "s=1"})
        return httpx.Response(200, headers={"Content-Type": "text/plain"})

    plain, ours = both(handler)
    with plain, ours:
        plain.get("https://x/plain")
        if httpx.__name__ == "httpx":
            assert built == ["https://x/plain"]  # httpx builds them for every response
        built.clear()
        ours.get("https://x/plain")
        assert built == []
        ours.get("https://x/login")
        assert len(built) == 1 and ours.cookies["s"] == "1"


class RecordingJar(http.cookiejar.CookieJar):
    """A jar subclass that wants to see every response."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def extract_cookies(self, response: Any, request: Any) -> None:
        self.seen.append(request.get_full_url())
        super().extract_cookies(response, request)


def test_a_jar_subclass_that_extracts_its_own_way_sees_every_response() -> None:
    plain_jar, our_jar = RecordingJar(), RecordingJar()
    plain = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    plain.cookies = plain_jar  # type: ignore[assignment]
    ours = klayengo.ResilientClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        cookies=our_jar,
        metrics=False,
    )
    with plain, ours:
        plain.get("https://x/a")
        ours.get("https://x/a")
    assert our_jar.seen == plain_jar.seen
    # httpx hands the jar every response; httpx2 only those that set cookies.
    assert plain_jar.seen == (["https://x/a"] if httpx.__name__ == "httpx" else [])


def test_cookiejar_debugging_logs_as_with_httpx(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http.cookiejar, "debug", True)
    plain, ours = both(lambda r: httpx.Response(200))
    counts = []
    with plain, ours:
        for client in (plain, ours):
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="http.cookiejar"):
                client.get("https://x/")
            counts.append(
                [r.getMessage()[:16] for r in caplog.records if r.name == "http.cookiejar"]
            )
    assert counts[0] == counts[1]
    assert bool(counts[0]) is (httpx.__name__ == "httpx")  # httpx2 skips the jar: no log


@pytest.mark.anyio
async def test_async_jar_matches_httpx_and_keeps_the_users_jar() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, headers={"set-cookie": "s=1; Path=/"})
        if request.url.path == "/logout":
            return httpx.Response(200, headers={"Set-Cookie": "s=; Max-Age=0; Path=/"})
        return httpx.Response(200, json={"cookie": request.headers.get("cookie")})

    jar = http.cookiejar.CookieJar()
    plain = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ours = klayengo.AsyncResilientClient(
        transport=httpx.MockTransport(handler), cookies=jar, metrics=False
    )
    assert type(ours.cookies) is JAR and ours.cookies.jar is jar
    async with plain, ours:
        for path in ("/me", "/login", "/me", "/logout", "/me"):
            a = await plain.get(f"https://x{path}")
            b = await ours.get(f"https://x{path}")
            assert a.content == b.content
            assert jar_state(ours) == jar_state(plain)
    assert [c.name for c in jar] == []
