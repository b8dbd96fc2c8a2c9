"""Drop-in fidelity against a real HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import klayengo
from klayengo.testing import FlakyServer
from tests.integration.dropin_upstream import dropin_upstream


@pytest.fixture(scope="module")
def server() -> Iterator[FlakyServer]:
    """The drop-in upstream: klayengo.testing's FlakyServer with echo/redirect/auth routes."""
    with dropin_upstream() as running:
        yield running


FAST_RETRY = klayengo.RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.01)


def wire_headers(response: httpx.Response) -> list[list[str]]:
    return [h for h in response.json()["headers"] if h[0] != "host"]


def test_same_bytes_on_the_wire(server: FlakyServer) -> None:
    with (
        httpx.Client(base_url=server.base_url) as plain,
        klayengo.ResilientClient(base_url=server.base_url, metrics=False) as ours,
    ):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            a = plain.request(method, "/echo?x=1", content=b"payload")
            b = ours.request(method, "/echo?x=1", content=b"payload")
            assert a.json() == b.json()
        head_a, head_b = plain.head("/echo"), ours.head("/echo")
        assert head_a.headers["content-length"] == head_b.headers["content-length"]


def test_redirects_cookies_and_basic_auth(server: FlakyServer) -> None:
    with klayengo.ResilientClient(base_url=server.base_url, metrics=False) as client:
        response = client.get("/redirect/3", follow_redirects=True)
        assert response.text == "done" and len(response.history) == 3
        assert client.get("/redirect/1").status_code == 302
        client.get("/set-cookie")
        sent = dict(client.get("/echo").json()["headers"])
        assert sent["cookie"] == "session=abc"
        assert client.get("/basic").status_code == 401
        assert client.get("/basic", auth=("user", "pass")).text == "authenticated"


def test_streaming_a_large_body(server: FlakyServer) -> None:
    with klayengo.ResilientClient(base_url=server.base_url, metrics=False) as client:
        with client.stream("GET", "/big/4096") as response:
            total = sum(len(chunk) for chunk in response.iter_raw())
        assert total == 4096 * 1024


def test_proxy_transport_is_used_and_wrapped(server: FlakyServer) -> None:
    with klayengo.ResilientClient(proxy=server.base_url, metrics=False) as client:
        response = client.get("http://upstream.invalid/some/path")
        assert response.json()["proxied"] == "http://upstream.invalid/some/path"


def test_read_timeout_type_is_unchanged(server: FlakyServer) -> None:
    with klayengo.ResilientClient(
        base_url=server.base_url, retry=FAST_RETRY, metrics=False
    ) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow", timeout=httpx.Timeout(5.0, read=0.05))
        with pytest.raises(httpx.ReadTimeout):
            client.post("/slow", timeout=httpx.Timeout(5.0, read=0.05))


def test_pool_timeout_type_is_unchanged(server: FlakyServer) -> None:
    limits = httpx.Limits(max_connections=1)
    with klayengo.ResilientClient(
        base_url=server.base_url, limits=limits, retry=FAST_RETRY, metrics=False
    ) as client:
        with client.stream("GET", "/big/1"):
            with pytest.raises(httpx.PoolTimeout):
                client.get("/echo", timeout=httpx.Timeout(5.0, pool=0.05))
        assert client.get("/echo").status_code == 200  # the pool recovered


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_error_type_is_unchanged_with_default_policies() -> None:
    with klayengo.ResilientClient(metrics=False) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{free_port()}/")


def test_no_klayengo_logs_at_info(server: FlakyServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        klayengo.ResilientClient(base_url=server.base_url) as client,
    ):
        for _ in range(3):
            assert client.get("/echo").status_code == 200
    assert not [r for r in caplog.records if r.name.startswith("klayengo") and r.levelno >= 20]


@pytest.mark.anyio
async def test_async_against_real_server(server: FlakyServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url) as plain,
        klayengo.AsyncResilientClient(base_url=server.base_url, metrics=False) as ours,
    ):
        a = await plain.post("/echo", json={"k": 1})
        b = await ours.post("/echo", json={"k": 1})
        assert a.json() == b.json()
        redirected = await ours.get("/redirect/2", follow_redirects=True)
        assert redirected.text == "done"
        async with ours.stream("GET", "/big/256") as response:
            assert sum([len(c) async for c in response.aiter_bytes()]) == 256 * 1024
        with pytest.raises(httpx.ReadTimeout):
            await ours.post("/slow", timeout=httpx.Timeout(5.0, read=0.05))


@pytest.mark.anyio
async def test_async_connect_error(anyio_backend: Any) -> None:
    async with klayengo.AsyncResilientClient(retry=FAST_RETRY, metrics=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")
