"""RetryTransport / AsyncRetryTransport: the I/O half of the retry layer.

The decisions (what is retried, how long to wait, the deadline, the budget) live in
:mod:`klayengo._core.retry`; the twins here send, close, sleep and rewind. Between
two attempts a failed response is closed before the sleep starts, after reading its
body when it announces at most :data:`DRAIN_LIMIT` bytes (so that connection is
reused); nothing is ever left checked out of the pool.

Retries happen inside ``handle_request``, below httpx's client: redirects, auth and
cookies are applied once, by the client, around the whole retried call. Attempts
after the first report ``attempt`` numbers from 2 in ``Events.retry``.

Usage on its own, with a plain httpx client::

    client = httpx.Client(transport=klayengo.RetryTransport(httpx.HTTPTransport()))
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, Final

from ..._context import LayerContext
from ..._core.hosts import host_key
from ..._core.options import EXTENSION_KEY, RequestOptions, request_options
from ..._core.report import report
from ..._core.retry import (
    Decision,
    RandomSource,
    RetryBudgets,
    RetryState,
    on_error,
    on_response,
)
from ..._policies import HostPolicy, RetryPolicy
from .. import _content, _multipart, httpx
from ._layer import SyncLayer
from ._pipeline import AsyncPipeline

__all__ = ["DRAIN_LIMIT", "AsyncRetryTransport", "RetryTransport"]

_log = logging.getLogger("klayengo")

#: A failed response whose ``Content-Length`` is at most this many bytes is read
#: before it is closed, so its HTTP/1.1 connection goes back to the pool for reuse. A
#: larger or unannounced body is closed unread: httpcore then drops that connection,
#: which leaks nothing and is far cheaper than downloading megabytes to discard them.
DRAIN_LIMIT: Final = 64 * 1024

#: The key of the per-client budget registry in ``LayerContext.shared``.
_BUDGETS_KEY: Final = "retry.budgets"


class _Body:
    """Whether a request body can be sent again, and how to rewind it.

    - ``bytes``/``str``/form/JSON bodies (``httpx.ByteStream``): replayable as is;
    - multipart (``MultipartStream``): httpx seeks every file back to 0 itself, so it
      is replayable when each file is bytes or a seekable file;
    - ``content=`` a list or tuple of chunks: replayable (iterated again);
    - ``content=`` a seekable file: replayable after seeking back to where it was;
    - anything else (generators, iterators, async iterables, pipes, unknown stream
      types): sent once, never retried.
    """

    __slots__ = ("_file", "_position", "replayable")

    def __init__(self, stream: object) -> None:
        self._file: Any = None
        self._position = 0
        self.replayable = self._inspect(stream)

    def _inspect(self, stream: object) -> bool:
        if isinstance(stream, httpx.ByteStream):
            return True
        if isinstance(stream, _multipart.MultipartStream):
            return all(
                not isinstance(f, _multipart.FileField)
                or isinstance(f.file, bytes | str)
                or _seekable(f.file)
                for f in stream.fields
            )
        if isinstance(stream, _content.IteratorByteStream):
            # httpx keeps what the user passed as ``content=`` in ``_stream``.
            content = getattr(stream, "_stream", None)
            if isinstance(content, list | tuple):
                return True
            if hasattr(content, "read") and _seekable(content):
                try:
                    self._position = content.tell()  # type: ignore[union-attr]
                except (OSError, ValueError, AttributeError):
                    return False
                self._file = content
                return True
        return False

    def rewind(self) -> bool:
        """Seek a file body back to its start; False if that failed (do not resend)."""
        if self._file is None:
            return True
        try:
            self._file.seek(self._position)
        except (OSError, ValueError):
            return False
        return True


#: The rewind of every ``httpx.ByteStream`` body: nothing to do, always replayable.
_IN_MEMORY: Final = _Body(httpx.ByteStream(b""))


def _seekable(file: object) -> bool:
    try:
        check = getattr(file, "seekable", None)
        return bool(check()) if callable(check) else hasattr(file, "seek")
    except (OSError, ValueError):
        return False


def _drainable(response: httpx.Response, request: httpx.Request) -> bool:
    """Read the failed body before closing it? Only when it is known to be small.

    A body without a ``Content-Length`` (chunked, or delimited by the connection
    closing) is closed unread: reading "up to a limit" would mean abandoning an async
    generator half-way, which trio rightly reports as a resource leak.
    """
    if request.method == "HEAD" or response.status_code in (204, 304):
        return True  # no body, whatever Content-Length says
    length = response.headers.get("Content-Length")
    if length is None:
        return False
    try:
        return int(length) <= DRAIN_LIMIT
    except ValueError:
        return False


def _wait_of(response: httpx.Response) -> float:
    found = response.extensions.get(EXTENSION_KEY)
    if isinstance(found, dict):
        wait = found.get("wait", 0.0)
        if isinstance(wait, int | float):
            return float(wait)
    return 0.0


def _discard(response: httpx.Response, request: httpx.Request) -> None:
    """Drain a small failed body (so its connection can be reused), then close it."""
    try:
        if _drainable(response, request):
            for _ in response.iter_raw():
                pass
    except (httpx.HTTPError, RuntimeError):  # a broken body: closing is all we can do
        pass
    finally:
        try:
            response.close()
        except (httpx.HTTPError, RuntimeError):
            _log.debug("klayengo retry: closing a failed response raised", exc_info=True)


async def _adiscard(response: httpx.Response, request: httpx.Request) -> None:
    """The async twin of :func:`_discard`."""
    try:
        if _drainable(response, request):
            async for _ in response.aiter_raw():
                pass
    except (httpx.HTTPError, RuntimeError):
        pass
    finally:
        try:
            await response.aclose()
        except (httpx.HTTPError, RuntimeError):
            _log.debug("klayengo retry: closing a failed response raised", exc_info=True)


def _standalone(policy: RetryPolicy | None, hosts: Mapping[str, HostPolicy] | None) -> LayerContext:
    """The context of a layer used on its own: ``RetryPolicy()`` unless told otherwise."""
    return LayerContext.standalone(retry=policy or RetryPolicy(), hosts=hosts)


#: What a call needs to decide on a retry: its policy, options, host key, start time
#: and body rewind. The twins unpack it into locals and build a :class:`_Call` only
#: when a first attempt fails: an object per call would be one more object held by
#: every request in flight (and counted by every collection).
_Begun = tuple[RetryPolicy, RequestOptions, str, float, _Body]


class _Call:
    """A call that failed once: the I/O shell's handle on the immutable core state."""

    __slots__ = ("body", "host", "options", "policy", "request", "started", "state")

    def __init__(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        options: RequestOptions,
        host: str,
        started: float,
        body: _Body,
    ) -> None:
        self.request = request
        self.policy = policy
        self.options = options
        self.host = host
        self.started = started
        self.body = body
        self.state: RetryState | None = None

    def current(self) -> RetryState:
        if self.state is None:
            self.state = RetryState.start(
                self.policy,
                self.request,
                now=self.started,
                replayable=self.body.replayable,
                max_retries=self.options.max_retries,
                deadline=self.options.deadline,
            )
        return self.state


