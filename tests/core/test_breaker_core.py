"""The pure breaker state machine and registry, driven with explicit times."""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayengo import CircuitBreakerPolicy
from klayengo._core.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    WINDOW_BUCKETS,
    Breaker,
    BreakerRegistry,
    Permit,
    Rejection,
    Transition,
)

T0 = 1000.0


def make(**kwargs: object) -> Breaker:
    return Breaker("api.test", CircuitBreakerPolicy(**kwargs), T0)  # type: ignore[arg-type]


def call(breaker: Breaker, now: float, failure: bool, duration: float = 0.0) -> bool:
    permit = breaker.allow(now)
    assert isinstance(permit, Permit), permit
    return breaker.record(permit, failure, now, duration)


def states(breaker: Breaker) -> list[tuple[str, str]]:
    return [(t.old, t.new) for t in breaker.take_transitions()] + [
        (t.old, t.new) for t in breaker.take_transitions(more=True)
    ]


def trip(breaker: Breaker, now: float = T0) -> None:
    while breaker.state == CLOSED:
        call(breaker, now, True)
    assert breaker.state == OPEN


# -- closed: the trip rules --------------------------------------------------------------------
def test_closed_admits_with_one_shared_permit_per_generation() -> None:
    breaker = make()
    first, second = breaker.allow(T0), breaker.allow(T0)
    assert isinstance(first, Permit) and first is second
    assert breaker.in_flight == 2
    breaker.record(first, False, T0)
    breaker.release(second)
    assert breaker.in_flight == 0


def test_no_trip_below_minimum_calls_however_many_fail() -> None:
    breaker = make(minimum_calls=20)
    for _ in range(19):
        assert not call(breaker, T0, True)
    assert breaker.state == CLOSED
    assert breaker.snapshot(T0).failure_rate == 1.0


def test_trips_when_the_failure_rate_reaches_the_threshold() -> None:
    breaker = make(minimum_calls=10, failure_rate_threshold=0.5)
    for _ in range(5):
        call(breaker, T0, False)
    for _ in range(4):
        call(breaker, T0, True)
    assert breaker.state == CLOSED
    assert call(breaker, T0, True)  # 5 of 10: reaches 0.5
    assert breaker.state == OPEN
    assert states(breaker) == [(CLOSED, OPEN)]


def test_a_success_that_reaches_minimum_calls_can_trip() -> None:
    # AutoBreaker only evaluates after a failure; the rate is what matters here.
    breaker = make(minimum_calls=10, failure_rate_threshold=0.5)
    for _ in range(9):
        call(breaker, T0, True)
    assert breaker.state == CLOSED
    assert call(breaker, T0, False)
    assert breaker.state == OPEN


def test_rate_just_below_the_threshold_does_not_trip() -> None:
    breaker = make(minimum_calls=10, failure_rate_threshold=0.5)
    for failure in [True] * 4 + [False] * 6 + [True, False] * 5:
        call(breaker, T0, failure)
    assert breaker.state == CLOSED
    assert breaker.snapshot(T0).failure_rate == pytest.approx(9 / 20)


def test_exact_ratio_trips_despite_float_rounding() -> None:
    # 0.3 * 10 == 3.0000000000000004 > 3: a product comparison would miss this.
    breaker = make(minimum_calls=10, failure_rate_threshold=0.3)
    for failure in [False] * 7 + [True] * 3:
        call(breaker, T0, failure)
    assert breaker.state == OPEN


def test_failures_older_than_the_window_are_forgotten() -> None:
    breaker = make(minimum_calls=10, window=30.0)
    for _ in range(9):
        call(breaker, T0, True)
    # Buckets of window / WINDOW_BUCKETS seconds: a call counts for between
    # window - bucket and window seconds.
    bucket = 30.0 / WINDOW_BUCKETS
    assert breaker.snapshot(T0 + 30.0 - bucket - 0.01).calls == 9
    later = T0 + 30.0 + bucket
    assert breaker.snapshot(later).calls == 0
    call(breaker, later, True)
    assert breaker.state == CLOSED
    assert breaker.snapshot(later).calls == 1


