""":class:`FlakyServer`: one scripted origin on loopback, its routes and its records."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Final, Protocol

from ._behaviours import Behaviour
from ._handler import TCPServer
from ._messages import RecordedRequest, Reply

__all__ = ["LOOPBACK", "FlakyServer"]

#: The interface every server listens on: loopback only, never reachable from outside.
LOOPBACK: Final = "127.0.0.1"
#: Seconds ``close()`` waits for the accept loop to notice it must stop.
_POLL_INTERVAL: Final = 0.05


class _Clock(Protocol):
    def monotonic(self) -> float: ...


class _SystemMonotonic:
    monotonic = staticmethod(time.monotonic)


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
        self._server: TCPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FlakyServer:
        """Bind and start serving (in a daemon thread). Returns ``self``."""
        if self._server is not None:
            raise RuntimeError(f"{self!r} is already started")
        self._stopping.clear()
        server = TCPServer((LOOPBACK, self._requested_port), self)
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
