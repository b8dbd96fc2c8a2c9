"""Serving ``/metrics``: a small HTTP server, or an ASGI app to mount in your own.

Both serve the Prometheus text format of a registry (prometheus_client's default
``REGISTRY`` unless told otherwise), with every klayengo client's series in it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_METRICS_ADDR", "MetricsServer", "metrics_asgi_app", "serve_metrics"]

#: Where :func:`serve_metrics` listens unless told otherwise: loopback only, so metrics
#: are not exposed to the network by accident.
DEFAULT_METRICS_ADDR: Final = "127.0.0.1"
#: Seconds :meth:`MetricsServer.stop` waits for the serving thread to end.
STOP_TIMEOUT: Final = 5.0

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
    """Serve ``/metrics`` over HTTP from a daemon thread (prometheus_client's server).

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
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=addr, registry=_registry(registry))
    return MetricsServer(server, thread)


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the Prometheus text format, to mount in an existing server.

    Usage (Starlette)::

        app.mount("/metrics", klayengo.metrics_asgi_app())

    It answers every HTTP path it receives and handles the ``lifespan`` protocol, so it
    also runs on its own (``uvicorn`` with ``lifespan="auto"`` starts it quietly).

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

        async def drained() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await inner(scope, drained, send)

    return app
