"""CircuitBreakerTransport / AsyncCircuitBreakerTransport: one circuit breaker per origin.

The state machine lives in :mod:`klayengo._core.breaker`; this module is the thin
shell around it: look up the breaker of the request's origin, ask it for a permit,
send the request, classify the outcome, record it, and report transitions (log,
events, ``on_state_change``) after every lock is released.

Classification of an outcome (the policy's ``is_failure(response, exception)``, when
set, decides instead of the defaults; if it raises, the default stands and a warning
is logged):

- a response is a failure when its status is in ``failure_statuses`` (500, 502, 503,
  504 by default); anything else, 4xx included, is a success. The outcome (and the
  call's duration, for the slow-call rule) is taken when the response headers
  arrive: a streamed body is never read here;
- an ``httpx.TransportError`` (connect, read, write, protocol, proxy errors and every
  ``httpx.TimeoutException``) or a ``TimeoutError`` is a failure;
- a klayengo ``ResilienceError`` from a layer below (``RateLimitExceeded``) and
  ``httpx.UnsupportedProtocol`` say nothing about the upstream's health: they count
  as neither success nor failure (the predicate is not consulted), so the client's
  own rate limit can never trip its breaker;
- any other ``Exception`` (a bug in a custom transport) counts as neither, unless the
  predicate says otherwise;
- cancellation (``BaseException`` that is not an ``Exception``: asyncio/trio
  cancellation, ``KeyboardInterrupt``, ``GeneratorExit``) counts as neither and frees
  the call's probe slot.

Host keys and origins: breakers are kept per origin ``(scheme, host, port)``, and
named by host key. ``http://api.example.com`` and ``https://api.example.com`` are two
breakers that share the host key ``api.example.com``. Introspection accepts an origin
URL (exactly that origin) or a host key: ``"api.example.com"`` means that host on its
scheme's default port (both origins above); ``"api.example.com:8443"`` means that port
under any scheme. When a host key covers several breakers, ``breaker_state`` and
``breaker_snapshot`` report the worst one (open, then half-open, then closed; ties go
to the higher failure rate) and ``reset_breaker`` resets them all.

The registry is shared by every stack of a client and bounded by the client's
``CircuitBreakerPolicy.max_hosts`` (with breakers enabled only through ``hosts=``, the
largest ``max_hosts`` among those policies). When it is full, idle breakers are
evicted (``breaker_removed``); if none is idle, a new origin passes untracked until
one is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Final, NoReturn

from ..._context import LayerContext
from ..._core.backend import DEFAULT_PROBE_LEASE_TTL, BreakerSignal
from ..._core.breaker import (
    CLOSED,
    OPEN,
    STATE_RANK,
    Breaker,
    BreakerRegistry,
    BreakerSnapshot,
    Permit,
    Transition,
)
from ..._core.hosts import Origin, _ascii_host, default_port, host_key, origin
from ..._core.options import EXTENSION_KEY, request_options
from ..._core.report import report
from ..._policies import DEFAULT_BREAKER_MAX_HOSTS, CircuitBreakerPolicy, HostPolicy
from .. import httpx
from .._exceptions import CircuitOpenError, ResilienceError
from ._layer import SyncLayer
from ._pipeline import AsyncPipeline

__all__ = [
    "REGISTRY_KEY",
    "AsyncCircuitBreakerTransport",
    "CircuitBreakerTransport",
    "breaker_snapshot",
    "breaker_state",
    "reset_breaker",
]

_log = logging.getLogger("klayengo")

#: The key of the per-client breaker registry in ``LayerContext.shared``.
REGISTRY_KEY: Final = "breaker.registry"

#: Exceptions that count as neither success nor failure: they come from this side.
_NOT_UPSTREAM: Final = (ResilienceError, httpx.UnsupportedProtocol)
#: Exceptions that count as failures by default.
_FAILURES: Final = (httpx.TransportError, TimeoutError)

#: The shortest probe lease: a prober's lease lasts its request's timeouts, at least this.
MIN_PROBE_LEASE_TTL: Final = 1.0


#: What an admitted call carries from admission to its outcome: its breaker, its permit
#: and when it started. The twins unpack it into locals: an object per call would be
#: one more object held by every request in flight (and counted by every collection).
_Admitted = tuple[Breaker, Permit, float]
#: A permit checked against the shared signal, and the shared probe lease it holds.
_Checked = tuple[Permit, str | None]


def _lease_ttl(request: httpx.Request) -> float:
    """How long a probe may hold its lease: the request's timeouts added up (a prober
    that crashed frees its slot after that), or a default when one is unbounded."""
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        values = list(timeouts.values())
        if values and all(isinstance(v, int | float) for v in values):
            return max(MIN_PROBE_LEASE_TTL, float(sum(values)))
    return DEFAULT_PROBE_LEASE_TTL


def _max_hosts(context: LayerContext) -> int:
    # One registry per client: the client's policy sets its bound; with breakers only
    # for some host patterns, the largest of their bounds.
    resolver = context.resolver
    if resolver.default.breaker is not None:
        return resolver.default.breaker.max_hosts
    bounds = [
        hp.breaker.max_hosts
        for hp in resolver.patterns.values()
        if isinstance(hp.breaker, CircuitBreakerPolicy)
    ]
    return max(bounds, default=DEFAULT_BREAKER_MAX_HOSTS)


def _default(policy: CircuitBreakerPolicy | None) -> CircuitBreakerPolicy:
    # A standalone breaker layer without a policy uses the default one.
    return policy if policy is not None else CircuitBreakerPolicy()


def _registry(context: LayerContext) -> BreakerRegistry:
    return context.shared(REGISTRY_KEY, lambda: BreakerRegistry(_max_hosts(context)))


# -- reporting, always outside every lock ---------------------------------------------------
def _notify(context: LayerContext, policy: CircuitBreakerPolicy, transition: Transition) -> None:
    host, old, new = transition
    _log.info(
        "klayengo circuit breaker %s: %s -> %s",
        host,
        old,
        new,
        extra={"host": host, "old_state": old, "new_state": new},
    )
    try:
        context.events.breaker_transition(host, old, new)
    except Exception:
        _log.warning("klayengo event sink failed on breaker_transition", exc_info=True)
    callback = policy.on_state_change
    if callback is not None:
        try:
            callback(host, old, new)
        except Exception:
            _log.warning(
                "klayengo circuit breaker %s: on_state_change(%s -> %s) raised; ignored",
                host,
                old,
                new,
                exc_info=True,
            )


def _dispatch(context: LayerContext, breaker: Breaker) -> None:
    """Report the breaker's queued transitions, unless another caller is doing it."""
    batch = breaker.take_transitions()
    if not batch:
        return
    try:
        while batch:
            for transition in batch:
                _notify(context, breaker.policy, transition)
            batch = breaker.take_transitions(more=True)
    except BaseException:
        breaker.abandon_transitions()
        raise


