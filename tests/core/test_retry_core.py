"""The pure retry core: state, classification, backoff, Retry-After, deadline, budget."""

from __future__ import annotations

import dataclasses
import math
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klayengo import CircuitOpenError, RateLimitExceeded, RetryPolicy
from klayengo._core.retry import (
    BUDGET_SLOTS,
    Decision,
    RetryBudget,
    RetryBudgets,
    RetryState,
    backoff,
    classify_error,
    on_error,
    on_response,
)

NOW = 1000.0
WALL = 1_700_000_000.0


def zero() -> float:
    return 0.0


def top() -> float:
    return 0.999999


def start(
    policy: RetryPolicy | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    *,
    replayable: bool = True,
    **kw: object,
) -> RetryState:
    request = httpx.Request(method, "https://api.example/x", headers=headers)
    return RetryState.start(policy or RetryPolicy(), request, now=NOW, replayable=replayable, **kw)  # type: ignore[arg-type]


def respond(
    state: RetryState, status: int, retry_after: str | None = None, *, now: float = NOW
) -> Decision:
    return on_response(state, status, retry_after, now=now, wall=WALL, rand=zero)


# -- state -------------------------------------------------------------------------------


def test_state_is_immutable_and_increment_returns_a_new_state() -> None:
    """increment() leaves the old state untouched and records the retried failure."""
    state = start()
    decision = respond(state, 503)
    assert decision.retry and decision.reason == "status"
    following = state.increment(decision, status=503, error=None)
    assert (state.attempts, state.history) == (1, ())
    assert following.attempts == 2
    assert following.history[0].attempt == 1
    assert following.history[0].status == 503
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.attempts = 5  # type: ignore[misc]


def test_retries_stop_after_max_retries() -> None:
    """urllib3-style chain: max_retries retries, then 'exhausted'."""
    state = start(RetryPolicy(max_retries=3))
    for _ in range(3):
        decision = respond(state, 503)
        assert decision.retry
        state = state.increment(decision, status=503, error=None)
    final = respond(state, 503)
    assert (final.retry, final.why) == (False, "exhausted")
    assert state.attempts == 4


def test_per_request_max_retries_and_deadline_overrides() -> None:
    state = start(RetryPolicy(max_retries=5, deadline=30.0), max_retries=0, deadline=None)
    assert state.max_retries == 0 and state.deadline_at is None
    assert respond(state, 503).why == "exhausted"
    assert start(RetryPolicy(deadline=30.0)).deadline_at == NOW + 30.0
    assert start(RetryPolicy(), deadline=2.5).deadline_at == NOW + 2.5


def test_success_and_unlisted_statuses_are_not_retried() -> None:
    state = start()
    for status in (200, 201, 304, 400, 404, 500, 501):
        assert respond(state, status) == Decision(False, None, 0.0, "success")


# -- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "policy", "retried"),
    [
        ("GET", None, RetryPolicy(), True),
        ("HEAD", None, RetryPolicy(), True),
        ("PUT", None, RetryPolicy(), True),
        ("DELETE", None, RetryPolicy(), True),
        ("OPTIONS", None, RetryPolicy(), True),
        ("TRACE", None, RetryPolicy(), True),
        ("POST", None, RetryPolicy(), False),
        ("PATCH", None, RetryPolicy(), False),
        ("POST", {"Idempotency-Key": "k1"}, RetryPolicy(), True),
        ("PATCH", {"idempotency-key": "k1"}, RetryPolicy(), True),
        ("POST", {"X-Request-Id": "k1"}, RetryPolicy(idempotency_header="X-Request-Id"), True),
        ("POST", {"Idempotency-Key": "k1"}, RetryPolicy(idempotency_header=None), False),
        ("POST", None, RetryPolicy(retry_non_idempotent=True), True),
        ("GET", None, RetryPolicy(methods=frozenset({"PUT"})), False),
    ],
)
def test_responses_are_retried_only_for_retryable_requests(
    method: str, headers: dict[str, str] | None, policy: RetryPolicy, retried: bool
) -> None:
    decision = respond(start(policy, method, headers), 503)
    assert decision.retry is retried
    if not retried:
        assert decision.why == "not idempotent"


