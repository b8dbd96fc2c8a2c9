"""The HTTP/1.1 side of :class:`~._server.FlakyServer`: reading requests, writing
replies, the threading TCP server."""

from __future__ import annotations

import email.utils
import socket
import socketserver
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Final

from ._messages import RecordedRequest, Reply, phrase

if TYPE_CHECKING:
    from ._server import FlakyServer

__all__ = ["MAX_REQUEST_BODY", "TCPServer"]

#: Largest request body the server reads (larger requests are answered 413 and closed).
MAX_REQUEST_BODY: Final = 16 * 2**20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TCPServer

    def setup(self) -> None:
        super().setup()
        # One small write per response; Nagle + delayed ACK would add ~40 ms to each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: the default writes a line to stderr per request."""

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > MAX_REQUEST_BODY:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        owner = self.server.owner
        try:
            body = self._read_body()
        except ValueError:
            body = None
        path, _, query = self.path.partition("?")
        record = RecordedRequest(
            method=self.command,
            path=path,
            query=query,
            headers=list(self.headers.items()),
            body=body or b"",
            time=time.monotonic(),
        )
        # Recorded on arrival, so a test can see a request that is still being answered.
        owner._record(record)
        if body is None:
            reply = Reply(status=413, body=b"request body too large\n")
            self.close_connection = True
        else:
            reply = owner._answer(record)
        if reply.delay > 0 and owner._stopping.wait(reply.delay):
            reply = replace(reply, drop=True)  # closing: do not keep the client waiting
        if reply.drop:
            self.close_connection = True
            return
        owner._answered(record, reply.status)
        self.wfile.write(_encode(reply, head=self.command == "HEAD"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve
    do_TRACE = _serve


def _encode(reply: Reply, *, head: bool) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {phrase(reply.status)}"]
    names = set()
    for name, value in reply.headers:
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if "date" not in names:
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    bodiless = reply.status in (204, 304) or 100 <= reply.status < 200
    if not bodiless and "content-length" not in names:
        lines.append(f"Content-Length: {len(reply.body)}")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head or bodiless else head_bytes + reply.body


class TCPServer(socketserver.ThreadingTCPServer):
    # Not http.server.HTTPServer: its server_bind() does a reverse DNS lookup, which can
    # hang for seconds on a machine without network.
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: FlakyServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)