def _removed(context: LayerContext, hosts: list[str]) -> None:
    for host in hosts:
        _log.debug("klayengo circuit breaker %s removed", host, extra={"host": host})
        try:
            context.events.breaker_removed(host)
        except Exception:
            _log.warning("klayengo event sink failed on breaker_removed", exc_info=True)


# -- the request path shared by both twins ----------------------------------------------
class _Gate:
    """Admission, classification and recording, shared by the sync and async twins."""

    __slots__ = ("_clock", "_context", "_registry", "_resolver", "local", "signals")

    def __init__(self, context: LayerContext) -> None:
        self._context = context
        self._resolver = context.resolver
        self._clock = context.clock
        self._registry = _registry(context)
        self.signals = context.stores.signals
        #: Signals of this process only: never a signal to act on, nothing to settle.
        self.local = bool(getattr(self.signals, "local", False))

    def admit(self, request: httpx.Request) -> _Admitted | None:
        """A permit for ``request``; None when no breaker applies.

        Raises:
            CircuitOpenError: the origin's breaker refuses the call.
        """
        if EXTENSION_KEY in request.extensions and not request_options(request).breaker:
            return None
        url = request.url
        policy = self._resolver.resolve(url).breaker
        if policy is None:
            return None
        key = origin(url)
        registry = self._registry
        breaker = registry.get(key)
        while True:
            now = self._clock.monotonic()
            if breaker is None:
                breaker, removed = registry.get_or_create(key, host_key(url), policy, now)
                if removed:
                    _removed(self._context, removed)
                if breaker is None:
                    if _log.isEnabledFor(logging.DEBUG):
                        _log.debug(
                            "klayengo circuit breaker registry full (%d busy breakers); "
                            "%s passes untracked",
                            len(registry),
                            host_key(url),
                        )
                    return None
            result = breaker.allow(now)
            if isinstance(result, Permit):
                if breaker.pending:  # open -> half_open happened on the way in
                    _dispatch(self._context, breaker)
                return breaker, result, now
            if result is not None:
                break
            # None: the breaker was reset or evicted meanwhile. Look the origin up again
            # under the registry lock, which waits for the removal to finish.
            breaker = None
        if breaker.pending:
            _dispatch(self._context, breaker)
        self._reject(breaker, result.retry_after, request)

    def _reject(self, breaker: Breaker, retry_after: float, request: httpx.Request) -> NoReturn:
        host = breaker.host
        self._context.events.breaker_rejected(host)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "klayengo circuit breaker %s rejected a call (retry after %.3f s)",
                host,
                retry_after,
                extra={"host": host},
            )
        if retry_after > 0:
            message = f"circuit breaker for {host} is open; retry after {retry_after:.3f} s"
        else:
            message = f"circuit breaker for {host} is half-open and all its probes are busy"
        raise CircuitOpenError(message, request=request, host=host, retry_after=retry_after)

    def check(
        self,
        breaker: Breaker,
        permit: Permit,
        signal: BreakerSignal | None,
        request: httpx.Request,
    ) -> tuple[Permit, bool]:
        """Act on the origin's shared signal, read after the local permit.

        Returns:
            The permit to go with (a new one when the local state changed meanwhile),
            and True when the call must lease a shared probe slot before it goes.

        Raises:
            CircuitOpenError: the origin is open elsewhere (its permit is given back).
        """
        if signal is None:
            # Closed everywhere (or nothing shared): the local verdict stands.
            return permit, False
        now = self._clock.monotonic()
        if signal.generation != breaker.seen_generation:
            # Opened by another process: adopt it (once), then decide again locally.
            breaker.seen_generation = signal.generation
            if breaker.adopt(signal.remaining, now):
                _dispatch(self._context, breaker)
        if not breaker.is_current(permit):
            # The local state changed since the permit (this adoption or another
            # caller's): ask again.
            breaker.release(permit)
            result = breaker.allow(now)
            if not isinstance(result, Permit):
                self._reject(breaker, 0.0 if result is None else result.retry_after, request)
            permit = result
        if not permit.probe:
            return permit, False  # an opening this process already saw through and closed
        if signal.state == OPEN:  # our clock ran ahead of the shared one
            breaker.release(permit)
            self._reject(breaker, signal.remaining, request)
        return permit, True

    def leased(
        self, breaker: Breaker, permit: Permit, token: str | None, request: httpx.Request
    ) -> None:
        """The answer to the probe lease: go with ``token``, or fail fast without one."""
        if token is None:
            breaker.release(permit)
            self._reject(breaker, 0.0, request)

    @staticmethod
    def published(breaker: Breaker, signal: BreakerSignal) -> None:
        """This process opened the origin for everyone: remember that generation."""
        if signal.generation:
            breaker.seen_generation = signal.generation

    def completed(
        self, breaker: Breaker, permit: Permit, start: float, response: httpx.Response
    ) -> str | None:
        """Record a call that produced ``response``; the state to publish, if any."""
        policy = breaker.policy
        failure = response.status_code in policy.failure_statuses
        if policy.is_failure is not None:
            failure = _predicate(breaker, response, None, failure)
        now = self._clock.monotonic()
        new = breaker.record(permit, failure, now, now - start)
        if new is not None:
            _dispatch(self._context, breaker)
        report(response)["breaker"] = breaker.state
        return new

    def shared(self, breaker: Breaker, permit: Permit, request: httpx.Request) -> _Checked:
        """Check the origin's shared signal (a store shared with other processes), and
        lease a shared probe slot when the call is a half-open probe.

        Raises:
            CircuitOpenError: the origin is open elsewhere, or no probe slot is free
                (the permit was given back).
        """
        signals = self.signals
        key = breaker.signal_key
        try:
            permit, lease = self.check(breaker, permit, signals.get_signal(key), request)
            token = None
            if lease:
                token = signals.acquire_probe(
                    key, breaker.policy.half_open_max_calls, _lease_ttl(request)
                )
                self.leased(breaker, permit, token, request)
        except CircuitOpenError:
            raise  # the permit was given back
        except BaseException:
            breaker.release(permit)
            raise
        return permit, token

    async def ashared(self, breaker: Breaker, permit: Permit, request: httpx.Request) -> _Checked:
        """The async twin of :meth:`shared`."""
        signals = self.signals
        key = breaker.signal_key
        try:
            permit, lease = self.check(breaker, permit, await signals.aget_signal(key), request)
            token = None
            if lease:
                token = await signals.aacquire_probe(
                    key, breaker.policy.half_open_max_calls, _lease_ttl(request)
                )
                self.leased(breaker, permit, token, request)
        except CircuitOpenError:
            raise
        except BaseException:
            breaker.release(permit)
            raise
        return permit, token

    def settle(self, breaker: Breaker, token: str | None, publish: str | None) -> None:
        """Release the shared probe lease; publish a transition this process caused."""
        signals = self.signals
        key = breaker.signal_key
        if token is not None:
            signals.release_probe(key, token)
        if publish == OPEN:
            self.published(breaker, signals.publish_open(key, breaker.policy.open_duration))
        elif publish == CLOSED:
            signals.publish_closed(key)

    async def asettle(self, breaker: Breaker, token: str | None, publish: str | None) -> None:
        """The async twin of :meth:`settle`."""
        signals = self.signals
        key = breaker.signal_key
        if token is not None:
            await signals.arelease_probe(key, token)
        if publish == OPEN:
            self.published(breaker, await signals.apublish_open(key, breaker.policy.open_duration))
        elif publish == CLOSED:
            await signals.apublish_closed(key)

    def failed(self, breaker: Breaker, permit: Permit, start: float, exc: Exception) -> str | None:
        """Record a call that raised ``exc``; the state to publish, if any."""
        if isinstance(exc, _NOT_UPSTREAM):
            breaker.release(permit)
            return None
        failure = isinstance(exc, _FAILURES)
        if breaker.policy.is_failure is not None:
            failure = _predicate(breaker, None, exc, failure)
        elif not failure:
            breaker.release(permit)  # not an httpx error: a local bug says nothing
            return None
        now = self._clock.monotonic()
        new = breaker.record(permit, failure, now, now - start)
        if new is not None:
            _dispatch(self._context, breaker)
        return new


