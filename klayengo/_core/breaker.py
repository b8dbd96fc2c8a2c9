"""The circuit breaker state machine and the per-origin registry (sans-I/O).

One :class:`Breaker` guards one origin ``(scheme, host, port)``. It follows the
two-step shape of sony/gobreaker: :meth:`Breaker.allow` hands out a :class:`Permit`
(or a :class:`Rejection` carrying ``retry_after``) *before* the call, and
:meth:`Breaker.record` takes the permit back with the outcome *after* it, so no lock
is ever held while the call runs. Time is always passed in (``now``, monotonic
seconds); nothing here reads a clock, sleeps or starts a timer.

States and transitions (all lazy, evaluated when a call arrives or a snapshot is
taken)::

    closed ──trip rule──▶ open ──open_duration elapsed──▶ half_open
       ▲                   ▲                                 │
       │                   └────── a failed (or slow) probe ─┤
       └──────────── success_threshold successful probes ────┘

Trip rules, evaluated after every recorded call while closed:

- failure rate: over the sliding window (``window`` seconds, kept as
  :data:`WINDOW_BUCKETS` buckets of ``window / WINDOW_BUCKETS`` seconds, so the
  window slides in steps of one bucket), at least ``minimum_calls`` calls completed
  and ``failures / calls >= failure_rate_threshold``;
- slow calls (when ``slow_call_duration`` is set): at least ``minimum_calls`` calls
  completed and ``slow / calls >= slow_call_rate_threshold``; a call is slow when it
  took longer than ``slow_call_duration``;
- consecutive failures (when ``consecutive_failures`` is set): that many failures in
  a row, regardless of ``minimum_calls`` and of the window.

Counts are per window, never cumulative: a bucket older than the window is dropped.

Generations: every transition creates a new :class:`Permit` object (the generation
marker). An outcome recorded with a permit of an earlier generation is ignored, so
calls admitted before a state change cannot move the new state.

Half-open admits at most ``half_open_max_calls`` *concurrent* probes; the rest are
rejected with ``retry_after == 0.0``. ``success_threshold`` successful probes close
the breaker; a failed probe reopens it. When the slow-call rule is on, a slow probe
counts as a failed one (the host is still degraded). A cancelled call is given back
with :meth:`Breaker.release`: neither success nor failure, and its probe slot is free
again, so a breaker never sticks half-open.

Transitions are not reported from inside the lock. Each one is queued on the breaker;
the caller drains the queue with :meth:`Breaker.take_transitions` after the lock is
released and runs the callbacks itself. Only one caller drains a given breaker at a
time, so callbacks see that breaker's transitions in order.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Final, NamedTuple

from .._policies import CircuitBreakerPolicy
from .hosts import Origin

__all__ = [
    "CLOSED",
    "EVICTION_BATCH_DIVISOR",
    "FULL_RESCAN_INTERVAL",
    "HALF_OPEN",
    "OPEN",
    "STATE_RANK",
    "WINDOW_BUCKETS",
    "Breaker",
    "BreakerRegistry",
    "BreakerSnapshot",
    "Permit",
    "Rejection",
    "Transition",
]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
#: Internal state of a breaker removed from its registry (reset or evicted). It is never
#: reported: :meth:`Breaker.allow` answers ``None`` so the caller looks the origin up again.
_RETIRED: Final = "retired"

#: How bad a state is, for reporting one state when several origins share a host key.
STATE_RANK: Final = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

#: Buckets of the sliding window: the window slides in steps of ``window / WINDOW_BUCKETS``.
WINDOW_BUCKETS: Final = 10
#: When the registry is full, evict up to ``max_hosts // EVICTION_BATCH_DIVISOR`` idle
#: breakers at once (at least one), so a stream of new hosts costs one scan per batch.
EVICTION_BATCH_DIVISOR: Final = 4
#: When the registry is full and nothing is idle, new origins go untracked; the registry
#: looks for idle breakers again after this many seconds, not on every request.
FULL_RESCAN_INTERVAL: Final = 1.0

_NEVER: Final = -math.inf


class Permit:
    """Admission to one call; hand it back to :meth:`Breaker.record` or :meth:`Breaker.release`.

    One permit object exists per generation of a breaker and is shared by every call
    admitted in it, so admitting a call allocates nothing. It also counts the calls
    of its generation still in flight: ``list.append``/``pop`` are atomic, which lets
    a closed breaker admit a call without taking its lock. (A list, not a deque: an
    empty deque holds a 64-slot block, 600 bytes per origin; the list is 56.)
    """

    __slots__ = ("flight", "generation", "probe")

    def __init__(self, generation: int, probe: bool = False) -> None:
        self.generation = generation
        #: True for the permits of a half-open state: the calls are probes.
        self.probe = probe
        self.flight: list[None] = []

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation})"


class Rejection:
    """A refused call: the breaker is open, or half-open with every probe slot taken.

    Attributes:
        retry_after: seconds until a probe may be admitted (``0.0`` when half-open and
            merely busy).
    """

    __slots__ = ("retry_after",)

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Rejection(retry_after={self.retry_after!r})"


class Transition(NamedTuple):
    """A state change of the breaker of ``host`` (a host key), to report outside the lock."""

    host: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A point-in-time view of one host's circuit breaker.

    Attributes:
        host: the host key.
        state: ``"closed" | "open" | "half_open"``.
        calls: calls completed in the sliding window (while open or half-open, what
            is left of the window that tripped it).
        failures: failed calls among them.
        failure_rate: ``failures / calls`` (``0.0`` with no calls).
        slow_calls: calls slower than ``slow_call_duration`` among them.
        slow_call_rate: ``slow_calls / calls`` (``0.0`` with no calls).
        consecutive_failures: failures in a row since the last success.
        in_flight: calls (or, half-open, probes) admitted and not finished yet.
        seconds_until_half_open: while open, seconds until a probe is admitted;
            ``0.0`` in the other states.
    """

    host: str
    state: str
    calls: int
    failures: int
    failure_rate: float
    slow_calls: int
    slow_call_rate: float
    consecutive_failures: int
    in_flight: int
    seconds_until_half_open: float