# -- errors ------------------------------------------------------------------------------

_ERRORS = [
    # (exception, reason, retried for POST, retried for GET)
    (httpx.ConnectError("x"), "connect", True, True),
    (httpx.ConnectTimeout("x"), "timeout", True, True),
    (httpx.PoolTimeout("x"), "timeout", True, True),
    (httpx.ReadTimeout("x"), "timeout", False, True),
    (httpx.WriteTimeout("x"), "timeout", False, True),
    (httpx.ReadError("x"), "network", False, True),
    (httpx.WriteError("x"), "network", False, True),
    (httpx.CloseError("x"), "network", False, True),
    (httpx.RemoteProtocolError("x"), "network", False, True),
    (httpx.LocalProtocolError("x"), None, False, False),
    (httpx.ProxyError("x"), None, False, False),
    (httpx.UnsupportedProtocol("x"), None, False, False),
    (CircuitOpenError("open", host="h", retry_after=1.0), None, False, False),
    (RateLimitExceeded("limited", host="h", retry_after=1.0), None, False, False),
]


@pytest.mark.parametrize(("exc", "reason", "post", "get"), _ERRORS, ids=lambda v: repr(v)[:30])
def test_error_classification(exc: Exception, reason: str | None, post: bool, get: bool) -> None:
    """Connect-phase failures are retried for every method; a read timeout never for POST."""
    for method, expected in (("POST", post), ("GET", get)):
        decision = on_error(start(method=method), exc, now=NOW, rand=zero)
        assert decision.retry is expected, method
        assert decision.reason == reason


def test_read_timeout_on_post_is_retried_with_an_idempotency_key() -> None:
    state = start(method="POST", headers={"Idempotency-Key": "abc"})
    assert on_error(state, httpx.ReadTimeout("x"), now=NOW, rand=zero).retry


def test_non_httpx_errors_are_never_retried() -> None:
    assert classify_error(RetryPolicy(), ValueError("bug")) is None
    assert classify_error(RetryPolicy(), httpx.ConnectError("x")) == ("connect", False)
    assert classify_error(RetryPolicy(), httpx.ReadTimeout("x")) == ("timeout", True)


@pytest.mark.parametrize("kind", [CircuitOpenError, RateLimitExceeded])
def test_resilience_errors_retried_only_on_opt_in_honouring_retry_after(
    kind: type[CircuitOpenError | RateLimitExceeded],
) -> None:
    opt_in = RetryPolicy(
        retry_on_circuit_open=True, retry_on_rate_limited=True, max_retry_after=5.0
    )
    state = start(opt_in, method="POST")  # nothing was sent: every method
    decision = on_error(state, kind("no", host="h", retry_after=2.0), now=NOW, rand=zero)
    assert (decision.retry, decision.delay, decision.reason) == (True, 2.0, "connect")
    too_long = on_error(state, kind("no", host="h", retry_after=6.0), now=NOW, rand=zero)
    assert (too_long.retry, too_long.why) == (False, "retry-after too long")
    unknown = on_error(state, kind("no", host="h"), now=NOW, rand=top)
    assert unknown.retry and 0 < unknown.delay <= opt_in.backoff_base
    assert not on_error(start(), kind("no", host="h"), now=NOW, rand=zero).retry


# -- backoff -----------------------------------------------------------------------------


def test_backoff_ceilings_grow_exponentially_up_to_backoff_max() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_multiplier=3, backoff_max=10, jitter=False)
    assert [backoff(policy, n, zero) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]


def test_full_jitter_is_uniform_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_multiplier=2, backoff_max=100)
    assert backoff(policy, 3, zero) == 0.0
    assert backoff(policy, 3, lambda: 0.5) == 2.0
    assert backoff(policy, 3, top) == pytest.approx(4.0, rel=1e-5)


def test_backoff_does_not_overflow_for_huge_retry_numbers() -> None:
    policy = RetryPolicy(backoff_multiplier=1e300, backoff_max=7.0, jitter=False)
    assert backoff(policy, 10_000, zero) == 7.0


