"""The pure GCRA core: decisions, guarantee, FIFO, cancellation, pause, registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayengo._core.ratelimit import (
    ADMIT_NOW,
    Admit,
    GCRALimiter,
    LimiterRegistry,
    Reject,
    Reservation,
)

T0 = 1000.0


def limiter(rate: float = 10, per: float = 1.0, burst: int = 1, max_pause: float = 60.0):
    return GCRALimiter(rate, per, burst, max_pause=max_pause, name="h")


def admit(lim: GCRALimiter, now: float, max_wait: float | None = None) -> Admit:
    decision = lim.reserve(now, max_wait)
    assert isinstance(decision, Admit), decision
    return decision


# -- basic semantics ---------------------------------------------------------------------


def test_burst_one_means_no_hidden_burst() -> None:
    lim = limiter(rate=10)
    assert admit(lim, T0) is ADMIT_NOW
    second = admit(lim, T0)
    assert second.delay == pytest.approx(0.1)
    assert second.reservation is not None
    assert lim.start_of(second.reservation) == pytest.approx(T0 + 0.1)


def test_burst_then_one_per_interval() -> None:
    lim = limiter(rate=10, burst=3)
    delays = [admit(lim, T0).delay for _ in range(6)]
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_rate_is_per_period_not_per_second() -> None:
    # "100 per minute" is one every 0.6 s, not 100 per second.
    lim = limiter(rate=100, per=60)
    admit(lim, T0)
    assert admit(lim, T0).delay == pytest.approx(0.6)


def test_tokens_refill_with_time_up_to_burst_only() -> None:
    lim = limiter(rate=10, burst=2)
    admit(lim, T0)
    admit(lim, T0)
    # A long idle period refills to `burst`, never more.
    later = T0 + 100
    assert [admit(lim, later).delay for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_reject_leaves_state_untouched_and_reports_retry_after() -> None:
    lim = limiter(rate=10)
    admit(lim, T0)
    admit(lim, T0)  # start at +0.1
    tat = lim.tat
    decision = lim.reserve(T0, 0.15)
    assert isinstance(decision, Reject)
    assert decision.retry_after == pytest.approx(0.2)
    assert lim.tat == tat
    assert len(lim.pending) == 1


def test_max_wait_zero_is_fail_fast() -> None:
    lim = limiter(rate=10)
    assert lim.reserve(T0, 0) is ADMIT_NOW
    assert isinstance(lim.reserve(T0, 0), Reject)
    assert lim.reserve(T0 + 0.1, 0) is ADMIT_NOW


def test_max_wait_equal_to_delay_is_admitted() -> None:
    lim = limiter(rate=4)
    admit(lim, T0)
    assert admit(lim, T0, max_wait=0.25).delay == 0.25


def test_fifo_starts_follow_reservation_order() -> None:
    lim = limiter(rate=10, burst=2)
    starts = []
    for i in range(20):
        d = admit(lim, T0 + i * 0.01)
        starts.append(T0 + i * 0.01 + d.delay)
    assert starts == sorted(starts)


# -- cancellation ----------------------------------------------------------------------


def queue(lim: GCRALimiter, n: int, now: float = T0) -> list[Reservation]:
    """Reserve n slots at `now`; returns the waiters' reservations."""
    out = []
    for _ in range(n):
        d = admit(lim, now)
        if d.reservation is not None:
            out.append(d.reservation)
    return out


def test_cancelling_the_last_waiter_rolls_back() -> None:
    lim = limiter(rate=10)
    a, b = queue(lim, 3)
    tat = lim.tat
    assert lim.cancel(b, T0 + 0.05) is None
    assert lim.tat == pytest.approx(tat - 0.1)
    assert lim.pending == [a]
    # The next arrival gets exactly the freed slot.
    assert lim.start_of(admit(lim, T0 + 0.05).reservation) == pytest.approx(T0 + 0.2)


def test_cancelling_a_middle_waiter_moves_later_ones_up() -> None:
    lim = limiter(rate=10)
    a, b, c, d = queue(lim, 5)
    old = [lim.arm(r) for r in (a, b, c, d)]  # all four are asleep until their slots
    wake = lim.cancel(b, T0 + 0.05)
    assert wake is c
    assert [lim.start_of(r) for r in (a, c, d)] == pytest.approx(old[:3])
    # The freed slot is the last one: the next arrival takes d's old slot, not a new one.
    e = admit(lim, T0 + 0.05).reservation
    assert lim.start_of(e) == pytest.approx(old[3])
    assert lim.pending == [a, c, d, e]


