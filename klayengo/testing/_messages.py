"""What the server and the behaviours exchange: the request as received, the reply
to send."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["RecordedRequest", "Reply", "phrase"]


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


def phrase(status: int) -> str:
    """The reason phrase of ``status`` (``"Unknown"`` for an unregistered code)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
