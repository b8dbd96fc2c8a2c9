"""The cache over real sockets: a loopback HTTP/1.1 server, sync and async clients."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import klayengo
from klayengo._core.clock import FakeClock
from klayengo._core.report import report

BODY = b"x" * 5000


class Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.sockets: list[socket.socket] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                outer.sockets.append(self.connection)

            def do_GET(self) -> None:
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                if self.headers.get("If-None-Match") == '"v1"':
                    self.send_response(304)
                    self.send_header("ETag", '"v1"')
                    self.send_header("Cache-Control", "max-age=10")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", '"v1"')
                self.send_header("Cache-Control", "max-age=10")
                if self.path.startswith("/chunked"):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(BODY), 1000):
                        piece = BODY[start : start + 1000]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.stopped = False
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.httpd.shutdown()
        for sock in self.sockets:  # a crash: kept-alive connections die too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def policy() -> klayengo.CachePolicy:
    return klayengo.CachePolicy(stale_if_error=60)


@pytest.mark.parametrize("path", ["/fixed?q=1", "/chunked?q=1"])
def test_sync_miss_hit_revalidate_and_stale_if_error(server: Server, path: str) -> None:
    clock = FakeClock()
    with klayengo.ResilientClient(
        cache=policy(), retry=None, breaker=None, metrics=False, _clock=clock
    ) as client:
        url = server.url + path
        assert report(client.get(url))["cache"] == "miss"
        hit = client.get(url)
        assert report(hit)["cache"] == "hit" and hit.content == BODY
        clock.advance(11)
        again = client.get(url)
        assert report(again)["cache"] == "revalidated" and again.content == BODY
        assert server.requests[-1]["if-none-match"] == '"v1"'
        assert len(server.requests) == 2
        assert len(server.sockets) == 1  # the 304 left the connection reusable
        server.stop()
        clock.advance(11)
        stale = client.get(url)  # connection refused: served stale
        assert report(stale)["cache"] == "stale" and stale.content == BODY


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/fixed?q=1", "/chunked?q=1"])
async def test_async_miss_hit_revalidate_and_stale_if_error(server: Server, path: str) -> None:
    clock = FakeClock()
    async with klayengo.AsyncResilientClient(
        cache=policy(), retry=None, breaker=None, metrics=False, _clock=clock
    ) as client:
        url = server.url + path
        assert report(await client.get(url))["cache"] == "miss"
        hit = await client.get(url)
        assert report(hit)["cache"] == "hit" and hit.content == BODY
        clock.advance(11)
        again = await client.get(url)
        assert report(again)["cache"] == "revalidated" and again.content == BODY
        assert len(server.requests) == 2
        server.stop()
        clock.advance(11)
        stale = await client.get(url)
        assert report(stale)["cache"] == "stale" and stale.content == BODY