class _Retrier:
    """The non-I/O half shared by the twins: policy, state, budget, events, logs."""

    _context: LayerContext
    # For the async driver (klayengo._transports._pipeline), which cannot import them.
    _call = _Call
    _wait_of = staticmethod(_wait_of)
    _adiscard = staticmethod(_adiscard)

    def _setup(self, rand: RandomSource | None) -> None:
        self._rand: RandomSource = rand if rand is not None else random.random
        self._budgets = self._context.shared(_BUDGETS_KEY, RetryBudgets)

    def _begin(self, request: httpx.Request) -> _Begun | None:
        """What a new call needs, or None when retrying is off for it."""
        options = request_options(request)
        if options.retry is None:
            return None
        if isinstance(options.retry, RetryPolicy):
            policy: RetryPolicy | None = options.retry
        else:
            policy = self._context.resolver.resolve(request.url).retry
        if policy is None:
            return None
        host = host_key(request.url)
        now = self._context.clock.monotonic()
        self._budgets.deposit(host, policy, now)
        stream = request.stream
        # Most bodies are bytes in memory (every GET's is empty): share one answer.
        # Any other body is inspected now, before the first attempt reads it.
        body = _IN_MEMORY if type(stream) is httpx.ByteStream else _Body(stream)
        return policy, options, host, now, body

    def _after_response(self, call: _Call, response: httpx.Response) -> float | None:
        """Seconds to sleep before the next attempt, or None to return ``response``
        (whose status is one of the policy's ``retry_statuses``)."""
        status = response.status_code
        clock = self._context.clock
        decision = on_response(
            call.current(),
            status,
            response.headers.get("Retry-After"),
            now=clock.monotonic(),
            wall=clock.wall(),
            rand=self._rand,
        )
        return self._admit(call, decision, status=status, error=None)

    def _after_error(self, call: _Call, exc: Exception) -> float | None:
        """Seconds to sleep before the next attempt, or None to re-raise ``exc``."""
        now = self._context.clock.monotonic()
        decision = on_error(call.current(), exc, now=now, rand=self._rand)
        return self._admit(call, decision, status=None, error=type(exc).__name__)

    def _admit(
        self, call: _Call, decision: Decision, *, status: int | None, error: str | None
    ) -> float | None:
        """Check the budget and rewind the body; on success advance the call's state."""
        state, host = call.current(), call.host
        debug = _log.isEnabledFor(logging.DEBUG)
        if not decision.retry:
            if debug and decision.reason is not None:
                _log.debug(
                    "klayengo retry: not retrying %s after attempt %d (%s): %s",
                    host,
                    state.attempts,
                    decision.reason,
                    decision.why,
                )
            return None
        assert decision.reason is not None
        if not self._budgets.try_withdraw(host, state.policy, self._context.clock.monotonic()):
            self._context.events.retry_budget_exhausted(host)
            if debug:
                _log.debug("klayengo retry: budget of %s exhausted, not retrying", host)
            return None
        if not call.body.rewind():
            if debug:
                _log.debug("klayengo retry: cannot rewind the body to %s, not retrying", host)
            return None
        attempt = state.attempts + 1
        self._context.events.retry(host, decision.reason, attempt, decision.delay)
        if debug:
            _log.debug(
                "klayengo retry: %s attempt %d in %.3f s (reason %s)",
                host,
                attempt,
                decision.delay,
                decision.reason,
                extra={
                    "klayengo_host": host,
                    "klayengo_attempt": attempt,
                    "klayengo_reason": decision.reason,
                    "klayengo_delay": decision.delay,
                },
            )
        call.state = state.increment(decision, status=status, error=error)
        return decision.delay

    @staticmethod
    def _finish(response: httpx.Response, call: _Call | None, waited: float) -> httpx.Response:
        found = report(response)
        found["attempts"] = 1 if call is None or call.state is None else call.state.attempts
        if waited:
            found["wait"] = waited + _wait_of(response)
        return response


