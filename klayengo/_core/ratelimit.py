"""GCRA rate limiting with reservations: pure decisions, time injected.

The algorithm
-------------
GCRA (the generic cell rate algorithm) keeps one number per limiter, the
*theoretical arrival time* ``tat``. With the emission interval ``T = per / rate`` and
the burst tolerance ``tau = (burst - 1) * T``, a request arriving at ``now`` may start
at::

    tat'  = max(tat, now)
    start = max(tat' - tau, now, paused_until)
    tat'  = max(tat', start)          # only moves when a pause pushed the start
    tat   = tat' + T                  # the reservation: the slot is now taken

``start - now`` is the request's delay. If it exceeds the caller's ``max_wait`` the
request is rejected and the state is left untouched (``retry_after`` is the delay it
would have had); otherwise the slot is *reserved* and the caller sleeps until
``start``. Because ``tat`` only grows and the clock is read under the limiter's lock,
starts are non-decreasing in reservation order: waiters are served FIFO.

Guarantee
---------
In any interval of length ``L`` at most ``burst + L / T`` requests start (i.e.
``burst + rate * L / per``). Proof sketch: every reservation ``j`` leaves a pair
``(s_j, tat_j)`` with ``tat_j - T - tau <= s_j <= tat_j - T`` and
``tat_j >= tat_i + (j - i) * T`` for ``i < j``; hence
``s_j - s_i >= (j - i) * T - tau``, so ``n`` starts span at least ``(n - burst) * T``.
The cancellation and pause rules below keep every surviving reservation's pair in a
sequence with these properties, so the guarantee survives them. Real sleeps end a
little late, so wall-clock starts can exceed the bound by the sleep overshoot.

Cancellation (giving a slot back)
---------------------------------
A waiter that is cancelled *before its start time* gives its slot back: every waiter
that reserved after it moves up one slot (takes the start of the waiter before it in
the queue), and ``tat`` moves back by ``T``. The limiter is then exactly where it
would be had the cancelled request never arrived, so nobody behind it is delayed by
it and no slot is ever double-booked. A waiter cancelled after its start time has
passed has used its slot (it may already be on the wire): nothing is given back.

The queue is two lists: the waiters in FIFO order and their slots (start times).
Moving everyone up is then "remove the waiter, drop the last slot", two C-level list
operations, so even hundreds of waiters cancelled together stay cheap. Moved-up
waiters are asleep until their old start: :meth:`GCRALimiter.cancel` returns the
first of them to wake, and each waiter that finishes waiting wakes its successor if
that one is asleep past its (new) slot (:meth:`GCRALimiter.finish`): one wake-up per
moved waiter, each a full slot before that waiter's new start.

Pause (``Retry-After`` back-pressure)
-------------------------------------
:meth:`GCRALimiter.pause` forbids starts before ``now + min(seconds, max_pause)``.
Waiters already queued with a later start are re-planned in their FIFO order as if
they arrived now (so they too respect the pause, and the guarantee holds); their
wait can grow by at most the pause. ``max_wait`` is checked when a request reserves,
not again after a pause.

Idleness
--------
A limiter whose ``tat`` and pause are in the past and that has no waiter decides
exactly like a fresh one, so dropping it from a registry changes nothing. The
registry (:class:`LimiterRegistry`) keeps at most ``max_hosts`` per-host limiters and
drops idle ones first; only when more than ``max_hosts`` hosts are all busy at once
does it drop the one that will be idle soonest, which may let that host start up to
``burst`` requests early.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ADMIT_NOW",
    "Admit",
    "GCRALimiter",
    "LimiterRegistry",
    "Reject",
    "Reservation",
]

_NEVER: Final = -math.inf
#: Float slack when comparing a delay with ``max_wait``, so that asking again exactly
#: ``retry_after`` later is admitted despite rounding.
WAIT_EPSILON: Final = 1e-9


class Reservation:
    """A waiter's place in its limiter's queue (its slot lives in the limiter).

    Attributes:
        until: the start the waiter last read (:meth:`GCRALimiter.arm`), i.e. when it
            plans to wake; a waiter whose slot moved earlier than this needs a wake-up.
        waker: called (outside every lock) to make the waiter read its slot again;
            set by the transport that sleeps on this reservation.
    """

    __slots__ = ("until", "waker")

    def __init__(self) -> None:
        self.until = -math.inf
        self.waker: Callable[[], object] | None = None

    def wake(self) -> None:
        """Make the waiter read its slot again (no-op when it has no waker)."""
        waker = self.waker
        if waker is not None:
            waker()


@dataclass(frozen=True, slots=True)
class Admit:
    """The request may start after ``delay`` seconds.

    ``reservation`` is set when ``delay > 0``: the caller must call
    :meth:`GCRALimiter.finish` when it stops waiting, or :meth:`GCRALimiter.cancel`
    when it gives up.
    """

    delay: float
    reservation: Reservation | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """The request would have to wait ``retry_after`` seconds, more than allowed."""

    retry_after: float


#: The decision for a request that may start at once (shared: it carries no state).
ADMIT_NOW: Final = Admit(0.0)


class GCRALimiter:
    """One GCRA limiter. Not locked itself: call its methods under ``self.lock``.

    Args:
        rate: requests per ``per`` seconds.
        per: the period in seconds.
        burst: requests that may start at once.
        max_pause: the cap on :meth:`pause`.
        name: the host key reported for this limiter (or the client's name).
    """

    __slots__ = (
        "burst",
        "evicted",
        "interval",
        "lock",
        "max_pause",
        "name",
        "paused_until",
        "pending",
        "slots",
        "tat",
        "tolerance",
    )

    def __init__(
        self, rate: float, per: float, burst: int, *, max_pause: float, name: str = ""
    ) -> None:
        self.configure(per / rate, burst)
        self.max_pause = max_pause
        self.name = name
        self.tat = _NEVER
        self.paused_until = _NEVER
        #: Reservations whose waiter has not finished waiting, in FIFO order, and
        #: their slots (start times, non-decreasing).
        self.pending: list[Reservation] = []
        self.slots: list[float] = []
        self.lock = threading.Lock()
        #: Set (under ``lock``) when a registry dropped this limiter: retry the lookup.
        self.evicted = False

    def configure(self, interval: float, burst: int) -> None:
        """Set the emission interval and the burst (under ``lock``). Slots already
        reserved keep their start; later reservations follow the new parameters."""
        self.interval = interval
        self.burst = burst
        self.tolerance = (burst - 1) * interval

    def reserve(self, now: float, max_wait: float | None) -> Admit | Reject:
        """Decide for a request arriving at ``now``; reserve its slot when admitted."""
        tat = self.tat
        if tat < now:
            tat = now
        start = tat - self.tolerance
        if start <= now and self.paused_until <= now:
            # The hot path: a token is available.
            self.tat = tat + self.interval
            return ADMIT_NOW
        start = max(start, now, self.paused_until)
        delay = start - now
        if max_wait is not None and delay > max_wait + WAIT_EPSILON:
            return Reject(delay)
        self.tat = max(tat, start) + self.interval
        if delay <= 0.0:
            return ADMIT_NOW
        reservation = Reservation()
        self.pending.append(reservation)
        self.slots.append(start)
        return Admit(delay, reservation)

    def start_of(self, reservation: Reservation) -> float:
        """The current slot of a waiting ``reservation``."""
        return self.slots[self.pending.index(reservation)]

    def arm(self, reservation: Reservation) -> float:
        """The waiter is about to sleep until its slot: record and return that slot."""
        start = self.slots[self.pending.index(reservation)]
        reservation.until = start
        return start

    def _stale(self, index: int) -> Reservation | None:
        # The waiter at `index`, if it sleeps past its slot (a cancellation moved it up).
        if index < len(self.pending) and self.pending[index].until > self.slots[index]:
            return self.pending[index]
        return None

    def finish(self, reservation: Reservation) -> Reservation | None:
        """The waiter of ``reservation`` stopped waiting and starts now.

        Returns the next waiter to wake: one that a cancellation moved up while it
        slept (it relies on this hand-off to learn its earlier start).
        """
        try:
            index = self.pending.index(reservation)
        except ValueError:  # already removed by cancel()
            return None
        del self.pending[index]
        del self.slots[index]
        return self._stale(index)

    def cancel(self, reservation: Reservation, now: float) -> Reservation | None:
        """The waiter of ``reservation`` gave up at ``now``; give its slot back.

        Returns the waiter to wake (the first one that moved up), or None.
        """
        try:
            index = self.pending.index(reservation)
        except ValueError:
            return None
        del self.pending[index]
        if self.slots[index] <= now:
            # Its turn had come: the slot is spent, as if it had started.
            del self.slots[index]
            return None
        # Each later waiter takes the slot of the one before it; the last slot is freed.
        self.slots.pop()
        self.tat -= self.interval
        return self._stale(index)

    def pause(self, now: float, seconds: float) -> float:
        """Forbid starts before ``now + min(seconds, max_pause)``; returns that time.

        Queued waiters whose start is later than ``now`` are re-planned, in order,
        as if they arrived now.
        """
        until = now + min(seconds, self.max_pause)
        if until <= self.paused_until:
            return self.paused_until
        self.paused_until = until
        slots = self.slots
        first = bisect.bisect_right(slots, now)
        if first < len(slots):
            # Roll back the reservations of the waiters not yet due (each rollback is
            # exact or conservative, see the module docstring), then reserve again in
            # FIFO order.
            tat = self.tat - (len(slots) - first) * self.interval
            for index in range(first, len(slots)):
                if tat < now:
                    tat = now
                start = max(tat - self.tolerance, now, until)
                if start > tat:
                    tat = start
                tat += self.interval
                slots[index] = start
            self.tat = tat
        return until

    def idle(self, now: float) -> bool:
        """True when a fresh limiter would decide exactly like this one."""
        return self.tat <= now and self.paused_until <= now and not self.pending


class LimiterRegistry:
    """Limiters by key (an origin, a client-wide quota, ...), bounded in number.

    Each :meth:`add` passes the bound for its kind of limiter (a policy's
    ``max_hosts``); see the module docstring for what is dropped when it is
    reached: idle limiters first (harmless), then the ones that will be idle soonest.
    """

    __slots__ = ("_hosts", "_lock", "host")

    def __init__(self) -> None:
        self._hosts: dict[Hashable, GCRALimiter] = {}
        self._lock = threading.Lock()
        #: ``host(key)``: the limiter of ``key``, or None (a lock-free ``dict.get``,
        #: bound once: this is on every request's path).
        self.host: Callable[[Hashable], GCRALimiter | None] = self._hosts.get

    def __len__(self) -> int:
        return len(self._hosts)

    def add(
        self,
        key: Hashable,
        interval: float,
        burst: int,
        max_keys: int,
        now: float,
        *,
        max_pause: float = math.inf,
        name: str = "",
    ) -> GCRALimiter:
        """The limiter of ``key``, created (keeping at most ``max_keys``) if missing."""
        with self._lock:
            found = self._hosts.get(key)
            if found is None:
                if len(self._hosts) >= max_keys:
                    self._shrink(max_keys - 1, now)
                found = GCRALimiter(1.0, interval, burst, max_pause=max_pause, name=name)
                self._hosts[key] = found
        return found

    def host_limiters(self) -> dict[Hashable, GCRALimiter]:
        """A snapshot of the limiters (for introspection and tests)."""
        return dict(self._hosts)

    def _shrink(self, target: int, now: float) -> None:
        # Called under self._lock. Drop every idle limiter (harmless); if that is not
        # enough, drop the ones whose tat is earliest (they will be idle soonest).
        hosts = self._hosts
        for key, limiter in list(hosts.items()):
            with limiter.lock:
                if limiter.idle(now):
                    limiter.evicted = True
                    del hosts[key]
        if len(hosts) <= target:
            return
        by_tat = sorted(hosts.items(), key=lambda item: max(item[1].tat, item[1].paused_until))
        for key, limiter in by_tat[: len(hosts) - target]:
            with limiter.lock:
                limiter.evicted = True
            del hosts[key]
