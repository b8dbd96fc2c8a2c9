"""A small threaded HTTP/1.1 server on 127.0.0.1 for drop-in fidelity tests.

Routes (GET unless noted):
  /echo             JSON of the request line, headers and body (any method)
  /status/<code>    that status, empty body
  /redirect/<n>     302 to /redirect/<n-1>, /redirect/0 -> 200
  /set-cookie       sets cookie `session=abc`
  /slow/<ms>        sleeps then answers
  /stream/<kib>     a chunked body of <kib> KiB
  /basic            401 with a Basic challenge unless Authorization is user:pass
Any absolute-form request target (a proxy request) is answered with the target echoed.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # silence
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        path = self.path
        body = self._body()
        if path.startswith("http://"):
            payload = {"proxied": path, "headers": dict(self.headers.items())}
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif path.startswith("/echo"):
            payload = {
                "method": self.command,
                "path": path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif path.startswith("/status/"):
            self._send(int(path.split("/")[2]))
        elif path.startswith("/redirect/"):
            n = int(path.split("/")[2])
            if n == 0:
                self._send(200, b"done")
            else:
                self._send(302, b"", {"Location": f"/redirect/{n - 1}"})
        elif path == "/set-cookie":
            self._send(200, b"ok", {"Set-Cookie": "session=abc; Path=/"})
        elif path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
            self._send(200, b"slow")
        elif path.startswith("/stream/"):
            kib = int(path.split("/")[2])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 1024
            for _ in range(kib):
                self.wfile.write(b"400\r\n" + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/basic":
            expected = "Basic " + base64.b64encode(b"user:pass").decode()
            if self.headers.get("Authorization") == expected:
                self._send(200, b"authenticated")
            else:
                self._send(401, b"", {"WWW-Authenticate": 'Basic realm="test"'})
        else:
            self._send(404, b"not found")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _route


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that time out hang up mid-response: expected, not worth a traceback.
        pass


class LoopbackServer:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hits = 0  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def hits(self) -> int:
        return self._server.hits  # type: ignore[attr-defined, no-any-return]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
