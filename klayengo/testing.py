"""A flaky HTTP upstream on loopback, for tests and demos.

:class:`FlakyServer` is a real HTTP/1.1 server on ``127.0.0.1`` (a random free port by
default) whose routes follow scripted *behaviours*: healthy, slow, failing N times
then succeeding, down for a while then recovering, intermittently failing,
rate-limiting with ``429`` + ``Retry-After``, cacheable with ``ETag`` /
``Last-Modified`` and ``304 Not Modified``. It records every request for assertions.
It runs in background threads, so it serves sync tests, asyncio and trio alike.

Usage::

    from klayengo.testing import FailTimes, FlakyServer, Healthy

    with FlakyServer() as server:
        server.route("/orders", FailTimes(2, then=Healthy(body=b"[]")))
        with klayengo.ResilientClient() as client:
            response = client.get(server.url("/orders"))
        assert response.status_code == 200
        assert server.count("/orders") == 3           # two 503s, then the 200

Several origins (one port each) at once::

    with Upstream({"api": Healthy(), "flaky": Intermittent(0.3, seed=1)}) as up:
        up["flaky"].url("/x")      # "http://127.0.0.1:PORT/x"
        up["flaky"].host_key       # "127.0.0.1:PORT", as in metrics and breaker_state()

Behaviours compose: most take a ``then=`` behaviour used once they are done
failing, and :class:`Slow` delays any other behaviour. Time-based behaviours
(:class:`Down`, :class:`Phases`, :class:`RateLimited`, :class:`Cacheable`) start
their clock at the first request they see; :meth:`FlakyServer.reset` starts them over.
Write your own by subclassing :class:`Behaviour` and implementing ``respond``.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import math
import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Final, Protocol

__all__ = [
    "Behaviour",
    "Cacheable",
    "Down",
    "Fail",
    "FailTimes",
    "FlakyServer",
    "Healthy",
    "Intermittent",
    "Phases",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "Script",
    "Slow",
    "Upstream",
]

#: The interface every server listens on: loopback only, never reachable from outside.
LOOPBACK: Final = "127.0.0.1"
#: Seconds ``close()`` waits for the accept loop to notice it must stop.
_POLL_INTERVAL: Final = 0.05
#: Largest request body the server reads (larger requests are answered 413 and closed).
MAX_REQUEST_BODY: Final = 16 * 2**20
#: Default status of a failing behaviour.
DEFAULT_FAIL_STATUS: Final = 503


class _Clock(Protocol):
    def monotonic(self) -> float: ...


class _SystemMonotonic:
    monotonic = staticmethod(time.monotonic)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server sends for one request.

    Attributes:
        status: the status code.
        body: the body (not sent for ``HEAD``, ``204`` and ``304``).
        headers: extra headers; ``Content-Length`` and ``Date`` are added by the server.
        delay: seconds to wait before answering.
        drop: close the connection without answering (the client sees a disconnect).
    """

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False


@dataclass(slots=True)
class RecordedRequest:
    """One request the server received.

    Attributes:
        method: the request method.
        path: the path, without the query.
        query: the raw query string (``""`` when there is none).
        headers: the request headers, in order, as sent.
        body: the request body.
        time: ``time.monotonic()`` when the request was read.
        status: the status answered; ``None`` while it is being answered, or when the
            connection was dropped.
    """

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    time: float
    status: int | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default


class Behaviour:
    """How a route answers. Subclasses implement :meth:`respond`; they must be thread-safe
    (the server answers concurrent requests from several threads)."""

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        """The reply to ``request``; ``now`` is the server clock's monotonic time."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (counters, clocks) so the behaviour starts over."""

    def _children(self) -> Iterable[Behaviour]:
        return ()

    def _reset_tree(self) -> None:
        self.reset()
        for child in self._children():
            child._reset_tree()


