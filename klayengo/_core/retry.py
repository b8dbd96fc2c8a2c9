"""Retry decisions: immutable per-request state, backoff, Retry-After, deadline, budget.

Sans-I/O. The transports own the sending, the sleeping and the closing; this module
only answers "retry this, after how long?" as a function of ``(state, outcome, now)``.

- :class:`RetryState` is the per-request state, immutable in the manner of urllib3's
  ``Retry``: :meth:`RetryState.increment` returns a new state with one more attempt
  and one more :class:`RetryRecord` in its history, so a state can be shared and
  inspected freely.
- :func:`on_response` and :func:`on_error` judge the outcome of one attempt and return
  a :class:`Decision`.
- :func:`backoff` is exponential backoff with full jitter, the random source injected.
- :class:`RetryBudgets` is the per-host retry budget (Finagle-style): over a sliding
  window, ``retries <= budget_ratio * requests + budget_min_per_second * budget_window``.

Which failures are retried (RFC 9110 §9.2.2 for idempotency):

=================================================  ============  ========================
failure                                            reason        retried for
=================================================  ============  ========================
status in ``retry_statuses``                       ``status``    retryable requests
``ConnectError``                                   ``connect``   every request
``ConnectTimeout``, ``PoolTimeout``                ``timeout``   every request
``ReadTimeout``, ``WriteTimeout``                  ``timeout``   retryable requests
``ReadError``, ``WriteError``, ``CloseError``,     ``network``   retryable requests
``RemoteProtocolError``
``CircuitOpenError`` / ``RateLimitExceeded``       ``connect``   every request, only with
                                                                 ``retry_on_circuit_open`` /
                                                                 ``retry_on_rate_limited``
anything else (``LocalProtocolError``, ...)        --            never
=================================================  ============  ========================

A *retryable request* has an idempotent method (``policy.methods``), or carries the
policy's ``idempotency_header``, or its policy sets ``retry_non_idempotent``. The
connect-phase failures are retried for every method because nothing was sent; a read
timeout on any other request is never retried, as the server may have applied it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from .._policies import UNSET, RetryPolicy, _Unset
from .errors import error_names

if TYPE_CHECKING:
    from .._flavour import httpx
from .headers import parse_retry_after

__all__ = [
    "BUDGET_SLOTS",
    "DEFAULT_BUDGET_MAX_HOSTS",
    "Decision",
    "RandomSource",
    "Reason",
    "RetryBudget",
    "RetryBudgets",
    "RetryRecord",
    "RetryState",
    "backoff",
    "classify_error",
    "is_retryable_request",
    "on_error",
    "on_response",
]

#: Why an attempt failed, as reported to events and the ``reason`` metrics label.
Reason = Literal["status", "connect", "timeout", "network"]

#: A source of uniform floats in ``[0, 1)`` (``random.random``; tests inject their own).
RandomSource = Callable[[], float]

#: The budget window is split into this many slots (as Finagle's ``WindowedAdder``):
#: counts expire a slot at a time, so memory per host is constant.
BUDGET_SLOTS: Final = 10
#: Hosts whose budget is kept per client; the least recently used one is dropped first.
DEFAULT_BUDGET_MAX_HOSTS: Final = 1000
#: Slack for float rounding in ``ratio * requests`` (0.2 * 5 is 1.0000000000000002).
_EPSILON: Final = 1e-9

# Failures where the request never left the client: safe to retry for every method.
_NOT_SENT: Final[tuple[tuple[str, Reason], ...]] = (
    ("ConnectTimeout", "timeout"),
    ("PoolTimeout", "timeout"),
    ("ConnectError", "connect"),
)
# Failures after (part of) the request may have been sent: retryable requests only.
_MAYBE_SENT: Final[tuple[tuple[str, Reason], ...]] = (
    ("ReadTimeout", "timeout"),
    ("WriteTimeout", "timeout"),
    ("ReadError", "network"),
    ("WriteError", "network"),
    ("CloseError", "network"),
    ("RemoteProtocolError", "network"),
)


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """One failed attempt that was retried.

    Attributes:
        attempt: the number of the failed attempt (1 is the first request).
        reason: why it failed.
        status: the response status, or None when it raised.
        error: the exception's type name, or None for a response.
        delay: seconds slept before the next attempt.
    """

    attempt: int
    reason: Reason
    status: int | None
    error: str | None
    delay: float


@dataclass(frozen=True, slots=True)
class RetryState:
    """The retry state of one request. Immutable: :meth:`increment` returns a new one.

    Attributes:
        policy: the policy in force for this request.
        max_retries: retries allowed (the policy's, or the per-request override).
        deadline_at: the monotonic time past which no attempt starts, or None.
        retryable: the request may be retried after it was (possibly) sent: an
            idempotent method, an idempotency key, or ``retry_non_idempotent``.
        replayable: the request body can be sent again identically.
        attempts: attempts made so far, including the one being judged.
        history: the retried failures, oldest first.
    """

    policy: RetryPolicy
    max_retries: int
    deadline_at: float | None
    retryable: bool
    replayable: bool
    attempts: int = 1
    history: tuple[RetryRecord, ...] = field(default=())

    @classmethod
    def start(
        cls,
        policy: RetryPolicy,
        request: httpx.Request,
        *,
        now: float,
        replayable: bool,
        max_retries: int | None = None,
        deadline: float | _Unset | None = UNSET,
    ) -> RetryState:
        """The state before the first attempt of ``request``.

        Args:
            policy: the policy in force.
            request: the request (its method and headers decide retryability).
            now: the monotonic time the call started.
            replayable: whether the body can be sent again (see the transports).
            max_retries: a per-request override of ``policy.max_retries``.
            deadline: a per-request override of ``policy.deadline`` (``UNSET``: the
                policy's; ``None``: no deadline).
        """
        limit = policy.deadline if deadline is UNSET else deadline
        return cls(
            policy=policy,
            max_retries=policy.max_retries if max_retries is None else max_retries,
            deadline_at=None if limit is None else now + limit,
            retryable=is_retryable_request(policy, request),
            replayable=replayable,
        )

    def increment(self, decision: Decision, *, status: int | None, error: str | None) -> RetryState:
        """The state for the next attempt, after ``decision`` chose to retry."""
        assert decision.retry and decision.reason is not None
        record = RetryRecord(self.attempts, decision.reason, status, error, decision.delay)
        return RetryState(
            policy=self.policy,
            max_retries=self.max_retries,
            deadline_at=self.deadline_at,
            retryable=self.retryable,
            replayable=self.replayable,
            attempts=self.attempts + 1,
            history=(*self.history, record),
        )

    @property
    def retries_left(self) -> int:
        return max(0, self.max_retries - (self.attempts - 1))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one attempt.

    Attributes:
        retry: send the request again after ``delay`` seconds.
        reason: why the attempt failed, or None when it did not fail (or the failure is
            not of a retried kind).
        delay: seconds to sleep before the next attempt (0 when not retrying).
        why: a short, log-safe explanation (``"retry"``, ``"success"``, ``"exhausted"``,
            ``"not idempotent"``, ``"body not replayable"``, ``"retry-after too long"``,
            ``"deadline"``, ``"not retried"``).
    """

    retry: bool
    reason: Reason | None
    delay: float
    why: str


_SUCCESS: Final = Decision(False, None, 0.0, "success")
_NOT_RETRIED: Final = Decision(False, None, 0.0, "not retried")


def is_retryable_request(policy: RetryPolicy, request: httpx.Request) -> bool:
    """An idempotent method, an idempotency key, or ``retry_non_idempotent``."""
    if policy.retry_non_idempotent or request.method in policy.methods:
        return True
    header = policy.idempotency_header
    return header is not None and header in request.headers


def backoff(policy: RetryPolicy, retry_number: int, rand: RandomSource) -> float:
    """Seconds to wait before retry number ``retry_number`` (1 is the first retry).

    The ceiling is ``backoff_base * backoff_multiplier ** (retry_number - 1)``, capped
    at ``backoff_max``; with ``jitter`` (full jitter) the wait is uniform in
    ``[0, ceiling]``, otherwise it is the ceiling itself.
    """
    exponent = max(0, retry_number - 1)
    try:
        ceiling = policy.backoff_base * policy.backoff_multiplier**exponent
    except OverflowError:
        ceiling = policy.backoff_max
    ceiling = min(ceiling, policy.backoff_max)
    if not policy.jitter:
        return ceiling
    return min(ceiling, max(0.0, rand() * ceiling))


def classify_error(policy: RetryPolicy, exc: BaseException) -> tuple[Reason, bool] | None:
    """``(reason, sent)`` for a retried kind of failure, or None for one never retried.

    ``sent`` is False when the request certainly never reached the server.
    """
    names = error_names(type(exc))
    if "CircuitOpenError" in names:
        return ("connect", False) if policy.retry_on_circuit_open else None
    if "RateLimitExceeded" in names:
        return ("connect", False) if policy.retry_on_rate_limited else None
    for name, reason in _NOT_SENT:
        if name in names:
            return reason, False
    for name, reason in _MAYBE_SENT:
        if name in names:
            return reason, True
    return None


def _schedule(
    state: RetryState, reason: Reason, hint: float | None, now: float, rand: RandomSource
) -> Decision:
    """The common tail: retries left, replayable body, Retry-After cap, deadline."""
    if state.retries_left <= 0:
        return Decision(False, reason, 0.0, "exhausted")
    if not state.replayable:
        return Decision(False, reason, 0.0, "body not replayable")
    delay = backoff(state.policy, state.attempts, rand)
    if hint is not None:
        if hint > state.policy.max_retry_after:
            return Decision(False, reason, 0.0, "retry-after too long")
        # The server's (or the layer's) hint is a minimum; the jittered backoff on top
        # spreads clients that were all given the same date.
        delay = max(delay, hint)
    if state.deadline_at is not None and now + delay >= state.deadline_at:
        # The next attempt would start at or past the deadline.
        return Decision(False, reason, 0.0, "deadline")
    return Decision(True, reason, delay, "retry")


def on_response(
    state: RetryState,
    status: int,
    retry_after: str | None,
    *,
    now: float,
    wall: float,
    rand: RandomSource,
) -> Decision:
    """Judge a response with ``status`` and the raw ``Retry-After`` header value.

    Args:
        state: the request's state.
        status: the response status code.
        retry_after: the ``Retry-After`` header value, or None.
        now: monotonic time (for the deadline).
        wall: wall time (for an HTTP-date ``Retry-After``).
        rand: the jitter source.
    """
    if status not in state.policy.retry_statuses:
        return _SUCCESS
    if not state.retryable:
        return Decision(False, "status", 0.0, "not idempotent")
    hint = None
    if state.policy.respect_retry_after and retry_after is not None:
        hint = parse_retry_after(retry_after, wall)  # malformed: None, i.e. plain backoff
    return _schedule(state, "status", hint, now, rand)


def on_error(state: RetryState, exc: BaseException, *, now: float, rand: RandomSource) -> Decision:
    """Judge an attempt that raised ``exc``."""
    kind = classify_error(state.policy, exc)
    if kind is None:
        return _NOT_RETRIED
    reason, sent = kind
    if sent and not state.retryable:
        return Decision(False, reason, 0.0, "not idempotent")
    hint = None
    if "ResilienceError" in error_names(type(exc)):
        hint = getattr(exc, "retry_after", None)
    return _schedule(state, reason, hint, now, rand)


class RetryBudget:
    """One host's retry budget over a sliding window of :data:`BUDGET_SLOTS` slots.

    The window is the current slot and the ``BUDGET_SLOTS - 1`` before it. A retry is
    allowed when, counting it, the retries in the window stay within
    ``ratio * requests_in_window + min_per_second * window``. Not thread-safe on its
    own: :class:`RetryBudgets` holds the lock.
    """

    __slots__ = ("_requests", "_retries", "_slot", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._slot = [-1] * BUDGET_SLOTS
        self._requests = [0] * BUDGET_SLOTS
        self._retries = [0] * BUDGET_SLOTS

    def _current(self, now: float) -> int:
        """Index of the current slot, cleared if it last held an expired slot."""
        absolute = math.floor(now * BUDGET_SLOTS / self.window)
        index = absolute % BUDGET_SLOTS
        if self._slot[index] != absolute:
            self._slot[index] = absolute
            self._requests[index] = 0
            self._retries[index] = 0
        return index

    def _totals(self, now: float) -> tuple[int, int]:
        newest = math.floor(now * BUDGET_SLOTS / self.window)
        requests = retries = 0
        for index in range(BUDGET_SLOTS):
            if newest - BUDGET_SLOTS < self._slot[index] <= newest:
                requests += self._requests[index]
                retries += self._retries[index]
        return requests, retries

    def deposit(self, now: float) -> None:
        """Count one request."""
        self._requests[self._current(now)] += 1

    def try_withdraw(self, now: float, ratio: float, min_per_second: float) -> bool:
        """Count one retry if the budget allows it; False (and nothing counted) if not."""
        index = self._current(now)
        requests, retries = self._totals(now)
        allowed = ratio * requests + min_per_second * self.window
        if retries + 1 > allowed + _EPSILON:
            return False
        self._retries[index] += 1
        return True


class RetryBudgets:
    """The per-host retry budgets of one client, bounded to ``max_hosts`` hosts.

    Past the bound the least recently used host's budget is dropped: memory stays
    bounded under host churn, and a dropped host simply starts over with a fresh
    budget. Thread-safe; the lock is held only for the arithmetic.
    """

    __slots__ = ("_budgets", "_lock", "max_hosts")

    def __init__(self, max_hosts: int = DEFAULT_BUDGET_MAX_HOSTS) -> None:
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts!r}")
        self.max_hosts = max_hosts
        self._budgets: OrderedDict[str, RetryBudget] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._budgets)

    def _get(self, host: str, window: float) -> RetryBudget:
        budget = self._budgets.get(host)
        if budget is None or budget.window != window:
            # A different window (a per-request policy) cannot reuse the slots.
            budget = RetryBudget(window)
            self._budgets[host] = budget
            if len(self._budgets) > self.max_hosts:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(host)
        return budget

    def deposit(self, host: str, policy: RetryPolicy, now: float) -> None:
        """Count one request to ``host``."""
        # acquire/release, not `with`: half the lock's cost, on every request.
        self._lock.acquire()
        try:
            self._get(host, policy.budget_window).deposit(now)
        finally:
            self._lock.release()

    def try_withdraw(self, host: str, policy: RetryPolicy, now: float) -> bool:
        """Spend one retry of ``host``'s budget; False when it is exhausted."""
        with self._lock:
            return self._get(host, policy.budget_window).try_withdraw(
                now, policy.budget_ratio, policy.budget_min_per_second
            )
