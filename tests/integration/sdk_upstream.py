"""A loopback fake of the OpenAI, Anthropic and Groq HTTP APIs, for tests/integration/test_sdks.py.

A real HTTP/1.1 server on 127.0.0.1 (a free port, threads: it serves sync, asyncio and trio
tests alike) answering what the SDKs send, with bodies shaped like the real APIs' so the
SDKs' own parsing (pydantic models, SSE decoders) runs for real:

  POST /v1/chat/completions          OpenAI chat completion (``"stream": true``: SSE chunks)
  POST /openai/v1/chat/completions   the same, where Groq's SDK sends it
  GET  /v1/models                    OpenAI model list
  POST /v1/messages                  Anthropic message (``"stream": true``: SSE events)

Not klayengo.testing.FlakyServer: a FlakyServer reply is written in one piece, and the
streaming tests need a body sent in two parts with the server waiting in between
(:attr:`FakeAI.stream_gate`), which is what proves a client passed the stream through
rather than buffering it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

#: Seconds a held stream waits for the test to open its gate. A client that buffers the
#: stream sees nothing before this runs out, so the test then fails on the gate's record
#: (it does not hang); a streaming client opens the gate at once.
GATE_TIMEOUT: Final = 10.0

OPENAI_MODEL: Final = "gpt-4o-mini"
ANTHROPIC_MODEL: Final = "claude-sonnet-4-5"
GROQ_MODEL: Final = "llama-3.3-70b-versatile"
#: The streamed reply, in the pieces the fake sends it in.
STREAMED: Final = ("Hel", "lo", " there!")


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int  # what the fake answered

    def json(self) -> Any:
        return json.loads(self.body)


class FakeAI:
    """The fake API server; ``with FakeAI() as fake:`` runs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._failures: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._connections: set[socket.socket] = set()
        #: When set to an Event, a streamed reply sends its first content event, then waits
        #: (at most GATE_TIMEOUT) for the test to set it before sending the rest; whether it
        #: was set in time is appended to :attr:`gate_opened`.
        self.stream_gate: threading.Event | None = None
        self.gate_opened: list[bool] = []
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ai",
            daemon=True,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> FakeAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stream_gate is not None:
            self.stream_gate.set()  # a failed test may have left a stream held: end it
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # kept-alive client connections end too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join()

    @property
    def host_key(self) -> str:
        """klayengo's name for this origin, as in ``hosts=`` patterns."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_key}"

    # -- scripting and inspection ------------------------------------------------------
    def fail(
        self,
        path: str,
        *,
        times: int = 1,
        status: int = 503,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status`` (and ``headers``)."""
        with self._lock:
            self._failures.setdefault(path, []).extend([(status, headers or {})] * times)

    def seen(self, path: str | None = None) -> list[Seen]:
        """The requests received (to ``path``, or all), oldest first."""
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    # -- answering (server threads) ----------------------------------------------------
    def _next_failure(self, path: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            pending = self._failures.get(path)
            return pending.pop(0) if pending else None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _track(self, connection: socket.socket, *, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(socketserver.ThreadingTCPServer):
    # Not http.server.HTTPServer, whose server_bind() does a reverse DNS lookup.
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: FakeAI) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client closing its connection mid-request is no failure of the fake's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Each SSE event is one small write: without this, Nagle + delayed ACK hold it back.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, opened=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: the default writes a line to stderr per request."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.partition("?")[0]
        route = _ROUTES.get((self.command, path))
        failure = owner._next_failure(path)
        if route is None:
            status = 404
        elif failure is not None:
            status = failure[0]
        else:
            status = 200
        owner._record(Seen(self.command, path, headers, body, status))
        flavour = "anthropic" if path == "/v1/messages" else "openai"
        if route is None:
            self._json(404, _error(flavour, 404, f"no route for {self.command} {path}"))
        elif failure is not None:
            self._json(status, _error(flavour, status, "The server is overloaded."), failure[1])
        else:
            request = json.loads(body) if body else {}
            if request.get("stream"):
                self._stream(route.events(request))
            else:
                self._json(200, route.reply(request))

    def _json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_fake")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[bytes]) -> None:
        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gate = owner.stream_gate
        # The events up to the first content delta, then (gated) the rest.
        split = next(i for i, event in enumerate(events) if STREAMED[0].encode() in event) + 1
        for event in events[:split]:
            self._chunk(event)
        if gate is not None:
            owner.gate_opened.append(gate.wait(GATE_TIMEOUT))
        for event in events[split:]:
            self._chunk(event)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _error(flavour: str, status: int, message: str) -> dict[str, Any]:
    if flavour == "anthropic":
        kind = "overloaded_error" if status >= 500 else "not_found_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {text}\n\n".encode()


class _ChatCompletions:
    """OpenAI's (and Groq's) ``POST .../chat/completions``."""

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake123",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": request.get("model", OPENAI_MODEL),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            "system_fingerprint": "fp_fake",
        }

    def events(self, request: dict[str, Any]) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse(
                {
                    "id": "chatcmpl-fake123",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": request.get("model", OPENAI_MODEL),
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )

        return [
            chunk({"role": "assistant", "content": ""}),
            *(chunk({"content": piece}) for piece in STREAMED),
            chunk({}, "stop"),
            _sse("[DONE]"),
        ]


class _Models:
    """OpenAI's ``GET /v1/models``."""

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": OPENAI_MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "x"}
            ],
        }

    def events(self, request: dict[str, Any]) -> list[bytes]:
        raise AssertionError("GET /v1/models does not stream")


class _Messages:
    """Anthropic's ``POST /v1/messages``."""

    def _message(self, request: dict[str, Any], text: str, output_tokens: int) -> dict[str, Any]:
        return {
            "id": "msg_fake123",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", ANTHROPIC_MODEL),
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": "end_turn" if text else None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": output_tokens},
        }

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._message(request, "Hello there!", 3)

    def events(self, request: dict[str, Any]) -> list[bytes]:
        return [
            _sse(
                {"type": "message_start", "message": self._message(request, "", 1)}, "message_start"
            ),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            *(
                _sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                    "content_block_delta",
                )
                for piece in STREAMED
            ),
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]


_ROUTES: Final[dict[tuple[str, str], Any]] = {
    ("POST", "/v1/chat/completions"): _ChatCompletions(),
    ("POST", "/openai/v1/chat/completions"): _ChatCompletions(),
    ("GET", "/v1/models"): _Models(),
    ("POST", "/v1/messages"): _Messages(),
}