def test_cancelled_waiters_never_delay_later_ones() -> None:
    lim = limiter(rate=10, burst=2)
    waiters = queue(lim, 12)
    schedule = [lim.start_of(r) for r in waiters]
    for r in waiters[1::2]:
        lim.cancel(r, T0)
    kept = waiters[0::2]
    assert [lim.start_of(r) for r in kept] == pytest.approx(schedule[: len(kept)])


def test_cancel_after_its_start_gives_nothing_back() -> None:
    lim = limiter(rate=10)
    (a,) = queue(lim, 2)
    tat = lim.tat
    assert lim.cancel(a, lim.start_of(a)) is None
    assert lim.tat == tat
    assert not lim.pending and not lim.slots


def test_cancel_wakes_only_a_waiter_asleep_past_its_new_slot() -> None:
    lim = limiter(rate=10)
    a, b, _c = queue(lim, 4)
    lim.arm(a)
    # b has not read its slot yet: it will read the new one, no wake-up needed.
    assert lim.cancel(a, T0) is None
    assert lim.start_of(b) == pytest.approx(T0 + 0.1)


def test_cancel_is_idempotent_and_ignores_finished() -> None:
    lim = limiter(rate=10)
    a, b = queue(lim, 3)
    lim.cancel(a, T0)
    tat = lim.tat
    assert lim.cancel(a, T0) is None
    assert lim.finish(a) is None
    lim.finish(b)
    assert lim.cancel(b, T0) is None
    assert lim.tat == tat


def test_finish_hands_the_wake_up_to_a_moved_up_successor() -> None:
    lim = limiter(rate=10)
    a, b, c, d = queue(lim, 5)
    for r in (a, b, c, d):
        lim.arm(r)
    assert lim.finish(a) is None  # nobody moved: no extra wake-ups
    assert lim.cancel(b, T0) is c
    lim.arm(c)  # c woke up and read its new slot; d is still asleep until its old one
    assert lim.finish(c) is d
    lim.arm(d)
    assert lim.finish(d) is None


# -- pause -----------------------------------------------------------------------------


def test_pause_blocks_new_starts_until_then() -> None:
    lim = limiter(rate=10, burst=3)
    assert lim.pause(T0, 2.0) == T0 + 2.0
    assert admit(lim, T0 + 1).delay == pytest.approx(1.0)
    assert admit(lim, T0 + 2.5) is ADMIT_NOW


def test_pause_is_capped_by_max_pause() -> None:
    lim = limiter(max_pause=5)
    assert lim.pause(T0, 3600) == T0 + 5
    assert isinstance(lim.reserve(T0, 4.9), Reject)


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    lim = limiter()
    lim.pause(T0, 10)
    assert lim.pause(T0 + 1, 2) == T0 + 10


def test_pause_replans_queued_waiters_in_order() -> None:
    lim = limiter(rate=10, burst=2)
    waiters = queue(lim, 5)  # 2 at once, then waiters at +0.1, +0.2, +0.3
    lim.pause(T0 + 0.15, 1.0)  # the +0.1 waiter may already be on its way
    first, *later = waiters
    assert lim.start_of(first) == pytest.approx(T0 + 0.1)
    until = T0 + 1.15
    # Re-planned as if they arrived now: the burst is available again at `until`.
    assert [lim.start_of(r) for r in later] == pytest.approx([until, until])
    assert lim.start_of(admit(lim, T0 + 0.15).reservation) == pytest.approx(until + 0.1)


def test_idle() -> None:
    lim = limiter(rate=10)
    assert lim.idle(T0)
    admit(lim, T0)
    assert not lim.idle(T0)
    assert lim.idle(T0 + 0.1)
    lim.pause(T0 + 0.1, 1)
    assert not lim.idle(T0 + 0.5)
    assert lim.idle(T0 + 1.1)


# -- registry --------------------------------------------------------------------------


def test_registry_drops_idle_limiters_first() -> None:
    reg = LimiterRegistry()
    busy = reg.add("busy", 1.0, 1, 3, T0)
    busy.reserve(T0, None)
    for name in ("a", "b"):
        reg.add(name, 1.0, 1, 3, T0 - 10)
    reg.add("c", 1.0, 1, 3, T0)
    assert set(reg.host_limiters()) == {"busy", "c"}
    assert not busy.evicted


def test_registry_drops_the_soonest_idle_when_all_are_busy() -> None:
    reg = LimiterRegistry()
    first = reg.add("first", 1.0, 1, 2, T0)
    first.reserve(T0, None)
    second = reg.add("second", 1.0, 1, 2, T0)
    second.reserve(T0, None)
    second.reserve(T0, None)
    reg.add("third", 1.0, 1, 2, T0)
    assert set(reg.host_limiters()) == {"second", "third"}
    assert first.evicted and not second.evicted
    assert len(reg) == 2