def _predicate(
    breaker: Breaker,
    response: httpx.Response | None,
    exc: BaseException | None,
    default: bool,
) -> bool:
    predicate = breaker.policy.is_failure
    assert predicate is not None
    try:
        return bool(predicate(response, exc))
    except Exception:
        _log.warning(
            "klayengo circuit breaker %s: is_failure raised; using the default classification",
            breaker.host,
            exc_info=True,
        )
        return default


# -- the twins --------------------------------------------------------------------------
class _Introspection:
    """Introspection for a standalone layer (a client has the same methods)."""

    _context: LayerContext

    def breaker_state(self, host: str | httpx.URL) -> str:
        """The breaker state of ``host`` (a host key or an origin URL)."""
        return breaker_state(self._context, host)

    def breaker_snapshot(self) -> dict[str, BreakerSnapshot]:
        """Host key -> :class:`~klayengo.BreakerSnapshot` for every breaker."""
        return breaker_snapshot(self._context)

    def reset_breaker(self, host: str | httpx.URL) -> None:
        """Forget the breaker(s) of ``host``: the next call starts a closed one."""
        reset_breaker(self._context, host)


class CircuitBreakerTransport(_Introspection, SyncLayer):
    """An httpx transport that trips a circuit breaker per origin.

    Usage::

        transport = klayengo.CircuitBreakerTransport(
            httpx.HTTPTransport(), klayengo.CircuitBreakerPolicy(consecutive_failures=5)
        )
        client = httpx.Client(transport=transport)

    Args:
        transport: the transport to wrap.
        policy: the breaker policy; default ``CircuitBreakerPolicy()``.
        hosts: per-host overrides (``HostPolicy(breaker=...)``; ``None`` turns the
            breaker off for the matching hosts).

    Raises (from ``handle_request``):
        CircuitOpenError: the origin's breaker is open, or half-open with every probe
            slot taken. Nothing was sent.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(
            transport,
            _context or LayerContext.standalone(breaker=_default(policy), hosts=hosts),
        )
        self._gate = _Gate(self._context)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        gate = self._gate
        admitted = gate.admit(request)
        if admitted is None:
            return self._next.handle_request(request)
        breaker, permit, start = admitted
        del admitted  # a request in flight holds these locals, not one more object
        token: str | None = None  # the shared probe lease of a half-open call
        if not gate.local:
            permit, token = gate.shared(breaker, permit, request)
        try:
            response = self._next.handle_request(request)
        except Exception as exc:
            gate.settle(breaker, token, gate.failed(breaker, permit, start, exc))
            raise
        except BaseException:
            breaker.release(permit)  # cancelled: neither a success nor a failure
            gate.settle(breaker, token, None)
            raise
        publish = gate.completed(breaker, permit, start, response)
        if publish is not None or token is not None:
            gate.settle(breaker, token, publish)
        return response


class AsyncCircuitBreakerTransport(_Introspection, AsyncPipeline):
    """The async twin of :class:`CircuitBreakerTransport` (asyncio and trio).

    Its request path is :class:`~klayengo._transports._pipeline.AsyncPipeline`'s, with
    this layer's gate as its only part.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: CircuitBreakerPolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        super().__init__(
            transport,
            _context or LayerContext.standalone(breaker=_default(policy), hosts=hosts),
        )
        self._gate = _Gate(self._context)