@given(
    base=st.floats(0.001, 5),
    extra=st.floats(0, 50),
    multiplier=st.floats(1, 10),
    retry=st.integers(1, 5000),
    rand=st.floats(0, 1, exclude_max=True),
    jitter=st.booleans(),
)
def test_backoff_is_always_within_zero_and_backoff_max(
    base: float, extra: float, multiplier: float, retry: int, rand: float, jitter: bool
) -> None:
    policy = RetryPolicy(
        backoff_base=base, backoff_max=base + extra, backoff_multiplier=multiplier, jitter=jitter
    )
    delay = backoff(policy, retry, lambda: rand)
    assert 0.0 <= delay <= policy.backoff_max
    assert math.isfinite(delay)
    if not jitter:
        assert delay >= base


# -- Retry-After -------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured_as_a_minimum() -> None:
    assert respond(start(), 503, "3").delay == 3.0
    # The jittered backoff is added on top when it is longer (late retries).
    policy = RetryPolicy(backoff_base=8, backoff_max=8, jitter=False)
    assert respond(start(policy), 429, "3").delay == 8.0


def test_retry_after_http_date_is_measured_on_the_wall_clock() -> None:
    date = formatdate(WALL + 7, usegmt=True)
    assert respond(start(), 503, date).delay == 7.0
    past = formatdate(WALL - 100, usegmt=True)
    assert respond(start(), 503, past).delay == 0.0


def test_retry_after_past_the_cap_returns_the_response() -> None:
    decision = respond(start(RetryPolicy(max_retry_after=10)), 503, "11")
    assert (decision.retry, decision.why) == (False, "retry-after too long")
    assert respond(start(RetryPolicy(max_retry_after=10)), 503, "10").delay == 10.0


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "Mon, 99 Foo 2024", "9" * 40])
def test_malformed_retry_after_falls_back_to_backoff(value: str) -> None:
    policy = RetryPolicy(backoff_base=0.25, jitter=False)
    decision = respond(start(policy), 503, value)
    if value == "9" * 40:  # well-formed but enormous: past the cap
        assert decision.why == "retry-after too long"
    else:
        assert (decision.retry, decision.delay) == (True, 0.25)


def test_retry_after_is_ignored_when_not_respected() -> None:
    policy = RetryPolicy(respect_retry_after=False, backoff_base=0.25, jitter=False)
    assert respond(start(policy), 503, "3000").delay == 0.25


# -- deadline and replay -----------------------------------------------------------------


def test_no_sleep_is_started_that_would_end_at_or_past_the_deadline() -> None:
    policy = RetryPolicy(deadline=2.0, backoff_base=1.0, jitter=False)
    state = start(policy)
    assert respond(state, 503, now=NOW + 0.5).retry  # ends at 1.5 < 2
    assert respond(state, 503, now=NOW + 1.0).why == "deadline"  # would end at 2.0
    assert respond(state, 503, now=NOW + 5.0).why == "deadline"
    assert respond(state, 503, "1.4", now=NOW).retry
    assert respond(state, 503, "2", now=NOW).why == "deadline"


def test_a_non_replayable_body_is_never_retried() -> None:
    state = start(replayable=False)
    assert respond(state, 503).why == "body not replayable"
    assert on_error(state, httpx.ConnectError("x"), now=NOW, rand=zero).why == (
        "body not replayable"
    )


# -- budget ------------------------------------------------------------------------------


def withdraw_all(budget: RetryBudget, now: float, policy: RetryPolicy) -> int:
    granted = 0
    while budget.try_withdraw(now, policy.budget_ratio, policy.budget_min_per_second):
        granted += 1
        assert granted < 10**6
    return granted


def test_budget_formula_at_one_instant() -> None:
    """retries <= ratio * requests + min_per_second * window, exactly."""
    policy = RetryPolicy(budget_ratio=0.2, budget_min_per_second=1.0, budget_window=10.0)
    budget = RetryBudget(policy.budget_window)
    assert withdraw_all(budget, NOW, policy) == 10  # the reserve alone
    for _ in range(55):
        budget.deposit(NOW)
    assert withdraw_all(budget, NOW, policy) == 11  # floor(0.2 * 55 + 10) - 10


