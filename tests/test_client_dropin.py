"""Drop-in fidelity on MockTransport: klayengo's clients behave exactly like httpx's.

Each scenario runs the same code against httpx's client and klayengo's and compares
what the handler saw and what the caller got.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from klayengo._httpx._transports.stack import AsyncStackTransport, StackTransport

import klayengo

Handler = Callable[[httpx.Request], httpx.Response]


def echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "method": request.method,
            "url": str(request.url),
            "headers": [[k.decode(), v.decode()] for k, v in request.headers.raw],
            "body": request.read().decode(),
            "extensions": sorted(request.extensions),
        },
    )


def both(handler: Handler, **kwargs: Any) -> tuple[httpx.Client, httpx.Client]:
    return (
        httpx.Client(transport=httpx.MockTransport(handler), **kwargs),
        klayengo.ResilientClient(transport=httpx.MockTransport(handler), metrics=False, **kwargs),
    )


def test_is_an_httpx_client() -> None:
    assert issubclass(klayengo.ResilientClient, httpx.Client)
    assert issubclass(klayengo.AsyncResilientClient, httpx.AsyncClient)


def test_same_request_headers_and_no_extra_header() -> None:
    plain, ours = both(echo, headers={"X-App": "1"}, params={"a": "b"}, base_url="https://api.x")
    with plain, ours:
        for method in ("GET", "POST", "PUT", "DELETE"):
            a = plain.request(method, "/items", content=b"body", headers={"X-Req": "2"}).json()
            b = ours.request(method, "/items", content=b"body", headers={"X-Req": "2"}).json()
            assert a == b
            names = [k.lower() for k, _ in b["headers"]]
            assert "user-agent" in names and names.count("user-agent") == 1
            # The library's own User-Agent (httpx2 sends python-httpx2/...), nothing of ours.
            assert dict(b["headers"])["User-Agent"] == plain.headers["User-Agent"]
            assert plain.headers["User-Agent"].startswith("python-httpx")


def test_same_json_and_form_bodies() -> None:
    plain, ours = both(echo)
    with plain, ours:
        for kwargs in ({"json": {"a": [1, 2]}}, {"data": {"k": "v"}}, {"files": {"f": b"abc"}}):
            a = plain.post("https://x/", **kwargs).json()
            b = ours.post("https://x/", **kwargs).json()
            if "files" in kwargs:  # the multipart boundary is random per request
                a["headers"] = [h for h in a["headers"] if h[0] != "Content-Type"]
                b["headers"] = [h for h in b["headers"] if h[0] != "Content-Type"]
                a["body"] = b["body"] = ""
            assert a == b


def redirects(request: httpx.Request) -> httpx.Response:
    n = int(request.url.path.strip("/") or 0)
    if n:
        return httpx.Response(302, headers={"Location": f"/{n - 1}"})
    return httpx.Response(200, text="landed")


def test_redirects() -> None:
    plain, ours = both(redirects)
    with plain, ours:
        for follow in (False, True):
            a = plain.get("https://x/3", follow_redirects=follow)
            b = ours.get("https://x/3", follow_redirects=follow)
            assert (a.status_code, a.text, str(a.url)) == (b.status_code, b.text, str(b.url))
            assert [str(r.url) for r in a.history] == [str(r.url) for r in b.history]
        assert b.next_request is None
        with pytest.raises(httpx.TooManyRedirects):
            ours.get("https://x/30", follow_redirects=True)
    _, limited = both(redirects, max_redirects=1)
    with limited, pytest.raises(httpx.TooManyRedirects):
        limited.get("https://x/3", follow_redirects=True)


def digest(request: httpx.Request) -> httpx.Response:
    if "authorization" in request.headers:
        return httpx.Response(200, json={"auth": request.headers["authorization"][:6]})
    challenge = 'Digest realm="r", nonce="abc", qop="auth", algorithm=MD5'
    return httpx.Response(401, headers={"WWW-Authenticate": challenge})


def test_auth_flows() -> None:
    plain, ours = both(digest)
    with plain, ours:
        # DigestAuth remembers the challenge, so each client gets its own.
        a = plain.get("https://x/", auth=httpx.DigestAuth("user", "pass"))
        b = ours.get("https://x/", auth=httpx.DigestAuth("user", "pass"))
        assert a.json() == b.json() == {"auth": "Digest"}
        assert len(a.history) == len(b.history) == 1
        basic = ours.get("https://x/", auth=("u", "p"))
        assert basic.json() == {"auth": "Basic "}


@pytest.mark.parametrize("kind", [klayengo.ResilientClient, klayengo.AsyncResilientClient])
def test_requests_without_auth_share_one_stateless_auth(kind: type) -> None:
    # httpx builds a new, stateless Auth() per request without auth; ours shares one
    # (one object fewer held by every request in flight). Any real auth is untouched.
    client = kind(metrics=False)
    first, second = (client.build_request("GET", "https://x/") for _ in range(2))
    shared = client._build_request_auth(first)
    assert type(shared) is httpx.Auth and client._build_request_auth(second) is shared
    user = httpx.BasicAuth("u", "p")
    assert client._build_request_auth(first, user) is user
    in_url = client._build_request_auth(client.build_request("GET", "https://u:p@x/"))
    assert isinstance(in_url, httpx.BasicAuth)


def cookies(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/login":
        return httpx.Response(200, headers={"Set-Cookie": "session=s1; Path=/"})
    return httpx.Response(200, json={"cookie": request.headers.get("cookie")})


def test_cookies_persist() -> None:
    plain, ours = both(cookies, cookies={"pre": "1"})
    with plain, ours:
        for client in (plain, ours):
            client.get("https://x/login")
        assert plain.get("https://x/me").json() == ours.get("https://x/me").json()
        assert ours.cookies["session"] == "s1"


def test_event_hooks_see_the_same_things() -> None:
    seen: dict[str, list[str]] = {"plain": [], "ours": []}

    def hooks(tag: str) -> dict[str, list[Callable[..., Any]]]:
        return {
            "request": [lambda r: seen[tag].append(f"req {r.method} {r.url}")],
            "response": [lambda r: seen[tag].append(f"resp {r.status_code}")],
        }

    plain = httpx.Client(transport=httpx.MockTransport(redirects), event_hooks=hooks("plain"))
    ours = klayengo.ResilientClient(
        transport=httpx.MockTransport(redirects), event_hooks=hooks("ours"), metrics=False
    )
    with plain, ours:
        plain.get("https://x/2", follow_redirects=True)
        ours.get("https://x/2", follow_redirects=True)
    assert seen["plain"] == seen["ours"] and len(seen["ours"]) == 6


def test_request_extensions_pass_through_untouched() -> None:
    captured: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(dict(request.extensions))
        return httpx.Response(200)

    control = {"max_retries": 0}
    trace_calls: list[str] = []

    def trace(name: str, info: Any) -> None:
        trace_calls.append(name)

    _, ours = both(handler)
    with ours:
        response = ours.get(
            "https://x/",
            extensions={"trace": trace, "sni_hostname": "y", "klayengo": control, "custom": 1},
            timeout=3.0,
        )
    ext = captured[0]
    assert ext["trace"] is trace and ext["sni_hostname"] == "y" and ext["custom"] == 1
    assert ext["timeout"] == {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}
    assert ext["klayengo"] is control and control == {"max_retries": 0}
    assert response.extensions["klayengo"]["attempts"] == 1


def test_unknown_klayengo_extension_keys_raise_type_error() -> None:
    _, ours = both(echo)
    with ours, pytest.raises(TypeError, match="'retries'"):
        ours.get("https://x/", extensions={"klayengo": {"retries": 2}})


def test_response_report_defaults() -> None:
    _, ours = both(echo)
    with ours:
        report = ours.get("https://x/").extensions["klayengo"]
    assert set(report) == {"attempts", "cache", "breaker", "wait"}
    assert report["cache"] is None  # no cache configured
    assert report["wait"] == 0.0


def test_streaming_is_unchanged() -> None:
    def stream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"a" * 10, b"b" * 10]))

    plain, ours = both(stream)
    with plain, ours:
        with plain.stream("GET", "https://x/") as a, ours.stream("GET", "https://x/") as b:
            assert list(a.iter_bytes()) == list(b.iter_bytes())
            assert b.is_closed is False or b.is_stream_consumed


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422])
def test_default_policies_do_not_alter_successful_outcomes(status: int) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            status, headers={"X-S": str(status)}, content=b"" if status in (204, 304) else b"b"
        )

    plain, ours = both(handler)
    with plain, ours:
        for method in ("GET", "POST"):
            a, b = plain.request(method, "https://x/"), ours.request(method, "https://x/")
            assert (a.status_code, a.headers, a.content) == (b.status_code, b.headers, b.content)
    assert len(calls) == 4  # no hidden retries


def test_exception_types_are_unchanged() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    _, ours = both(boom)
    with ours, pytest.raises(httpx.ReadTimeout):
        ours.post("https://x/")  # POST: never retried after a read timeout


class Closing(httpx.MockTransport):
    def __init__(self) -> None:
        super().__init__(echo)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_user_transports_and_mounts_closed_exactly_once() -> None:
    main, mount, shared = Closing(), Closing(), Closing()
    client = klayengo.ResilientClient(
        transport=main,
        mounts={
            "https://m.example": mount,
            "https://s1.example": shared,
            "https://s2.example": shared,
        },
        metrics=False,
    )
    with client:
        assert client.get("https://m.example/").status_code == 200
        assert client.get("https://s2.example/").status_code == 200
    assert (main.closed, mount.closed, shared.closed) == (1, 1, 1)
    client.close()  # closing again closes nothing twice
    assert (main.closed, mount.closed, shared.closed) == (1, 1, 1)

    other = Closing()
    client = klayengo.ResilientClient(transport=other, metrics=False)
    client.close()
    assert other.closed == 1


def test_every_transport_is_wrapped() -> None:
    mount = Closing()
    client = klayengo.ResilientClient(
        transport=Closing(),
        mounts={"https://m.example": mount, "https://none.example": None},
        proxy="http://127.0.0.1:9",
        metrics=False,
    )
    with client:
        assert isinstance(client._transport, StackTransport)
        for pattern, transport in client._mounts.items():
            if pattern.pattern == "https://none.example":
                assert transport is None
            else:
                assert isinstance(transport, StackTransport), pattern
        assert client._transport_for_url(httpx.URL("https://m.example/")).inner is mount  # type: ignore[attr-defined]


def test_default_transport_is_built_from_client_settings() -> None:
    limits = httpx.Limits(max_connections=7, max_keepalive_connections=3)
    client = klayengo.ResilientClient(limits=limits, verify=False, metrics=False)
    with client:
        inner = client._transport.inner  # type: ignore[attr-defined]
        assert isinstance(inner, httpx.HTTPTransport)
        assert inner._pool._max_connections == 7
        assert inner._pool._max_keepalive_connections == 3


def test_no_logs_at_info_or_warnings_on_normal_requests(caplog: pytest.LogCaptureFixture) -> None:
    _, ours = both(echo)
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        with ours:
            ours.get("https://x/")
            ours.post("https://x/", json={})
    # httpx itself logs each request at INFO; klayengo adds nothing at INFO or above.
    ours_records = [r for r in caplog.records if r.name.startswith("klayengo")]
    assert [r for r in ours_records if r.levelno >= logging.INFO] == []


def test_klayengo_arguments_are_validated() -> None:
    with pytest.raises(TypeError, match="retry"):
        klayengo.ResilientClient(retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache"):
        klayengo.ResilientClient(cache=klayengo.RetryPolicy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        klayengo.ResilientClient(name="")
    with pytest.raises(ValueError, match="host pattern"):
        klayengo.ResilientClient(hosts={"http://x": klayengo.HostPolicy()})
    with pytest.raises(TypeError, match="metrics"):
        klayengo.ResilientClient(metrics="yes")
    with pytest.raises(TypeError):
        klayengo.ResilientClient(not_an_httpx_argument=1)  # type: ignore[call-arg]


# -- async twins ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_same_headers_redirects_and_cookies() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/r":
            return httpx.Response(302, headers={"Location": "/e", "Set-Cookie": "c=1"})
        return echo(request)

    plain = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ours = klayengo.AsyncResilientClient(transport=httpx.MockTransport(handler), metrics=False)
    async with plain, ours:
        a = await plain.get("https://x/r", follow_redirects=True)
        b = await ours.get("https://x/r", follow_redirects=True)
        assert a.json() == b.json()
        assert len(b.history) == 1 and ours.cookies["c"] == "1"
        assert json.loads(b.text)["headers"] == json.loads(a.text)["headers"]


class AsyncClosing(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ok")

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.anyio
async def test_async_transports_closed_exactly_once() -> None:
    main, mount = AsyncClosing(), AsyncClosing()
    client = klayengo.AsyncResilientClient(
        transport=main, mounts={"https://m": mount, "https://m2": mount}, metrics=False
    )
    async with client:
        assert (await client.get("https://m/")).text == "ok"
        assert isinstance(client._transport, AsyncStackTransport)
    assert (main.closed, mount.closed) == (1, 1)
    await client.aclose()
    assert (main.closed, mount.closed) == (1, 1)


@pytest.mark.anyio
async def test_async_unknown_extension_key() -> None:
    client = klayengo.AsyncResilientClient(transport=httpx.MockTransport(echo), metrics=False)
    async with client:
        with pytest.raises(TypeError, match="unknown key"):
            await client.get("https://x/", extensions={"klayengo": {"nope": 1}})


def test_http2_and_verify_settings_reach_the_default_transport() -> None:
    pytest.importorskip("h2")
    with klayengo.ResilientClient(http2=True, http1=False, metrics=False) as client:
        inner = client._transport.inner  # type: ignore[attr-defined]
        assert inner._pool._http2 is True and inner._pool._http1 is False


@pytest.mark.anyio
async def test_async_default_transport_settings() -> None:
    limits = httpx.Limits(max_connections=5)
    async with klayengo.AsyncResilientClient(limits=limits, metrics=False) as client:
        inner = client._transport.inner  # type: ignore[attr-defined]
        assert isinstance(inner, httpx.AsyncHTTPTransport)
        assert inner._pool._max_connections == 5


def test_cache_hits_read_like_network_responses() -> None:
    def cacheable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, content=b"body")

    with klayengo.ResilientClient(
        transport=httpx.MockTransport(cacheable), cache=klayengo.CachePolicy(), metrics=False
    ) as client:
        miss, hit = client.get("https://x/"), client.get("https://x/")
        assert hit.extensions["klayengo"]["cache"] == "hit"
        for response in (miss, hit):
            assert response.is_closed and response.content == b"body"
        with client.stream("GET", "https://x/") as streamed:
            assert streamed.extensions["klayengo"]["cache"] == "hit"
            assert not streamed.is_closed
            assert b"".join(streamed.iter_raw()) == b"body"
        with client.stream("GET", "https://x/") as streamed:
            assert streamed.read() == b"body"
            assert streamed.is_closed  # reading to the end closes, as upstream


@pytest.mark.anyio
async def test_async_cache_hits_read_like_network_responses() -> None:
    def cacheable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Cache-Control": "max-age=60"}, content=b"body")

    async with klayengo.AsyncResilientClient(
        transport=httpx.MockTransport(cacheable), cache=klayengo.CachePolicy(), metrics=False
    ) as client:
        miss, hit = await client.get("https://x/"), await client.get("https://x/")
        assert hit.extensions["klayengo"]["cache"] == "hit"
        for response in (miss, hit):
            assert response.is_closed and response.content == b"body"
        async with client.stream("GET", "https://x/") as streamed:
            assert streamed.extensions["klayengo"]["cache"] == "hit"
            assert not streamed.is_closed
            assert b"".join([chunk async for chunk in streamed.aiter_raw()]) == b"body"
        async with client.stream("GET", "https://x/") as streamed:
            assert await streamed.aread() == b"body"
            assert streamed.is_closed


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (klayengo.ResilientClient, httpx.Client),
        (klayengo.AsyncResilientClient, httpx.AsyncClient),
    ],
)
def test_send_is_httpx_own(ours: type, theirs: type) -> None:
    # No wrapper around `send`: every request in flight would hold it as one more
    # frame (a coroutine under async), and patching or overriding httpx's `send`
    # works on our clients exactly as on httpx's.
    assert ours.send is theirs.send