class RetryTransport(_Retrier, SyncLayer):
    """Retries failed requests with backoff, Retry-After, a deadline and a budget.

    Args:
        transport: the transport to wrap.
        policy: the retry policy. Default ``RetryPolicy()``.
        hosts: per-host overrides (``{pattern: HostPolicy(retry=...)}``).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
        _random: RandomSource | None = None,
    ) -> None:
        super().__init__(transport, _context or _standalone(policy, hosts))
        self._setup(_random)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        begun = self._begin(request)
        if begun is None:
            return self._finish(self._next.handle_request(request), None, 0.0)
        policy, options, host, started, body = begun
        del begun  # a request in flight holds these locals, not one more object
        call: _Call | None = None  # built when an attempt fails
        waited = 0.0
        while True:
            try:
                response = self._next.handle_request(request)
            except httpx.TransportError as exc:
                if call is None:
                    call = _Call(request, policy, options, host, started, body)
                delay = self._after_error(call, exc)
                if delay is None:
                    raise
            else:
                if response.status_code not in policy.retry_statuses:
                    return self._finish(response, call, waited)  # no clock, no header read
                if call is None:
                    call = _Call(request, policy, options, host, started, body)
                delay = self._after_response(call, response)
                if delay is None:
                    return self._finish(response, call, waited)
                waited += _wait_of(response)
                _discard(response, request)
            # Outside the except block: the sleep must not chain onto the old error.
            self._context.sleep(delay)


class AsyncRetryTransport(_Retrier, AsyncPipeline):
    """The async twin of :class:`RetryTransport` (asyncio and trio; sleeps are cancellable).

    Its request path is :class:`~klayengo._transports._pipeline.AsyncPipeline`'s, with
    this layer as its only part.

    Args:
        transport: the transport to wrap.
        policy: the retry policy. Default ``RetryPolicy()``.
        hosts: per-host overrides (``{pattern: HostPolicy(retry=...)}``).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: RetryPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
        _random: RandomSource | None = None,
    ) -> None:
        super().__init__(transport, _context or _standalone(policy, hosts))
        self._setup(_random)
        self._retrier = self
