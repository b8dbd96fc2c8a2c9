"""A cacheable resource: validators (``ETag``, ``Last-Modified``), freshness and
``304 Not Modified`` answers to conditional requests."""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time

from ._behaviours import Behaviour, whole_seconds
from ._messages import RecordedRequest, Reply

__all__ = ["Cacheable"]


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
            cache_control if cache_control is not None else f"max-age={whole_seconds(max_age)}"
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