def test_budget_ratio_only_and_zero_budget() -> None:
    ratio_only = RetryPolicy(budget_ratio=0.5, budget_min_per_second=0)
    budget = RetryBudget(ratio_only.budget_window)
    for _ in range(4):
        budget.deposit(NOW)
    assert withdraw_all(budget, NOW, ratio_only) == 2
    none = RetryPolicy(budget_ratio=0, budget_min_per_second=0)
    assert withdraw_all(RetryBudget(none.budget_window), NOW, none) == 0


def test_budget_counts_expire_slot_by_slot() -> None:
    policy = RetryPolicy(budget_ratio=1.0, budget_min_per_second=0, budget_window=10.0)
    budget = RetryBudget(policy.budget_window)
    for _ in range(5):
        budget.deposit(NOW)
    assert withdraw_all(budget, NOW, policy) == 5
    slot = policy.budget_window / BUDGET_SLOTS
    # Still inside the window: the 5 retries are still counted, no new requests.
    assert withdraw_all(budget, NOW + policy.budget_window - slot, policy) == 0
    budget.deposit(NOW + policy.budget_window - slot)
    assert withdraw_all(budget, NOW + policy.budget_window - slot, policy) == 1
    # The first slot has left the window: its 5 requests and 5 retries are gone.
    assert withdraw_all(budget, NOW + policy.budget_window, policy) == 0
    for _ in range(3):
        budget.deposit(NOW + policy.budget_window)
    assert withdraw_all(budget, NOW + policy.budget_window, policy) == 3
    # Long idle: everything expired.
    assert withdraw_all(budget, NOW + 1000, policy) == 0


def test_budgets_are_per_host_and_bounded() -> None:
    policy = RetryPolicy(budget_ratio=0, budget_min_per_second=0.1, budget_window=10.0)
    budgets = RetryBudgets(max_hosts=3)
    assert budgets.try_withdraw("a", policy, NOW)
    assert not budgets.try_withdraw("a", policy, NOW)
    assert budgets.try_withdraw("b", policy, NOW)  # another host has its own budget
    for host in ("c", "d", "e"):
        budgets.deposit(host, policy, NOW)
    assert len(budgets) == 3
    # "a" was the least recently used: dropped, so it starts over.
    assert budgets.try_withdraw("a", policy, NOW)
    with pytest.raises(ValueError, match="max_hosts"):
        RetryBudgets(max_hosts=0)


def test_budget_window_change_starts_the_host_over() -> None:
    budgets = RetryBudgets()
    short = RetryPolicy(budget_ratio=0, budget_min_per_second=0.1, budget_window=10.0)
    long = dataclasses.replace(short, budget_window=20.0)
    assert budgets.try_withdraw("a", short, NOW)
    assert not budgets.try_withdraw("a", short, NOW)
    assert budgets.try_withdraw("a", long, NOW)  # 0.1 * 20 = 2 retries, fresh slots
    assert budgets.try_withdraw("a", long, NOW)
    assert not budgets.try_withdraw("a", long, NOW)


@given(
    ops=st.lists(
        st.tuples(st.floats(0, 4, allow_nan=False), st.booleans()), min_size=1, max_size=200
    ),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    reserve=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    window=st.sampled_from([1.0, 2.5, 10.0]),
)
def test_budget_matches_a_reference_model(
    ops: list[tuple[float, bool]], ratio: float, reserve: float, window: float
) -> None:
    """The ring of slots agrees with a plain log of every event and its slot number."""
    budget = RetryBudget(window)
    log: list[tuple[int, bool]] = []  # (absolute slot, is_retry)
    now = NOW
    for step, is_retry in ops:
        now += step
        slot = math.floor(now * BUDGET_SLOTS / window)
        recent = [retry for s, retry in log if slot - BUDGET_SLOTS < s <= slot]
        if not is_retry:
            budget.deposit(now)
            log.append((slot, False))
            continue
        requests, retries = recent.count(False), recent.count(True)
        expected = retries + 1 <= ratio * requests + reserve * window + 1e-9
        assert budget.try_withdraw(now, ratio, reserve) is expected
        if expected:
            log.append((slot, True))
