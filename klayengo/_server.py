"""Serving ``/metrics``: a small HTTP server, or an ASGI app to mount in your own.

Both serve a registry (prometheus_client's default ``REGISTRY`` unless told otherwise),
with every klayengo client's series in it, through prometheus_client's own apps, so
they negotiate the format as it does: the OpenMetrics text format when the scraper's
``Accept`` asks for ``application/openmetrics-text`` (Prometheus does), else the
Prometheus text format; gzip when ``Accept-Encoding`` allows it; ``?name[]=`` filters.

Paths (a documented decision): ``/metrics`` and ``/`` answer; anything else is
``404 Not Found``, so a typo in a scrape config shows up as a failing target instead
of silently scraping the metrics under a wrong path. The ASGI app judges the path
relative to where it is mounted (``root_path``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "METRICS_PATHS",
    "MetricsServer",
    "metrics_asgi_app",
    "serve_metrics",
]

#: Where :func:`serve_metrics` listens unless told otherwise: loopback only, so metrics
#: are not exposed to the network by accident.
DEFAULT_METRICS_ADDR: Final = "127.0.0.1"
#: Seconds :meth:`MetricsServer.stop` waits for the serving thread to end.
STOP_TIMEOUT: Final = 5.0
#: How often (seconds) the serving loop checks whether it must stop.
_POLL_INTERVAL: Final = 0.1
#: Seconds a connection may sit idle before it is dropped, so a client that connects
#: and sends nothing does not hold a thread for ever.
CONNECTION_TIMEOUT: Final = 30.0
#: The paths that serve the metrics; every other path is ``404 Not Found``.
METRICS_PATHS: Final = frozenset({"/metrics", "/"})
_NOT_FOUND_BODY: Final = b"404 Not Found: the metrics are at /metrics\n"
_NOT_FOUND_HEADERS: Final = (("Content-Type", "text/plain; charset=utf-8"),)

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    from prometheus_client import REGISTRY, CollectorRegistry

    if registry is None:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            f"registry must be a prometheus_client.CollectorRegistry or None, got {registry!r}"
        )
    return registry


_Environ = dict[str, Any]
_StartResponse = Callable[..., Any]
_WSGIApp = Callable[[_Environ, _StartResponse], Iterable[bytes]]


def _wsgi_app(registry: CollectorRegistry) -> _WSGIApp:
    """prometheus_client's WSGI app (format negotiation, gzip, ``name[]``), on
    :data:`METRICS_PATHS` only."""
    from prometheus_client import make_wsgi_app

    inner = make_wsgi_app(registry)

    def app(environ: _Environ, start_response: _StartResponse) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "/") not in METRICS_PATHS:
            start_response("404 Not Found", list(_NOT_FOUND_HEADERS))
            return [_NOT_FOUND_BODY]
        result: Iterable[bytes] = inner(environ, start_response)
        return result

    return app


class _QuietHandler(WSGIRequestHandler):
    """Logs nothing: a scrape every few seconds is not news (stderr stays clean)."""

    timeout = CONNECTION_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server_class(family: socket.AddressFamily) -> type[WSGIServer]:
    class _Server(ThreadingMixIn, WSGIServer):
        # One daemon thread per connection: a stuck scraper never blocks the others
        # or the process's exit.
        daemon_threads = True
        address_family = family

    return _Server


class MetricsServer:
    """A running ``/metrics`` endpoint (see :func:`serve_metrics`).

    Attributes:
        addr: the address it listens on.
        port: the port it is bound to (the one picked when ``port=0`` was asked).
        url: ``http://addr:port/metrics``.
    """

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._stopped = False
        host, port = server.server_address[:2]
        self.addr: str = host
        self.port: int = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/metrics"

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<MetricsServer {self.url} {state}>"

    def stop(self) -> None:
        """Stop serving and free the port; waits for the serving thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()


def serve_metrics(
    port: int, addr: str = DEFAULT_METRICS_ADDR, registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``/metrics`` over HTTP from a daemon thread.

    ``/metrics`` (and ``/``) answer with prometheus_client's exposition: OpenMetrics
    when the scraper's ``Accept`` asks for it, else the Prometheus text format; every
    other path is ``404 Not Found``.

    Usage::

        server = klayengo.serve_metrics(9464)      # http://127.0.0.1:9464/metrics
        ...
        server.stop()

    Args:
        port: the TCP port; ``0`` picks a free one (read it back from ``.port``).
        addr: the address to listen on; default loopback only. ``"0.0.0.0"`` or ``"::"``
            expose it to the network.
        registry: the ``CollectorRegistry`` to serve; default prometheus_client's
            ``REGISTRY`` (where ``metrics=True`` clients report).

    Returns:
        A :class:`MetricsServer` with ``.port``, ``.url`` and ``.stop()`` (also a
        context manager).

    Raises:
        ValueError: ``port`` is out of range. ``OSError``: the address cannot be bound.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise TypeError(f"addr must be a non-empty str, got {addr!r}")
    app = _wsgi_app(_registry(registry))
    # The family of the address asked for (an IPv6 literal needs AF_INET6).
    family, _, _, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server = make_server(
        str(sockaddr[0]), port, app, _server_class(family), handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name="klayengo-metrics",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the metrics, to mount in an existing server.

    Usage (Starlette)::

        app.mount("/metrics", klayengo.metrics_asgi_app())

    It answers the path it is mounted at (``/metrics`` above, with or without a
    trailing slash) and, run on its own, ``/metrics`` and ``/``; every other path is
    ``404 Not Found``. Like :func:`serve_metrics` it serves OpenMetrics when the
    scraper's ``Accept`` asks for it. It handles the ``lifespan`` protocol, so it also
    runs on its own (``uvicorn`` with ``lifespan="auto"`` starts it quietly).

    Args:
        registry: the ``CollectorRegistry`` to serve; default prometheus_client's
            ``REGISTRY``.
    """
    from prometheus_client import make_asgi_app

    inner = make_asgi_app(_registry(registry))

    async def app(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope.get("type") == "lifespan":
            # Nothing to start or stop; acknowledge so servers don't log a failure.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") != "http":
            raise ValueError(f"metrics_asgi_app serves HTTP only, got a {scope.get('type')!r}")
        # Read the whole request body first (a scrape has none): prometheus_client's
        # app receives once and would leave a streamed body half read.
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if message["type"] == "http.disconnect":
            return
        if _relative_path(scope) not in _ASGI_PATHS:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in _NOT_FOUND_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": _NOT_FOUND_BODY})
            return

        async def drained() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await inner(scope, drained, send)

    return app


#: The paths the ASGI app serves, relative to where it is mounted: the mount point
#: itself (``""`` or ``"/"``) and, when it runs on its own, ``/metrics``.
_ASGI_PATHS: Final = frozenset({"", *METRICS_PATHS})


def _relative_path(scope: _Scope) -> str:
    """The request's path below the app's mount point.

    Servers and frameworks that follow the ASGI spec keep the mount point in ``path``
    and name it in ``root_path`` (recent Starlette, asgiref); older ones strip it from
    ``path``. Both shapes give the same answer here.
    """
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :]
    return path