def test_counts_are_a_sliding_window_not_cumulative() -> None:
    # One failure per 10 s for ever: never 10 failures within 30 s.
    breaker = make(minimum_calls=10, window=30.0)
    for i in range(100):
        call(breaker, T0 + 10.0 * i, True)
    assert breaker.state == CLOSED
    assert breaker.snapshot(T0 + 990.0).calls <= 4


def test_window_slides_bucket_by_bucket() -> None:
    breaker = make(minimum_calls=100, window=10.0)  # buckets of 1 s
    for second in range(10):
        call(breaker, T0 + second + 0.5, True)
    assert breaker.snapshot(T0 + 9.5).failures == 10
    assert breaker.snapshot(T0 + 10.5).failures == 9
    assert breaker.snapshot(T0 + 14.5).failures == 5
    assert breaker.snapshot(T0 + 25.0).failures == 0


def test_old_successes_leaving_the_window_raise_the_rate() -> None:
    breaker = make(minimum_calls=4, failure_rate_threshold=0.75, window=10.0)
    for _ in range(4):
        call(breaker, T0, False)
    later = T0 + 5.0
    for _ in range(3):
        call(breaker, later, True)
    assert breaker.state == CLOSED  # 3 of 7
    assert call(breaker, T0 + 10.5, False)  # the t0 successes left: 3 of 4
    assert breaker.state == OPEN


def test_consecutive_failures_trip_regardless_of_minimum_calls() -> None:
    breaker = make(minimum_calls=100, consecutive_failures=3)
    call(breaker, T0, True)
    call(breaker, T0, True)
    call(breaker, T0, False)  # resets the run
    call(breaker, T0, True)
    call(breaker, T0, True)
    assert breaker.state == CLOSED
    assert call(breaker, T0, True)
    assert breaker.state == OPEN


def test_consecutive_run_does_not_decay_with_the_window() -> None:
    # The low-traffic trap: a sparse, total outage must still trip.
    breaker = make(minimum_calls=100, consecutive_failures=3, window=10.0)
    for i in range(3):
        call(breaker, T0 + 60.0 * i, True)
    assert breaker.state == OPEN