# -- introspection ----------------------------------------------------------------------
_EXPLICIT_DEFAULT_PORT: Final = re.compile(r":0*80$")
_BAD_TARGET: Final = (
    "host must be a host key such as 'api.example.com' or 'localhost:8080', "
    "or an origin URL such as 'https://api.example.com'"
)

#: What introspection looks for: (scheme or None for any, host, port or None for the
#: scheme's default).
_Target = tuple[str | None, str, int | None]


def _target(value: str | httpx.URL) -> _Target:
    if isinstance(value, httpx.URL):
        return origin(value)
    if not isinstance(value, str):
        raise TypeError(f"{_BAD_TARGET}; got a {type(value).__name__}")
    text = value.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(_BAD_TARGET)
    try:
        if "://" in text:
            return origin(httpx.URL(text))
        url = httpx.URL(f"http://{text}/")
    except httpx.InvalidURL:
        raise ValueError(_BAD_TARGET) from None
    # The message never repeats the value: it could carry credentials.
    if not text or url.userinfo or url.path != "/" or url.query or url.fragment:
        raise ValueError(_BAD_TARGET)
    port = url.port
    if port is None and _EXPLICIT_DEFAULT_PORT.search(text):
        port = 80  # httpx drops an explicit :80 from an http URL; the user wrote it
    return None, _ascii_host(url), port