def test_registry_returns_the_same_limiter_per_key() -> None:
    reg = LimiterRegistry()
    one = reg.add("k", 0.2, 2, 10, T0, name="c")
    assert reg.add("k", 0.2, 2, 10, T0) is one
    assert reg.host("k") is one and one.name == "c"
    assert (one.interval, one.tolerance) == (0.2, 0.2)
    assert reg.host("x") is None


# -- the guarantee, over random arrival patterns ------------------------------------------

arrive = st.tuples(st.just("arrive"), st.sampled_from([None, None, 0.0, 0.05, 0.3, 2.0]))
op = st.one_of(
    arrive,
    arrive,
    arrive,
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("pause"), st.floats(0.0, 3.0)),
)


def simulate(
    lim: GCRALimiter, ops: list[tuple[float, tuple[str, object]]]
) -> list[tuple[int, float]]:
    """Drive the limiter like the transports would (waiters finish at their start).

    Returns (reservation order, start time) of every request that started.
    """
    now = T0
    started: list[tuple[int, float]] = []
    order: dict[int, int] = {}
    counter = 0

    def commit_until(t: float) -> None:
        while lim.pending and lim.slots[0] <= t:
            r, start = lim.pending[0], lim.slots[0]
            lim.finish(r)
            started.append((order[id(r)], start))

    for dt, (kind, arg) in ops:
        now += dt
        commit_until(now)
        if kind == "arrive":
            decision = lim.reserve(now, arg)  # type: ignore[arg-type]
            if isinstance(decision, Reject):
                assert decision.retry_after > (arg or 0)
                continue
            if decision.reservation is None:
                started.append((counter, now))
            else:
                start = lim.arm(decision.reservation)
                assert decision.delay == pytest.approx(start - now)
                order[id(decision.reservation)] = counter
            counter += 1
        elif kind == "cancel" and lim.pending:
            lim.cancel(lim.pending[int(arg) % len(lim.pending)], now)  # type: ignore[call-overload]
        elif kind == "pause":
            until = lim.pause(now, float(arg))  # type: ignore[arg-type]
            assert until == max(until, now + min(float(arg), lim.max_pause))  # type: ignore[arg-type]
            # Nothing queued may start before the pause ends.
            assert all(start >= until for start in lim.slots)
    commit_until(math.inf)
    return started


def assert_within_bound(starts: list[float], interval: float, burst: int) -> None:
    starts = sorted(starts)
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            count = j - i + 1
            allowed = burst + (starts[j] - starts[i]) / interval
            assert count <= allowed + 1e-6, (i, j, starts[i], starts[j], count, allowed)


@settings(max_examples=500, deadline=None)
@given(
    rate=st.sampled_from([1.0, 3.0, 7.5, 10.0, 200.0]),
    per=st.sampled_from([0.5, 1.0, 60.0]),
    burst=st.integers(1, 5),
    # Gaps in units of the limiter's interval: mostly saturating, sometimes idle.
    ops=st.lists(
        st.tuples(st.sampled_from([0, 0, 0, 0, 0, 0.01, 0.3, 1, 4]), op), min_size=20, max_size=150
    ),
)
def test_guarantee_holds_for_any_arrival_pattern(
    rate: float, per: float, burst: int, ops: list[tuple[float, tuple[str, object]]]
) -> None:
    lim = limiter(rate=rate, per=per, burst=burst, max_pause=2.0)
    interval = per / rate
    scaled = [(dt * interval, o) for dt, o in ops]
    started = simulate(lim, scaled)
    assert_within_bound([s for _, s in started], interval, burst)
    # FIFO: in reservation order, starts never go backwards.
    by_order = [s for _, s in sorted(started)]
    assert by_order == sorted(by_order)


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(1, 4),
    waiting=st.integers(1, 30),
    cancelled=st.sets(st.integers(0, 29)),
    at=st.floats(0, 1),
)
def test_cancellations_never_delay_the_rest(
    burst: int, waiting: int, cancelled: set[int], at: float
) -> None:
    lim = limiter(rate=10, burst=burst)
    waiters = queue(lim, burst + waiting)
    schedule = [lim.arm(r) for r in waiters]
    now = T0 + at * schedule[-1] - at * T0
    gone = [r for i, r in enumerate(waiters) if i in cancelled and lim.start_of(r) > now]
    for r in gone:
        lim.cancel(r, now)
    kept = [r for r in waiters if r not in gone]
    # The survivors take the earliest slots of the original schedule, in order.
    assert [lim.start_of(r) for r in kept] == pytest.approx(schedule[: len(kept)])
    nxt = admit(lim, now)
    expected = schedule[len(kept)] if len(kept) < len(schedule) else schedule[-1] + 0.1
    assert now + nxt.delay == pytest.approx(max(expected, now))
