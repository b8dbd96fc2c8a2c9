"""The retry layer against a real loopback server, with a one-connection pool.

A failed response that was not closed would hold the pool's only connection, and the
next attempt would fail with ``PoolTimeout``. Small failed bodies are drained, so the
one connection is reused; large or unannounced ones are closed unread, so the
connection is dropped and a new one opened, and nothing leaks either way.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from klayengo._httpx._transports.retry import DRAIN_LIMIT

from klayengo import AsyncRetryTransport, RetryPolicy, RetryTransport

FAILURES_PER_REQUEST = 2
REQUESTS = 4
POLICY = RetryPolicy(max_retries=FAILURES_PER_REQUEST, backoff_base=0.001, backoff_max=0.001)
LIMITS = httpx.Limits(max_connections=1, max_keepalive_connections=1)
TIMEOUT = httpx.Timeout(5.0, pool=0.5)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client closing a large body early is expected here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            count = self.server.hits.get(self.path, 0)
            self.server.hits[self.path] = count + 1
        if count % (FAILURES_PER_REQUEST + 1) == FAILURES_PER_REQUEST:
            self._send(200, b"ok")
            return
        kind = self.path.strip("/")
        if kind == "small":
            self._send(503, b"busy, try again")
        elif kind == "large":
            self._send(503, b"x" * (DRAIN_LIMIT * 4))
        else:  # chunked: no Content-Length
            self.send_response(503)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"1000\r\n" + b"y" * 0x1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def check(server: Server, kind: str, pool: Any, responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert [r.extensions["klayengo"]["attempts"] for r in responses] == [3] * REQUESTS
    assert server.hits[f"/{kind}"] == REQUESTS * (FAILURES_PER_REQUEST + 1)
    # Nothing is left checked out of the pool.
    assert len(pool.connections) <= 1
    assert all(c.is_idle() for c in pool.connections)
    if kind == "small":
        assert server.connections == 1  # drained: the one connection was reused throughout
    else:
        assert server.connections > 1  # closed unread: the connection was dropped


@pytest.mark.parametrize("kind", ["small", "large", "chunked"])
def test_sync_failed_responses_do_not_leak_pool_connections(server: Server, kind: str) -> None:
    inner = httpx.HTTPTransport(limits=LIMITS)
    with httpx.Client(transport=RetryTransport(inner, POLICY), timeout=TIMEOUT) as client:
        responses = [client.get(f"{server.url}/{kind}") for _ in range(REQUESTS)]
        check(server, kind, inner._pool, responses)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["small", "large", "chunked"])
async def test_async_failed_responses_do_not_leak_pool_connections(
    server: Server, kind: str
) -> None:
    inner = httpx.AsyncHTTPTransport(limits=LIMITS)
    transport = AsyncRetryTransport(inner, POLICY)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        responses = [await client.get(f"{server.url}/{kind}") for _ in range(REQUESTS)]
        check(server, kind, inner._pool, responses)