def _matching(registry: BreakerRegistry, target: _Target) -> list[tuple[Origin, Breaker]]:
    scheme, host, port = target
    if scheme is not None:
        key: Origin = (scheme, host, port)
        found = registry.get(key)
        return [] if found is None else [(key, found)]
    return [
        (key, breaker)
        for key, breaker in registry.items()
        if key[1] == host and key[2] == (port if port is not None else default_port(key[0]))
    ]


def _registry_of(context: LayerContext) -> BreakerRegistry | None:
    found = context.peek(REGISTRY_KEY)
    return found if isinstance(found, BreakerRegistry) else None


def breaker_state(context: LayerContext, host: str | httpx.URL) -> str:
    """The state of the breaker(s) of ``host``: ``"closed" | "open" | "half_open"``.

    Applies the lazy open -> half_open transition. An unknown host is ``"closed"``;
    several breakers under one host key report the worst state.
    """
    target = _target(host)
    registry = _registry_of(context)
    if registry is None:
        return CLOSED
    now = context.clock.monotonic()
    worst = CLOSED
    for _, breaker in _matching(registry, target):
        state = breaker.current_state(now)
        if breaker.pending:
            _dispatch(context, breaker)
        if STATE_RANK[state] > STATE_RANK[worst]:
            worst = state
    return worst


def breaker_snapshot(context: LayerContext) -> dict[str, BreakerSnapshot]:
    """Host key -> :class:`BreakerSnapshot` of every breaker (the worst per host key)."""
    registry = _registry_of(context)
    if registry is None:
        return {}
    now = context.clock.monotonic()
    result: dict[str, BreakerSnapshot] = {}
    for _, breaker in registry.items():
        snap = breaker.snapshot(now)
        if breaker.pending:
            _dispatch(context, breaker)
        seen = result.get(snap.host)
        if seen is None or (STATE_RANK[snap.state], snap.failure_rate) > (
            STATE_RANK[seen.state],
            seen.failure_rate,
        ):
            result[snap.host] = snap
    return result


def reset_breaker(context: LayerContext, host: str | httpx.URL) -> None:
    """Remove the breaker(s) of ``host``; the next call starts a closed one.

    Calls in flight at that moment are not counted by the new breaker.

    A breaker that was open or half-open reports a transition to ``"closed"`` (log,
    event and ``on_state_change``); every removed host key emits ``breaker_removed``.
    With a shared backend the origin's shared signal is closed too (for every
    process). Unknown hosts are ignored.
    """
    target = _target(host)
    registry = _registry_of(context)
    if registry is None:
        return
    origins = [key for key, _ in _matching(registry, target)]
    retired, removed = registry.remove(origins, context.clock.monotonic())
    signals = context.stores.signals
    for breaker in retired:
        _dispatch(context, breaker)
        # Reset for every process sharing the backend, or the next call would adopt
        # the opening again (a blocking store call, bounded by its timeout).
        signals.publish_closed(breaker.signal_key)
    _removed(context, removed)