class Healthy(Behaviour):
    """Always answers ``status`` (200) with ``body`` and ``headers``."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"ok\n",
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        merged = {"Content-Type": content_type, **(headers or {})}
        self._reply = Reply(status=status, body=body, headers=tuple(merged.items()))

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        return self._reply


class Fail(Behaviour):
    """Always fails: answers ``status`` (503), optionally with ``Retry-After``; or, with
    ``drop=True``, closes the connection without answering."""

    def __init__(
        self,
        status: int = DEFAULT_FAIL_STATUS,
        *,
        retry_after: float | str | None = None,
        drop: bool = False,
        body: bytes | None = None,
    ) -> None:
        headers: list[tuple[str, str]] = [("Content-Type", "text/plain; charset=utf-8")]
        if retry_after is not None:
            value = retry_after if isinstance(retry_after, str) else _seconds(retry_after)
            headers.append(("Retry-After", value))
        text = body if body is not None else f"{status} {_phrase(status)}\n".encode()
        self._reply = Reply(status=status, body=text, headers=tuple(headers), drop=drop)

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        return self._reply


class Slow(Behaviour):
    """Answers like ``then`` after a delay: ``delay`` seconds, or uniformly within
    ``(low, high)``."""

    def __init__(
        self,
        delay: float | tuple[float, float],
        then: Behaviour | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        low, high = delay if isinstance(delay, tuple) else (delay, delay)
        if not 0 <= low <= high:
            raise ValueError(f"Slow: delay must be >= 0 (low <= high), got {delay!r}")
        self._low, self._high = low, high
        self._then = then if then is not None else Healthy()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            delay = self._random.uniform(self._low, self._high)
        reply = self._then.respond(request, now)
        return replace(reply, delay=reply.delay + delay)

    def _children(self) -> Iterable[Behaviour]:
        return (self._then,)


class Script(Behaviour):
    """Answers with each behaviour in turn, one request each; the last one repeats."""

    def __init__(self, steps: Sequence[Behaviour]) -> None:
        if not steps:
            raise ValueError("Script: needs at least one behaviour")
        self._steps = tuple(steps)
        self._count = 0
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            index = min(self._count, len(self._steps) - 1)
            self._count += 1
        return self._steps[index].respond(request, now)

    def reset(self) -> None:
        with self._lock:
            self._count = 0

    def _children(self) -> Iterable[Behaviour]:
        return self._steps


class FailTimes(Script):
    """Fails the first ``times`` requests (with ``fail``, default a 503), then answers like
    ``then``."""

    def __init__(
        self, times: int, then: Behaviour | None = None, *, fail: Behaviour | None = None
    ) -> None:
        if times < 0:
            raise ValueError(f"FailTimes: times must be >= 0, got {times!r}")
        failing = fail if fail is not None else Fail()
        super().__init__([failing] * times + [then if then is not None else Healthy()])


class Intermittent(Behaviour):
    """Fails a random ``rate`` of the requests (with ``fail``), answers the others like
    ``then``. ``seed`` makes the sequence of draws reproducible."""

    def __init__(
        self,
        rate: float,
        then: Behaviour | None = None,
        *,
        fail: Behaviour | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"Intermittent: rate must be between 0 and 1, got {rate!r}")
        self._rate = rate
        self._then = then if then is not None else Healthy()
        self._fail = fail if fail is not None else Fail()
        self._seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            failing = self._random.random() < self._rate
        return (self._fail if failing else self._then).respond(request, now)

    def reset(self) -> None:
        with self._lock:
            self._random = random.Random(self._seed)

    def _children(self) -> Iterable[Behaviour]:
        return (self._then, self._fail)


class Phases(Behaviour):
    """A timeline: each ``(seconds, behaviour)`` phase lasts that long, counted from the first
    request; the last phase may last ``None`` (for ever). After the last finite phase, the
    last behaviour stays.

    Usage::

        Phases((5.0, Intermittent(0.3)), (4.0, Fail()), (None, Healthy()))
    """

    def __init__(self, *phases: tuple[float | None, Behaviour]) -> None:
        if not phases:
            raise ValueError("Phases: needs at least one (seconds, behaviour) phase")
        for index, (seconds, _) in enumerate(phases):
            if seconds is None and index != len(phases) - 1:
                raise ValueError("Phases: only the last phase may last None (for ever)")
            if seconds is not None and not seconds >= 0:
                raise ValueError(f"Phases: a phase must last >= 0 seconds, got {seconds!r}")
        self._phases = phases
        self._start: float | None = None
        self._lock = threading.Lock()

    def phase_index(self, now: float) -> int:
        """The index of the phase in force at ``now`` (0 before the first request)."""
        start = self._start
        if start is None:
            return 0
        elapsed = now - start
        for index, (seconds, _) in enumerate(self._phases):
            if seconds is None or elapsed < seconds:
                return index
            elapsed -= seconds
        return len(self._phases) - 1

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            if self._start is None:
                self._start = now
        return self._phases[self.phase_index(now)][1].respond(request, now)

    def reset(self) -> None:
        with self._lock:
            self._start = None

    def _children(self) -> Iterable[Behaviour]:
        return (behaviour for _, behaviour in self._phases)


class Down(Phases):
    """Down (answering ``fail``, default a 503) for ``seconds`` from the first request, then
    recovered (answering like ``then``)."""

    def __init__(
        self, seconds: float, then: Behaviour | None = None, *, fail: Behaviour | None = None
    ) -> None:
        super().__init__(
            (seconds, fail if fail is not None else Fail()),
            (None, then if then is not None else Healthy()),
        )


class RateLimited(Behaviour):
    """A server-side limit of ``rate`` requests per ``per`` seconds (a token bucket holding
    ``burst`` tokens, default ``rate``): within it, answers like ``then``; over it, answers
    ``status`` (429) with ``Retry-After`` (``retry_after`` seconds, or by default the
    whole seconds until a token is free)."""

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        then: Behaviour | None = None,
        *,
        burst: float | None = None,
        status: int = 429,
        retry_after: float | None = None,
    ) -> None:
        if not rate > 0 or not per > 0:
            raise ValueError(f"RateLimited: rate and per must be > 0, got {rate!r}/{per!r}")
        self._interval = per / rate
        self._burst = burst if burst is not None else rate
        if not self._burst >= 1:
            raise ValueError(f"RateLimited: burst must be >= 1, got {self._burst!r}")
        self._then = then if then is not None else Healthy()
        self._status = status
        self._retry_after = retry_after
        self._tokens = self._burst
        self._updated: float | None = None
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            if self._updated is not None:
                elapsed = max(0.0, now - self._updated)
                self._tokens = min(self._burst, self._tokens + elapsed / self._interval)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                allowed, wait = True, 0.0
            else:
                allowed, wait = False, (1 - self._tokens) * self._interval
        if allowed:
            return self._then.respond(request, now)
        after = self._retry_after if self._retry_after is not None else max(1, math.ceil(wait))
        return Fail(self._status, retry_after=after).respond(request, now)

    def reset(self) -> None:
        with self._lock:
            self._tokens, self._updated = self._burst, None

    def _children(self) -> Iterable[Behaviour]:
        return (self._then,)


class Cacheable(Behaviour):
    """A cacheable resource per path, with validators and conditional requests.

    Answers ``200`` with ``Cache-Control`` (``max-age=<max_age>``, or ``cache_control``
    verbatim), an ``ETag`` and a ``Last-Modified`` that change with each version, and
    answers a matching ``If-None-Match`` (or, without one, an ``If-Modified-Since`` not
    older than the version) with ``304 Not Modified``. The content changes when
    :meth:`update` is called, and every ``change_every`` seconds when set.

    Attributes:
        not_modified: how many ``304`` answers were sent.
    """

    def __init__(
        self,
        body: bytes | None = None,
        *,
        max_age: float = 60,
        cache_control: str | None = None,
        etag: bool = True,
        last_modified: bool = True,
        change_every: float | None = None,
    ) -> None:
        self._body = body
        self._cache_control = (
            cache_control if cache_control is not None else f"max-age={_seconds(max_age)}"
        )
        self._etag = etag
        self._last_modified = last_modified
        self._change_every = change_every
        self._lock = threading.Lock()
        self._version = 1
        self._modified = int(time.time())
        self._start: float | None = None
        self.not_modified = 0

    def update(self) -> None:
        """Change the content: a new version, a new ``ETag`` and ``Last-Modified``."""
        with self._lock:
            self._bump()

    def _bump(self) -> None:
        self._version += 1
        # Last-Modified has one-second resolution: keep each version strictly newer.
        self._modified = max(int(time.time()), self._modified + 1)

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        with self._lock:
            if self._start is None:
                self._start = now
            if self._change_every:
                due = int((now - self._start) // self._change_every) + 1
                while self._version < due:
                    self._bump()
            version, modified = self._version, self._modified
        tag = hashlib.sha256(f"{request.path}\0{version}".encode()).hexdigest()[:16]
        headers = [("Cache-Control", self._cache_control)]
        if self._etag:
            headers.append(("ETag", f'"{tag}"'))
        if self._last_modified:
            headers.append(("Last-Modified", email.utils.formatdate(modified, usegmt=True)))
        if self._matches(request, f'"{tag}"', modified):
            with self._lock:
                self.not_modified += 1
            return Reply(status=304, headers=tuple(headers))
        body = self._body if self._body is not None else f"{request.path} v{version}\n".encode()
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
        return Reply(status=200, body=body, headers=tuple(headers))

    def _matches(self, request: RecordedRequest, tag: str, modified: int) -> bool:
        if request.method not in ("GET", "HEAD"):
            return False
        if_none_match = request.header("If-None-Match")
        if if_none_match is not None:  # RFC 9110 §13.2.2: If-None-Match wins
            if not self._etag:
                return False
            candidates = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return "*" in candidates or tag in candidates
        since = request.header("If-Modified-Since")
        if since is None or not self._last_modified:
            return False
        try:
            parsed = email.utils.parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False  # RFC 9110 §13.1.3: an invalid date is ignored
        return modified <= parsed

    def reset(self) -> None:
        with self._lock:
            self._start = None
            self.not_modified = 0


def _seconds(value: float) -> str:
    return str(max(0, math.ceil(value)))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# -- the server ------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TCPServer

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
    lines = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}"]
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


class _TCPServer(socketserver.ThreadingTCPServer):
    # Not http.server.HTTPServer: its server_bind() does a reverse DNS lookup, which can
    # hang for seconds on a machine without network.
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: FlakyServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class FlakyServer:
    """A scripted HTTP/1.1 server on loopback, for tests (sync, asyncio or trio) and demos.

    Args:
        default: the behaviour of paths with no route (``None``: ``404 Not Found``). This is
            the per-origin behaviour; :meth:`route` sets per-path ones.
        name: a label for reports (``repr``, the demo's tables).
        port: the port to listen on; ``0`` (default) picks a free one.
        clock: where behaviours read the time (anything with ``monotonic()``, e.g.
            ``klayengo._core.clock.FakeClock``); default the real monotonic clock.

    Use it as a context manager (``with`` or ``async with``), or call :meth:`start` and
    :meth:`close`. Behaviours run in the server's threads; delays are real.
    """

    def __init__(
        self,
        default: Behaviour | None = None,
        *,
        name: str = "upstream",
        port: int = 0,
        clock: _Clock | None = None,
    ) -> None:
        self.name = name
        self._default = default
        self._routes: dict[str, Behaviour] = {}
        self._prefixes: list[tuple[str, Behaviour]] = []
        self._requested_port = port
        self._clock: _Clock = clock if clock is not None else _SystemMonotonic()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FlakyServer:
        """Bind and start serving (in a daemon thread). Returns ``self``."""
        if self._server is not None:
            raise RuntimeError(f"{self!r} is already started")
        self._stopping.clear()
        server = _TCPServer((LOOPBACK, self._requested_port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"klayengo-testing-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close every open connection. Idempotent.

        Connections to the port are then refused; :meth:`start` serves again on the same
        port (an origin that went away and came back), with the routes and records kept.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._requested_port = int(server.server_address[1])
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FlakyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> FlakyServer:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import anyio.to_thread

        # Joining the accept thread takes up to one poll interval: not on the event loop.
        await anyio.to_thread.run_sync(self.close)

    # -- addresses ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError(f"{self!r} is not started")
        return int(self._server.server_address[1])

    @property
    def host_key(self) -> str:
        """klayengo's name for this origin (``"127.0.0.1:PORT"``), as in metrics labels,
        ``breaker_state()`` and ``hosts=`` patterns."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        """``"http://127.0.0.1:PORT"``."""
        return f"http://{self.host_key}"

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    # -- behaviours --------------------------------------------------------------------
    def route(self, path: str, behaviour: Behaviour) -> Behaviour:
        """Answer ``path`` (exact, query ignored) with ``behaviour``; a path ending in ``*``
        matches every path with that prefix (the longest prefix wins). Returns the behaviour."""
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/', got {path!r}")
        if not isinstance(behaviour, Behaviour):
            raise TypeError(f"route({path!r}): expected a Behaviour, got {behaviour!r}")
        with self._lock:
            if path.endswith("*"):
                prefixes = [p for p in self._prefixes if p[0] != path[:-1]]
                prefixes.append((path[:-1], behaviour))
                prefixes.sort(key=lambda item: len(item[0]), reverse=True)
                self._prefixes = prefixes
            else:
                self._routes[path] = behaviour
        return behaviour

    def _behaviour_for(self, path: str) -> Behaviour | None:
        found = self._routes.get(path)
        if found is not None:
            return found
        for prefix, behaviour in self._prefixes:
            if path.startswith(prefix):
                return behaviour
        return self._default

    def _answer(self, request: RecordedRequest) -> Reply:
        behaviour = self._behaviour_for(request.path)
        if behaviour is None:
            return Reply(status=404, body=b"no route\n")
        try:
            return behaviour.respond(request, self._clock.monotonic())
        except Exception as exc:  # a broken custom behaviour must not hang the client
            return Reply(status=500, body=f"behaviour failed: {exc!r}\n".encode())

    # -- inspection --------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far (answered or not yet), oldest first."""
        with self._lock:
            return list(self._requests)

    def count(
        self, path: str | None = None, *, method: str | None = None, status: int | None = None
    ) -> int:
        """How many requests matched ``path`` (exact), ``method`` and the answered ``status``
        (each ``None``: any)."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path)
            and (method is None or r.method == method.upper())
            and (status is None or r.status == status)
        )

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Forget the recorded requests and start every behaviour over."""
        self.clear()
        with self._lock:
            behaviours = [*self._routes.values(), *(b for _, b in self._prefixes)]
        if self._default is not None:
            behaviours.append(self._default)
        for behaviour in behaviours:
            behaviour._reset_tree()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answered(self, request: RecordedRequest, status: int) -> None:
        with self._lock:
            request.status = status

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def __repr__(self) -> str:
        where = f"port {self.port}" if self._server is not None else "stopped"
        return f"<FlakyServer {self.name!r} {where}>"


class Upstream:
    """Several :class:`FlakyServer` origins, one port each, started and closed together.

    Usage::

        with Upstream({"healthy": Healthy(), "flaky": Down(2.0)}) as upstream:
            upstream["flaky"].url("/"), upstream.names()

    Args:
        defaults: ``{name: behaviour}``, the per-origin behaviour of each server
            (``None``: only routes added later answer).
    """

    def __init__(self, defaults: Mapping[str, Behaviour | None]) -> None:
        self.defaults = dict(defaults)
        self.servers: dict[str, FlakyServer] = {}

    def start(self) -> Upstream:
        """Start every origin. Returns ``self``."""
        try:
            for name, behaviour in self.defaults.items():
                self.servers[name] = FlakyServer(behaviour, name=name).start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close every origin."""
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.close()

    def __getitem__(self, name: str) -> FlakyServer:
        return self.servers[name]

    def __iter__(self) -> Iterator[FlakyServer]:
        return iter(self.servers.values())

    def names(self) -> list[str]:
        """The origins' names, in order."""
        return list(self.servers)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Upstream:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close)
