"""The demo's story: five origins, what each upstream does and the client's policy for it.

The whole scenario scales with ``--duration`` (phases, open durations, freshness), so
a 4-second run in the test suite goes through the same story as the default one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._describe import describe_breaker, describe_cache, describe_rate_limit, describe_retry
from .._policies import (
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    RateLimitPolicy,
    RetryPolicy,
)
from ..testing import (
    Behaviour,
    Cacheable,
    Fail,
    Healthy,
    Intermittent,
    Phases,
    RateLimited,
    Slow,
)

__all__ = ["CLIENT_RETRY", "REQUEST_TIMEOUT", "Origin", "scenario"]

#: Every request's timeout; the slow origin's spikes exceed it on purpose.
REQUEST_TIMEOUT: Final = 1.0
#: The client's own retry policy: quick retries, so the demo moves along.
CLIENT_RETRY: Final = RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.5)

# The scenario, as fractions of the duration.
FLAKY_INTERMITTENT: Final = 0.3
FLAKY_DOWN: Final = 0.25
FLAKY_FAILURE_RATE: Final = 0.3
CACHEABLE_UP: Final = 0.45
CACHEABLE_DOWN: Final = 0.25
CACHEABLE_CHANGE_EVERY: Final = 0.3
CACHEABLE_ITEMS: Final = 6
SLOW_DELAY: Final = (0.05, 0.3)
SLOW_SPIKE_RATE: Final = 0.08
SLOW_SPIKE: Final = 1.5
SERVER_RATE: Final = 5.0
CLIENT_RATE: Final = 6.0


@dataclass
class Origin:
    """One origin of the scenario.

    Attributes:
        name: its name in the tables.
        weight: its share of the traffic (relative to the others').
        behaviour: what its upstream does.
        upstream_text: that, in words.
        policy: the client's policy for it (``None``: the client's defaults).
        phases: the timeline of its upstream, when it has one.
        phase_labels: a word per phase (one word when it has no timeline).
        paths: the paths requested (uniformly).
    """

    name: str
    weight: int
    behaviour: Behaviour
    upstream_text: str
    policy: HostPolicy | None = None
    phases: Phases | None = None
    phase_labels: tuple[str, ...] = ("up",)
    paths: tuple[str, ...] = ("/",)

    def phase(self, now: float) -> str:
        """The word for the upstream's phase at ``now``."""
        if self.phases is None:
            return self.phase_labels[0]
        return self.phase_labels[self.phases.phase_index(now)]

    def policy_text(self) -> str:
        """The client's policy for this origin, in words."""
        if self.policy is None:
            return (
                f"client defaults: {describe_retry(CLIENT_RETRY)}; "
                f"{describe_breaker(CircuitBreakerPolicy())}"
            )
        parts = []
        if isinstance(self.policy.retry, RetryPolicy):
            parts.append(describe_retry(self.policy.retry))
        if isinstance(self.policy.breaker, CircuitBreakerPolicy):
            parts.append(describe_breaker(self.policy.breaker))
        if isinstance(self.policy.rate_limit, RateLimitPolicy):
            parts.append(describe_rate_limit(self.policy.rate_limit))
        if isinstance(self.policy.cache, CachePolicy):
            parts.append(describe_cache(self.policy.cache))
        return "; ".join(parts)


def scenario(duration: float, seed: int) -> list[Origin]:
    """The five origins: what each upstream does, and the client's policy for it.

    Time-based settings scale with ``duration`` so that short runs tell the same story:
    the breakers must open while an origin is down and close again after it recovers,
    which the default policy's 30 s window and open duration would outlast.
    """
    strict_breaker = CircuitBreakerPolicy(
        window=max(1.0, duration / 5),
        minimum_calls=10,
        failure_rate_threshold=0.6,
        consecutive_failures=5,
        open_duration=max(0.25, duration * 0.075),
    )
    flaky = Phases(
        (duration * FLAKY_INTERMITTENT, Intermittent(FLAKY_FAILURE_RATE, seed=seed)),
        (duration * FLAKY_DOWN, Fail(503)),
        (None, Healthy()),
    )
    resource = Cacheable(
        max_age=max(1.0, duration / 10), change_every=duration * CACHEABLE_CHANGE_EVERY
    )
    cacheable = Phases(
        (duration * CACHEABLE_UP, resource),
        (duration * CACHEABLE_DOWN, Fail(503)),
        (None, resource),
    )
    slow = Intermittent(
        SLOW_SPIKE_RATE,
        fail=Slow(SLOW_SPIKE),
        then=Slow(SLOW_DELAY, seed=seed),
        seed=seed + 1,
    )
    low, high = SLOW_DELAY
    return [
        Origin("healthy", 3, Healthy(), "always 200"),
        Origin(
            "slow",
            2,
            slow,
            f"{low * 1000:.0f}-{high * 1000:.0f} ms; {SLOW_SPIKE_RATE:.0%} take {SLOW_SPIKE:g} s "
            f"(timeout {REQUEST_TIMEOUT:g} s)",
            HostPolicy(
                retry=RetryPolicy(max_retries=1, backoff_base=0.05, deadline=2.5 * REQUEST_TIMEOUT)
            ),
            phase_labels=("slow",),
        ),
        Origin(
            "flaky",
            3,
            flaky,
            f"{FLAKY_FAILURE_RATE:.0%} 503s -> down (503) -> recovers",
            HostPolicy(breaker=strict_breaker),
            phases=flaky,
            # Short words: the live table has 80 columns for every column of a row.
            phase_labels=(f"{FLAKY_FAILURE_RATE:.0%} 503s", "down", "recovered"),
        ),
        Origin(
            "limited",
            1,
            RateLimited(SERVER_RATE),
            f"429 + Retry-After over {SERVER_RATE:g} req/s",
            HostPolicy(rate_limit=RateLimitPolicy(rate=CLIENT_RATE, burst=2, max_wait=0.5)),
            phase_labels=(f"{SERVER_RATE:g}/s",),
        ),
        Origin(
            "cacheable",
            3,
            cacheable,
            "ETag, Last-Modified, max-age; down for a while",
            HostPolicy(cache=CachePolicy(stale_if_error=2 * duration), breaker=strict_breaker),
            phases=cacheable,
            phase_labels=("up", "down", "up"),
            paths=tuple(f"/items/{n}" for n in range(1, CACHEABLE_ITEMS + 1)),
        ),
    ]