def test_slow_call_rate_trips() -> None:
    breaker = make(minimum_calls=4, slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    call(breaker, T0, False, duration=0.2)
    call(breaker, T0, False, duration=1.0)  # exactly the limit: not slow
    call(breaker, T0, False, duration=1.5)
    assert breaker.snapshot(T0).slow_calls == 1
    assert call(breaker, T0, False, duration=3.0)
    assert breaker.state == OPEN


def test_slow_calls_are_ignored_without_the_rule() -> None:
    breaker = make(minimum_calls=2)
    for _ in range(10):
        call(breaker, T0, False, duration=1e6)
    assert breaker.state == CLOSED
    assert breaker.snapshot(T0).slow_calls == 0


# -- open and half-open ------------------------------------------------------------------------
def test_open_rejects_with_retry_after_then_turns_half_open_lazily() -> None:
    breaker = make(consecutive_failures=1, open_duration=30.0)
    trip(breaker)
    states(breaker)
    rejection = breaker.allow(T0 + 10.0)
    assert isinstance(rejection, Rejection)
    assert rejection.retry_after == pytest.approx(20.0)
    assert breaker.snapshot(T0 + 10.0).seconds_until_half_open == pytest.approx(20.0)
    assert breaker.state == OPEN  # nothing moves without a caller
    permit = breaker.allow(T0 + 30.0)
    assert isinstance(permit, Permit)
    assert breaker.state == HALF_OPEN
    assert states(breaker) == [(OPEN, HALF_OPEN)]


def test_half_open_admits_at_most_max_calls_concurrently() -> None:
    breaker = make(consecutive_failures=1, half_open_max_calls=3, success_threshold=5)
    trip(breaker)
    now = T0 + 30.0
    permits = [breaker.allow(now) for _ in range(3)]
    assert all(isinstance(p, Permit) for p in permits)
    busy = breaker.allow(now)
    assert isinstance(busy, Rejection) and busy.retry_after == 0.0
    breaker.record(permits[0], False, now)  # frees a slot
    assert isinstance(breaker.allow(now), Permit)
    assert isinstance(breaker.allow(now), Rejection)


def test_success_threshold_successful_probes_close_it() -> None:
    breaker = make(consecutive_failures=1, success_threshold=2)
    trip(breaker)
    now = T0 + 30.0
    assert not call(breaker, now, False)
    assert breaker.state == HALF_OPEN
    assert call(breaker, now, False)
    assert breaker.state == CLOSED
    assert states(breaker) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    snap = breaker.snapshot(now)
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (0, 0, 0)


def test_a_failed_probe_reopens_for_a_full_open_duration() -> None:
    breaker = make(consecutive_failures=1, success_threshold=3, open_duration=30.0)
    trip(breaker)
    now = T0 + 31.0
    call(breaker, now, False)
    assert call(breaker, now, True)
    assert breaker.state == OPEN
    rejection = breaker.allow(now + 1.0)
    assert isinstance(rejection, Rejection)
    assert rejection.retry_after == pytest.approx(29.0)


def test_a_slow_probe_counts_as_failed_when_the_slow_rule_is_on() -> None:
    breaker = make(consecutive_failures=1, slow_call_duration=1.0)
    trip(breaker)
    assert call(breaker, T0 + 30.0, False, duration=2.0)
    assert breaker.state == OPEN


def test_release_frees_the_probe_slot_and_counts_nothing() -> None:
    breaker = make(consecutive_failures=1)
    trip(breaker)
    now = T0 + 30.0
    permit = breaker.allow(now)
    assert isinstance(permit, Permit)
    assert isinstance(breaker.allow(now), Rejection)
    breaker.release(permit)
    breaker.release(permit)  # a second release cannot free a slot it never held
    assert breaker.in_flight == 0
    assert breaker.state == HALF_OPEN
    again = breaker.allow(now)
    assert isinstance(again, Permit)
    assert isinstance(breaker.allow(now), Rejection)


def test_outcomes_from_an_earlier_generation_are_ignored() -> None:
    breaker = make(consecutive_failures=2)
    old = breaker.allow(T0)
    assert isinstance(old, Permit)
    trip(breaker)
    now = T0 + 30.0
    probe = breaker.allow(now)
    assert isinstance(probe, Permit) and probe is not old
    assert not breaker.record(old, False, now)  # a closed-era success does not close it
    assert breaker.state == HALF_OPEN
    assert breaker.in_flight == 1
    breaker.release(old)
    assert breaker.in_flight == 1


# -- reporting transitions ---------------------------------------------------------------------
def test_transitions_are_taken_by_one_caller_at_a_time_in_order() -> None:
    breaker = make(consecutive_failures=1)
    trip(breaker)
    first = breaker.take_transitions()
    assert first == [Transition("api.test", CLOSED, OPEN)]
    breaker.allow(T0 + 30.0)  # queues open -> half_open while the first caller reports
    assert breaker.take_transitions() == []  # someone else is reporting
    assert breaker.take_transitions(more=True) == [Transition("api.test", OPEN, HALF_OPEN)]
    assert breaker.take_transitions(more=True) == []  # ends the turn
    call_permit = breaker.allow(T0 + 30.0)
    assert isinstance(call_permit, Rejection)
    assert breaker.take_transitions() == []
    assert not breaker.pending


def test_abandoning_a_turn_lets_the_next_caller_report() -> None:
    breaker = make(consecutive_failures=1)
    trip(breaker)
    breaker.take_transitions()
    breaker.allow(T0 + 30.0)
    breaker.abandon_transitions()
    assert breaker.take_transitions() == [Transition("api.test", OPEN, HALF_OPEN)]


# -- retiring and idleness ---------------------------------------------------------------------
def test_a_retired_breaker_admits_nothing_and_ignores_outcomes() -> None:
    breaker = make(consecutive_failures=1)
    permit = breaker.allow(T0)
    assert isinstance(permit, Permit)
    assert breaker.retire(T0)
    assert not breaker.retire(T0)
    assert breaker.allow(T0) is None
    assert not breaker.record(permit, True, T0)
    assert breaker.state == CLOSED
    assert breaker.take_transitions() == []


def test_retiring_an_open_breaker_queues_a_transition_to_closed() -> None:
    breaker = make(consecutive_failures=1)
    trip(breaker)
    breaker.take_transitions(), breaker.take_transitions(more=True)
    assert breaker.retire(T0)
    assert states(breaker) == [(OPEN, CLOSED)]


def test_idleness() -> None:
    breaker = make(consecutive_failures=5, window=10.0)
    assert breaker.idle_since(T0) == T0
    permit = breaker.allow(T0 + 1.0)
    assert isinstance(permit, Permit)
    assert breaker.idle_since(T0 + 1.0) is None  # a call in flight
    breaker.record(permit, True, T0 + 2.0)
    assert breaker.idle_since(T0 + 2.0) is None  # a failure in the window
    assert breaker.idle_since(T0 + 12.0 + 1.0) == T0 + 2.0  # evidence is older than the window
    assert not breaker.retire(T0 + 3.0, only_if_idle=True)
    call(breaker, T0 + 20.0, False)
    assert breaker.idle_since(T0 + 20.0) == T0 + 20.0  # successes only


def test_open_and_half_open_breakers_are_never_idle() -> None:
    breaker = make(consecutive_failures=1)
    trip(breaker)
    assert breaker.idle_since(T0 + 10_000.0) is None
    assert breaker.snapshot(T0 + 10_000.0).state == HALF_OPEN
    assert breaker.idle_since(T0 + 10_000.0) is None


# -- the registry ------------------------------------------------------------------------------
POLICY = CircuitBreakerPolicy(consecutive_failures=1)


def origin(i: int) -> tuple[str, str, int]:
    return ("https", f"h{i}.test", 443)


def test_registry_creates_one_breaker_per_origin() -> None:
    registry = BreakerRegistry(max_hosts=10)
    first, removed = registry.get_or_create(origin(1), "h1.test", POLICY, T0)
    assert first is not None and removed == []
    again, _ = registry.get_or_create(origin(1), "h1.test", POLICY, T0)
    assert again is first and registry.get(origin(1)) is first
    other, _ = registry.get_or_create(("http", "h1.test", 80), "h1.test", POLICY, T0)
    assert other is not first and len(registry) == 2


def test_registry_evicts_least_recently_used_idle_breakers_only() -> None:
    registry = BreakerRegistry(max_hosts=4)
    breakers = [registry.get_or_create(origin(i), f"h{i}.test", POLICY, T0)[0] for i in range(4)]
    assert all(b is not None for b in breakers)
    b0, b1, b2, b3 = breakers  # type: ignore[misc]
    trip(b0)  # open: never evicted
    busy = b1.allow(T0)  # in flight: not idle
    assert isinstance(busy, Permit)
    call(b2, T0 + 2.0, False)  # used recently
    call(b3, T0 + 1.0, False)  # least recently used of the idle ones
    created, removed = registry.get_or_create(origin(9), "h9.test", POLICY, T0 + 3.0)
    assert created is not None
    assert removed == ["h3.test"]
    assert registry.get(origin(3)) is None and b3.allow(T0) is None  # retired
    assert len(registry) == 4
    assert {o for o, _ in registry.items()} == {origin(0), origin(1), origin(2), origin(9)}


def test_a_full_registry_of_busy_breakers_leaves_new_origins_untracked() -> None:
    registry = BreakerRegistry(max_hosts=2)
    for i in range(2):
        breaker, _ = registry.get_or_create(origin(i), f"h{i}.test", POLICY, T0)
        assert breaker is not None
        trip(breaker)
    assert registry.get_or_create(origin(5), "h5.test", POLICY, T0) == (None, [])
    assert len(registry) == 2
    # Idle breakers appear; the registry looks again only after FULL_RESCAN_INTERVAL.
    for _, breaker in registry.items():
        breaker.retire(T0)
    registry.remove([origin(0)], T0)
    assert registry.get_or_create(origin(6), "h6.test", POLICY, T0 + 0.5)[0] is not None


def test_removed_host_keys_are_reported_once_no_breaker_uses_them() -> None:
    registry = BreakerRegistry(max_hosts=10)
    registry.get_or_create(("http", "a.test", 80), "a.test", POLICY, T0)
    registry.get_or_create(("https", "a.test", 443), "a.test", POLICY, T0)
    retired, removed = registry.remove([("http", "a.test", 80)], T0)
    assert len(retired) == 1 and removed == []
    retired, removed = registry.remove([("https", "a.test", 443), ("ftp", "x", 1)], T0)
    assert len(retired) == 1 and removed == ["a.test"]
    assert len(registry) == 0


def test_registry_memory_stays_flat_under_origin_churn() -> None:
    registry = BreakerRegistry(max_hosts=1000)
    policy = CircuitBreakerPolicy()

    def churn(start: int, count: int) -> None:
        for i in range(start, start + count):
            breaker, _ = registry.get_or_create(("https", f"h{i}.test", 443), "h", policy, T0)
            assert breaker is not None
            call(breaker, T0, False)

    churn(0, 5_000)  # fill the registry and reach the steady state
    gc.collect()
    before = sys.getallocatedblocks()
    churn(5_000, 25_000)  # 100,000 through the transport: tests/transports
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert len(registry) <= 1000
    # One breaker is dozens of blocks: 1,000 blocks is far below one breaker per host.
    assert grown < 1_000, grown


# -- concurrency (real threads on the core) ----------------------------------------------------
def test_threads_never_exceed_the_half_open_probe_limit() -> None:
    breaker = make(consecutive_failures=1, half_open_max_calls=3, success_threshold=10**9)
    trip(breaker)
    active = 0
    peak = 0
    admitted = 0
    guard = threading.Lock()
    start = threading.Barrier(64)

    def worker() -> None:
        nonlocal active, peak, admitted
        start.wait()
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            permit = breaker.allow(T0 + 60.0)
            if not isinstance(permit, Permit):
                time.sleep(0.0005)
                continue
            with guard:
                active += 1
                admitted += 1
                peak = max(peak, active)
            time.sleep(0.002)
            with guard:
                active -= 1
            breaker.record(permit, False, T0 + 60.0)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3
    assert admitted > 3
    assert breaker.in_flight == 0


def test_window_counts_stay_consistent_under_threads() -> None:
    breaker = make(minimum_calls=10**9)

    def worker(seed: int) -> None:
        for i in range(2_000):
            now = T0 + (i % 50) * 0.1
            permit = breaker.allow(now)
            assert isinstance(permit, Permit)
            breaker.record(permit, (i + seed) % 3 == 0, now)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = breaker.snapshot(T0 + 5.0)
    assert snap.calls == 16_000
    assert snap.in_flight == 0


# -- properties --------------------------------------------------------------------------------
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["allow", "success", "failure", "release", "advance"]),
        st.floats(min_value=0.0, max_value=20.0),
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, max_probes=st.integers(1, 3))
def test_invariants_hold_for_any_sequence(ops: list[tuple[str, float]], max_probes: int) -> None:
    breaker = make(
        minimum_calls=3,
        consecutive_failures=4,
        window=10.0,
        open_duration=5.0,
        half_open_max_calls=max_probes,
        success_threshold=2,
    )
    now = T0
    held: list[Permit] = []
    for op, value in ops:
        if op == "advance":
            now += value
        elif op == "allow":
            result = breaker.allow(now)
            assert isinstance(result, Permit | Rejection)
            if isinstance(result, Permit):
                held.append(result)
            else:
                assert result.retry_after >= 0.0
                assert breaker.state in (OPEN, HALF_OPEN)
        elif held:
            permit = held.pop(0)
            if op == "release":
                breaker.release(permit)
            else:
                breaker.record(permit, op == "failure", now)
        if breaker.state == HALF_OPEN:
            assert breaker.in_flight <= max_probes
        snap = breaker.snapshot(now)
        assert 0 <= snap.failures <= snap.calls
        assert snap.calls == sum(breaker._bucket_calls)
        assert snap.failures == sum(breaker._bucket_failures)
        assert 0 <= snap.in_flight <= len(held)
    log = breaker.take_transitions()
    for before, after in itertools.pairwise(log):
        assert before.new == after.old  # transitions chain
    for transition in log:
        assert (transition.old, transition.new) in {
            (CLOSED, OPEN),
            (OPEN, HALF_OPEN),
            (HALF_OPEN, OPEN),
            (HALF_OPEN, CLOSED),
        }