class Breaker:
    """The circuit breaker of one origin. Thread-safe; every lock is held for microseconds.

    Args:
        host: the host key reported in transitions and snapshots.
        policy: the :class:`~klayengo.CircuitBreakerPolicy` in force for this origin.
        now: the current monotonic time.
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_end",
        "_bucket_failures",
        "_bucket_slow",
        "_closed_permit",
        "_consecutive",
        "_consecutive_limit",
        "_dispatching",
        "_epoch",
        "_failure_rate",
        "_generation",
        "_index",
        "_last_used",
        "_lock",
        "_max_probes",
        "_minimum_calls",
        "_open_duration",
        "_open_until",
        "_outbox",
        "_permit",
        "_probe_successes",
        "_slow_duration",
        "_slow_rate",
        "_state",
        "_success_threshold",
        "_total_calls",
        "_total_failures",
        "_total_slow",
        "_width",
        "host",
        "policy",
        "seen_generation",
        "signal_key",
    )

    def __init__(
        self, host: str, policy: CircuitBreakerPolicy, now: float, signal_key: str = ""
    ) -> None:
        self.host = host
        self.policy = policy
        #: The key of this origin's shared open signal (``scheme://host[:port]``).
        self.signal_key = signal_key or host
        #: The generation of the last shared signal this breaker published or
        #: adopted (0: none), so each opening elsewhere is adopted once.
        self.seen_generation = 0
        self._lock = threading.Lock()
        self._failure_rate = policy.failure_rate_threshold
        self._minimum_calls = policy.minimum_calls
        self._width = policy.window / WINDOW_BUCKETS
        # Disabled rules become limits that are never reached, so the hot path has no
        # "is this rule on?" branches.
        self._consecutive_limit = (
            policy.consecutive_failures if policy.consecutive_failures is not None else math.inf
        )
        self._slow_duration = (
            policy.slow_call_duration if policy.slow_call_duration is not None else math.inf
        )
        self._slow_rate = policy.slow_call_rate_threshold
        self._open_duration = policy.open_duration
        self._max_probes = policy.half_open_max_calls
        self._success_threshold = policy.success_threshold
        self._state: str = CLOSED
        self._generation = 0
        self._permit = Permit(0)
        # The permit while closed, else None: one read tells a lock-free caller both.
        self._closed_permit: Permit | None = self._permit
        self._open_until = _NEVER
        self._probe_successes = 0
        self._consecutive = 0
        self._bucket_calls = [0] * WINDOW_BUCKETS
        self._bucket_failures = [0] * WINDOW_BUCKETS
        self._bucket_slow = [0] * WINDOW_BUCKETS
        self._total_calls = 0
        self._total_failures = 0
        self._total_slow = 0
        self._epoch = self._index = 0
        self._bucket_end = _NEVER
        self._clear_window(now)
        self._last_used = now
        self._outbox: list[Transition] = []
        self._dispatching = False

    def __repr__(self) -> str:
        return f"<Breaker {self.host} {self._state}>"

    @property
    def state(self) -> str:
        """The state as last evaluated (no lazy transition is applied by reading it).

        A retired breaker reads ``"closed"``: its origin starts afresh.
        """
        state = self._state
        return CLOSED if state is _RETIRED else state

    @property
    def pending(self) -> bool:
        """True when transitions wait to be taken with :meth:`take_transitions`."""
        return bool(self._outbox)

    @property
    def in_flight(self) -> int:
        """Calls of the current state admitted and not yet recorded or released."""
        return len(self._permit.flight)

    # -- the two steps -------------------------------------------------------------------
    def allow(self, now: float) -> Permit | Rejection | None:
        """Admit a call or refuse it.

        Returns:
            a :class:`Permit` (hand it back to :meth:`record` or :meth:`release`), a
            :class:`Rejection`, or ``None`` when this breaker was removed from its
            registry meanwhile (look the origin up again).
        """
        # Closed and open are decided without the lock. A read that races with a
        # transition behaves as if the call had arrived just before it: a call admitted
        # by a generation that has just ended is simply not counted (see `record`).
        permit = self._closed_permit
        if permit is not None:
            permit.flight.append(None)
            return permit
        until = self._open_until
        if now < until:
            return Rejection(until - now)
        with self._lock:
            state = self._state
            if state is CLOSED:  # closed again since the first read
                permit = self._permit
                permit.flight.append(None)
                return permit
            if state is OPEN:
                if now < self._open_until:
                    return Rejection(self._open_until - now)
                self._transition(HALF_OPEN, now)
                state = HALF_OPEN
            if state is HALF_OPEN:
                self._last_used = now
                permit = self._permit
                if len(permit.flight) < self._max_probes:
                    permit.flight.append(None)
                    return permit
                return Rejection(0.0)
            return None  # retired

    def record(
        self, permit: Permit, failure: bool, now: float, duration: float = 0.0
    ) -> str | None:
        """Record the outcome of a call admitted with ``permit``.

        Args:
            permit: what :meth:`allow` returned for this call.
            failure: whether the call failed.
            now: the current monotonic time (the call's completion time).
            duration: how long the call took, in seconds (for the slow-call rule).

        Returns:
            The new state when the outcome caused a transition (``"open"`` or
            ``"closed"``; take it with :meth:`take_transitions`), else None.
        """
        # acquire/release, not `with`: half the lock's cost, on every call.
        self._lock.acquire()
        try:
            if permit is not self._permit:
                return None  # admitted in an earlier generation: that state is gone
            if permit.flight:
                permit.flight.pop()
            self._last_used = now
            slow = duration > self._slow_duration
            if self._state is CLOSED:
                if now >= self._bucket_end:
                    self._roll(now)
                i = self._index
                self._bucket_calls[i] += 1
                calls = self._total_calls = self._total_calls + 1
                if failure:
                    self._bucket_failures[i] += 1
                    self._total_failures += 1
                    self._consecutive += 1
                    if self._consecutive >= self._consecutive_limit:
                        self._transition(OPEN, now)
                        return OPEN
                else:
                    self._consecutive = 0
                if slow:
                    self._bucket_slow[i] += 1
                    self._total_slow += 1
                # Ratios by division, not `failures >= rate * calls`: the product can
                # round above an exact ratio (0.3 * 10 > 3) and miss the threshold. The
                # rule is checked after successes too: reaching minimum_calls, or old
                # buckets leaving the window, can cross the threshold.
                if calls >= self._minimum_calls and (
                    self._total_failures / calls >= self._failure_rate
                    or self._total_slow / calls >= self._slow_rate
                ):
                    self._transition(OPEN, now)
                    return OPEN
                return None
            # Half-open (a permit of the current generation is never held while open).
            if failure or slow:
                self._transition(OPEN, now)
                return OPEN
            self._probe_successes += 1
            if self._probe_successes >= self._success_threshold:
                self._transition(CLOSED, now)
                return CLOSED
            return None
        finally:
            self._lock.release()

    def release(self, permit: Permit) -> None:
        """Give back the permit of a call that was cancelled: it counts as nothing."""
        with self._lock:
            if permit is self._permit and permit.flight:
                permit.flight.pop()

    def is_current(self, permit: Permit) -> bool:
        """Whether ``permit`` belongs to the current state (no transition since)."""
        return permit is self._permit

    def adopt(self, remaining: float, now: float) -> bool:
        """Take on an opening published elsewhere: open for ``remaining`` seconds more,
        or half-open when ``remaining`` is 0. Failure counts are kept.

        Returns:
            True when a transition is pending (take it with :meth:`take_transitions`).
        """
        with self._lock:
            state = self._state
            if state is _RETIRED:
                return False
            if remaining > 0.0:
                if state is OPEN:
                    self._open_until = now + remaining
                    return False
                self._transition(OPEN, now, now + remaining)
                return True
            if state is HALF_OPEN:
                return False
            self._transition(HALF_OPEN, now)
            return True

    # -- transitions and their reporting -------------------------------------------------
    def _transition(self, new: str, now: float, until: float | None = None) -> None:
        # Under the lock. A new permit object starts a new generation; `_open_until` is
        # set before `_closed_permit` so a lock-free reader never sees "not closed" with
        # a stale deadline.
        old = self._state
        self._generation += 1
        permit = self._permit = Permit(self._generation, probe=new is HALF_OPEN)
        self._probe_successes = 0
        if new is OPEN:
            self._open_until = until if until is not None else now + self._open_duration
        else:
            self._open_until = _NEVER
        if new is CLOSED:
            self._clear_window(now)
            self._consecutive = 0
        self._state = new
        self._closed_permit = permit if new is CLOSED else None
        self._outbox.append(Transition(self.host, old, new))

    def take_transitions(self, *, more: bool = False) -> list[Transition]:
        """Take the queued transitions, for reporting outside the lock, in order.

        Call it with ``more=False`` first: if another caller is already reporting this
        breaker's transitions (or there are none), the answer is empty and that caller
        will report yours too. Otherwise keep calling with ``more=True`` after
        reporting each batch until the answer is empty, which ends your turn. If
        reporting fails half-way, call :meth:`abandon_transitions`.
        """
        with self._lock:
            if not more:
                if self._dispatching or not self._outbox:
                    return []
                self._dispatching = True
            batch = self._outbox
            if batch:
                self._outbox = []
            else:
                self._dispatching = False
            return batch

    def abandon_transitions(self) -> None:
        """End a reporting turn early (what is still queued waits for the next caller)."""
        with self._lock:
            self._dispatching = False

    # -- the sliding window --------------------------------------------------------------
    def _roll(self, now: float) -> None:
        # Under the lock: drop the buckets that left the window on the way to `now`.
        epoch = int(now // self._width)
        gap = epoch - self._epoch
        if gap <= 0:
            return  # float rounding at a bucket edge: stay in the current bucket
        if gap >= WINDOW_BUCKETS:
            self._clear_window(now)
            return
        calls, failures, slow = self._bucket_calls, self._bucket_failures, self._bucket_slow
        for step in range(1, gap + 1):
            i = (self._epoch + step) % WINDOW_BUCKETS
            self._total_calls -= calls[i]
            self._total_failures -= failures[i]
            self._total_slow -= slow[i]
            calls[i] = failures[i] = slow[i] = 0
        self._set_epoch(epoch)

    def _clear_window(self, now: float) -> None:
        for bucket in (self._bucket_calls, self._bucket_failures, self._bucket_slow):
            bucket[:] = [0] * WINDOW_BUCKETS
        self._total_calls = self._total_failures = self._total_slow = 0
        self._set_epoch(int(now // self._width))

    def _set_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._index = epoch % WINDOW_BUCKETS
        self._bucket_end = (epoch + 1) * self._width

    # -- introspection -------------------------------------------------------------------
    def current_state(self, now: float) -> str:
        """The state at ``now``, applying the lazy open -> half_open transition.

        A retired breaker reports ``"closed"`` (its origin starts afresh).
        """
        with self._lock:
            self._advance(now)
            return CLOSED if self._state is _RETIRED else self._state

    def _advance(self, now: float) -> None:
        # Under the lock: the time-driven parts (the window slides, open expires).
        if self._state is OPEN and now >= self._open_until:
            self._transition(HALF_OPEN, now)
        if now >= self._bucket_end:
            self._roll(now)

    def snapshot(self, now: float) -> BreakerSnapshot:
        """A :class:`BreakerSnapshot` at ``now`` (applies the lazy transition)."""
        with self._lock:
            self._advance(now)
            calls = self._total_calls
            state = CLOSED if self._state is _RETIRED else self._state
            return BreakerSnapshot(
                host=self.host,
                state=state,
                calls=calls,
                failures=self._total_failures,
                failure_rate=self._total_failures / calls if calls else 0.0,
                slow_calls=self._total_slow,
                slow_call_rate=self._total_slow / calls if calls else 0.0,
                consecutive_failures=self._consecutive,
                in_flight=len(self._permit.flight),
                seconds_until_half_open=max(0.0, self._open_until - now) if state is OPEN else 0.0,
            )

    # -- registry support ----------------------------------------------------------------
    def idle_since(self, now: float) -> float | None:
        """When this breaker was last used, if it is idle at ``now``; else None.

        Idle means closed, nothing in flight, and holding no evidence toward tripping:
        no failures or slow calls in the window and no run of consecutive failures (a
        run older than the window does not keep a breaker alive).
        """
        with self._lock:
            if not self._idle(now):
                return None
            return self._last_used

    def _idle(self, now: float) -> bool:
        if self._state is not CLOSED or self._permit.flight:
            return False
        self._advance(now)
        if self._total_failures or self._total_slow:
            return False
        return not self._consecutive or now - self._last_used >= self.policy.window

    def retire(self, now: float, *, only_if_idle: bool = False) -> bool:
        """Take this breaker out of service (it left the registry).

        Outstanding permits become stale, :meth:`allow` answers ``None`` from now on,
        and if the breaker was not closed a transition to ``"closed"`` is queued (its
        origin starts afresh). With ``only_if_idle``, nothing happens unless the
        breaker is idle at ``now``; a call admitted lock-free at that very instant is
        not counted anywhere (as if it had been admitted just before the removal).

        Returns:
            True when the breaker was retired.
        """
        with self._lock:
            if self._state is _RETIRED or (only_if_idle and not self._idle(now)):
                return False
            old = self._state
            if old is not CLOSED:
                self._outbox.append(Transition(self.host, old, CLOSED))
            self._generation += 1
            self._permit = Permit(self._generation)
            self._closed_permit = None
            self._open_until = _NEVER
            self._state = _RETIRED
            return True


class BreakerRegistry:
    """The breakers of one client, one per origin, at most ``max_hosts`` of them.

    When a new origin arrives and the registry is full, the least recently used *idle*
    breakers are evicted (see :meth:`Breaker.idle_since`); open, half-open and busy
    breakers are never evicted. If none is idle, the new origin gets no breaker for
    now (:meth:`get_or_create` answers ``None``), so memory stays bounded whatever
    the number of hosts.
    """

    __slots__ = ("_breakers", "_keys", "_lock", "_rescan_at", "max_hosts")

    def __init__(self, max_hosts: int) -> None:
        self.max_hosts = max_hosts
        self._breakers: dict[Origin, Breaker] = {}
        self._keys: dict[str, int] = {}  # host key -> breakers using it
        self._lock = threading.Lock()
        self._rescan_at = _NEVER

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, origin: Origin) -> Breaker | None:
        """The breaker of ``origin``, if it has one (lock-free)."""
        return self._breakers.get(origin)

    def get_or_create(
        self, origin: Origin, host: str, policy: CircuitBreakerPolicy, now: float
    ) -> tuple[Breaker | None, list[str]]:
        """The breaker of ``origin``, created with ``policy`` if needed.

        Returns:
            ``(breaker, removed)``: the breaker (``None`` when the registry is full of
            breakers that may not be evicted) and the host keys that no breaker uses
            any more after evictions, to report outside the lock.
        """
        with self._lock:
            found = self._breakers.get(origin)
            if found is not None:
                return found, []
            removed: list[str] = []
            if len(self._breakers) >= self.max_hosts:
                if now < self._rescan_at:
                    return None, []
                removed = self._evict(now)
                if len(self._breakers) >= self.max_hosts:
                    self._rescan_at = now + FULL_RESCAN_INTERVAL
                    return None, removed
            breaker = Breaker(host, policy, now, signal_key=f"{origin[0]}://{host}")
            self._breakers[origin] = breaker
            self._keys[host] = self._keys.get(host, 0) + 1
            return breaker, removed

    def _evict(self, now: float) -> list[str]:
        # Under the registry lock (breaker locks nest inside it, never the reverse).
        idle = []
        for origin, breaker in self._breakers.items():
            since = breaker.idle_since(now)
            if since is not None:
                idle.append((since, origin))
        idle.sort()
        batch = max(1, self.max_hosts // EVICTION_BATCH_DIVISOR)
        removed = []
        for _, origin in idle[:batch]:
            breaker = self._breakers[origin]
            # Re-checked under the breaker's lock: a call may have started meanwhile.
            if breaker.retire(now, only_if_idle=True):
                removed.extend(self._drop(origin))
        return removed

    def _drop(self, origin: Origin) -> list[str]:
        breaker = self._breakers.pop(origin)
        left = self._keys[breaker.host] - 1
        if left:
            self._keys[breaker.host] = left
            return []
        del self._keys[breaker.host]
        return [breaker.host]

    def remove(self, origins: list[Origin], now: float) -> tuple[list[Breaker], list[str]]:
        """Remove the breakers of ``origins`` (a reset).

        Returns:
            ``(retired, removed)``: the retired breakers (their queued transitions
            still need reporting) and the host keys no breaker uses any more.
        """
        retired: list[Breaker] = []
        removed: list[str] = []
        with self._lock:
            for origin in origins:
                breaker = self._breakers.get(origin)
                if breaker is None:
                    continue
                breaker.retire(now)
                retired.append(breaker)
                removed.extend(self._drop(origin))
        return retired, removed

    def items(self) -> list[tuple[Origin, Breaker]]:
        """A copy of ``(origin, breaker)`` pairs."""
        with self._lock:
            return list(self._breakers.items())
