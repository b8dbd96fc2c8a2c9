"""Behaviours: how a route answers. Plain ones, scripts, and time-based ones whose
clock starts at the first request they see (:class:`~._cacheable.Cacheable` has a
module of its own)."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Final

from ._messages import RecordedRequest, Reply, phrase

__all__ = [
    "DEFAULT_FAIL_STATUS",
    "Behaviour",
    "Down",
    "Fail",
    "FailTimes",
    "Healthy",
    "Intermittent",
    "Phases",
    "RateLimited",
    "Script",
    "Slow",
    "whole_seconds",
]

#: Default status of a failing behaviour.
DEFAULT_FAIL_STATUS: Final = 503


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
            value = retry_after if isinstance(retry_after, str) else whole_seconds(retry_after)
            headers.append(("Retry-After", value))
        text = body if body is not None else f"{status} {phrase(status)}\n".encode()
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


def whole_seconds(value: float) -> str:
    """``value`` seconds as a header's whole seconds (rounded up, never negative)."""
    return str(max(0, math.ceil(value)))
