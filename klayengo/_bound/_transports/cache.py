"""The cache layer: CacheTransport and AsyncCacheTransport (RFC 9111, private cache).

Outermost in the stack, so a hit costs no rate-limit token, no breaker slot and no
attempt, and a failure of everything below can be answered from a stale entry
(``stale-if-error``). The rules are in :mod:`klayengo._core.cache`; the records
live in the client's backend (``context.stores.cache``: in memory by default,
Redis when configured; this layer never knows which); this module only moves
responses:

- a hit is built from the stored record without re-parsing anything: the stored
  ``httpx.Headers`` is copied, the stored ``httpx.ByteStream`` shared;
- a storable miss is *teed*: the caller streams the body as usual while up to
  ``max_entry_bytes`` are kept aside, and the entry is stored when the caller has
  read the whole body; a body that turns out larger is dropped from the tee at once
  and streams on uncached (the cache never buffers it);
- concurrent identical misses are coalesced: one leader goes upstream, the others
  wait for its entry and each gets its own ``Response``; when the leader's response
  cannot be shared (not storable, too large, failed, cancelled) each waiter makes
  its own request, or gets (a copy of) the leader's transport error.

Sync waiters use ``threading.Event``; async waiters ``anyio.Event`` (asyncio and trio).
The sync twin calls the store's sync methods, the async twin its ``a``-prefixed
ones (which never suspend for the memory store).
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from ..._context import LayerContext
from ..._core.backend import CacheStore
from ..._core.cache import (
    ERROR_STATUSES,
    PLAIN_REQUEST,
    CacheEntry,
    KeyMaker,
    RequestFacts,
    VaryIndex,
    conditional_headers,
    entry_usable,
    freshen,
    invalidates,
    make_entry,
    request_facts,
    response_fields,
    stale_if_error_ok,
    stale_while_revalidate_ok,
    validator_matches,
    why_not_storable,
)
from ..._core.cachestore import Record
from ..._core.events import NULL_EVENTS
from ..._core.hosts import host_key, origin
from ..._core.options import EXTENSION_KEY, request_options
from ..._core.report import report
from ..._policies import CachePolicy, HostPolicy
from .. import httpx
from ._layer import AsyncLayer, SyncLayer

__all__ = ["AsyncCacheTransport", "CacheState", "CacheTransport"]

_log = logging.getLogger("klayengo")

#: How long a coalesced waiter waits for its leader when the request has no
#: complete timeout to go by; past it the waiter sends its own request.
COALESCE_WAIT_FALLBACK: Final = 60.0
#: How long (seconds) misses of a key whose last response could not be stored
#: (``no-store``, ``Vary: *``) go upstream side by side instead of being coalesced
#: (Varnish's "hit-for-miss"): their waiters could not share the leader's response
#: anyway, so coalescing them only queued identical requests one round trip behind
#: each other. A response that can be stored ends it at once.
UNCACHEABLE_MEMORY: Final = 60.0
#: Keys remembered as uncacheable at most; past it the memory starts over.
UNCACHEABLE_KEYS: Final = 4096
_STORE_KEY: Final = "cache.store"
_NO_TIME: Final = datetime.timedelta(0)
#: httpx keeps a read body in ``Response._content`` (0.27, 0.28); a hit with an
#: unencoded body is handed over pre-read when that still holds.
_PRELOAD: Final = hasattr(httpx.Response(200, content=b""), "_content")


class _Preloaded(httpx.Response):
    """A hit whose body is already in memory: reading it also closes it.

    httpx reads every response it was not asked to stream, and reading a network
    response to its end closes it; httpx skips the read when the body is already there,
    which would leave a pre-read hit open. Closing here keeps ``is_closed`` as it reads
    for a network response, without a wrapper around the client's ``send`` (which every
    request in flight would hold, as one more coroutine).
    """

    def read(self) -> bytes:
        content = super().read()
        self.close()  # idempotent
        return content

    async def aread(self) -> bytes:
        content = await super().aread()
        await self.aclose()
        return content


# -- per-client state ------------------------------------------------------------------
class _Flight:
    """One in-flight upstream request that identical misses wait for.

    The event is created by the first waiter, under the state's lock: most misses
    have no waiter, and an event (a lock and a condition) was a tenth of a miss's
    cost.
    """

    __slots__ = ("entry", "error", "event", "finished", "result")

    def __init__(self) -> None:
        self.event: Any = None
        self.entry: CacheEntry | None = None
        self.error: httpx.TransportError | None = None
        self.finished = False
        self.result = "hit"


class CacheState:
    """What every stack of one client shares: the store, the key maker, the flights."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self._keys = KeyMaker(self.store.key_salt)
        self.flights: dict[str, _Flight] = {}
        #: key -> monotonic time until which its misses are not coalesced.
        self.uncacheable: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def keys(self) -> KeyMaker:
        """Digests keyed with the store's current salt (a shared store may learn
        the salt every process uses from its first lookup)."""
        keys = self._keys
        salt = self.store.key_salt
        if keys.salt is not salt:
            keys = self._keys = KeyMaker(salt)
        return keys

    def coalescing(self, key: str, now: float) -> bool:
        """Whether misses of ``key`` wait for one another (see :data:`UNCACHEABLE_MEMORY`)."""
        until = self.uncacheable.get(key)
        return until is None or until <= now

    def mark_uncacheable(self, key: str, until: float) -> None:
        uncacheable = self.uncacheable
        if len(uncacheable) >= UNCACHEABLE_KEYS and key not in uncacheable:
            uncacheable.clear()  # hostile churn costs coalescing, never memory
        uncacheable[key] = until

    def join(self, key: str, make_event: Callable[[], Any]) -> tuple[_Flight, bool]:
        """The flight for ``key`` and whether the caller leads it."""
        with self.lock:
            flight = self.flights.get(key)
            if flight is not None:
                # Still in `flights`, so not finished: `finish` will see this event.
                if flight.event is None:
                    flight.event = make_event()
                return flight, False
            flight = self.flights[key] = _Flight()
            return flight, True

    def finish(
        self,
        key: str,
        flight: _Flight | None,
        entry: CacheEntry | None = None,
        error: httpx.TransportError | None = None,
        result: str = "hit",
    ) -> None:
        """Release the waiters of ``flight`` (once; later calls do nothing).

        Waiters serve ``entry`` (reported as ``result``) when given, else raise a
        copy of ``error`` when given, else make their own request.
        """
        if flight is None:
            return
        with self.lock:
            if flight.finished:
                return
            flight.finished = True
            flight.entry, flight.error, flight.result = entry, error, result
            if self.flights.get(key) is flight:
                del self.flights[key]
            event = flight.event
        if event is not None:
            event.set()


# -- one request's plan ----------------------------------------------------------------
@dataclass(slots=True, eq=False)
class _Plan:
    request: httpx.Request
    policy: CachePolicy
    facts: RequestFacts
    primary: str
    key: str  # where this request's entry lives (primary or a secondary key)
    indexed: bool  # the primary key holds a VaryIndex
    entry: CacheEntry | None  # the stored entry found (possibly stale)
    lookup: bool = False  # the entry is under the secondary key, still to be read
    flight: _Flight | None = None
    conditional: bool = False
    request_wall: float = 0.0
    now: float = 0.0  # monotonic time of the lookup
    host: str = field(default="")


def _describe(plan: _Plan) -> str:
    return plan.host or host_key(plan.request.url)


def _with_headers(request: httpx.Request, extra: list[tuple[str, str]]) -> httpx.Request:
    headers = request.headers.copy()
    for name, value in extra:
        headers[name] = value
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        stream=request.stream,
        extensions=request.extensions,
    )


def _copy_error(error: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """A waiter's own copy of the leader's error, naming the waiter's request."""
    try:
        mine = copy.copy(error)
    except Exception:  # an exotic subclass that cannot be copied: share it
        mine = error
    mine.request = request
    return mine


def _wait_budget(request: httpx.Request) -> float:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, Mapping):
        values = [timeout.get(name) for name in ("connect", "write", "read", "pool")]
        if all(isinstance(v, int | float) for v in values):
            return float(sum(values))  # type: ignore[arg-type]
    return COALESCE_WAIT_FALLBACK


class _CacheLogic:
    """The decisions shared by both twins; no I/O here."""

    _context: LayerContext
    _state: CacheState

    def _init_state(self, context: LayerContext) -> None:
        created: list[CacheState] = []
        store = context.stores.cache  # bound outside `shared`, which holds the lock

        def create() -> CacheState:
            created.append(CacheState(store))
            return created[0]

        self._state = context.shared(_STORE_KEY, create)
        if created:
            # Closing the client frees the records this process holds (and zeroes
            # the size gauges). Registered here: `shared` holds the context's lock
            # while creating.
            context.on_close(self._state.store.close)

    # -- before going upstream -------------------------------------------------------
    def _policy(self, request: httpx.Request) -> tuple[CachePolicy | None, bool]:
        """(policy, bypass) for ``request``."""
        policy = self._context.resolver.resolve(request.url).cache
        if EXTENSION_KEY in request.extensions:
            option = request_options(request).cache
            if option is False:
                return policy, True
            if isinstance(option, CachePolicy):
                return option, False
        return policy, False

    def _hit(
        self, request: httpx.Request, facts: RequestFacts, found: Record | None, now: float
    ) -> httpx.Response | None:
        """The common hit: a plain request, a fresh entry under the primary key,
        decided with no allocation but the response."""
        if (
            facts is PLAIN_REQUEST
            and isinstance(found, CacheEntry)
            and now < found.fresh_until
            and not found.no_cache
        ):
            return self._serve(found, request, "hit")
        return None

    def _plan(
        self,
        request: httpx.Request,
        policy: CachePolicy,
        facts: RequestFacts,
        primary: str,
        found: Record | None,
    ) -> _Plan:
        """Where the request's entry lives; ``plan.lookup`` when it must still be
        read from the secondary key (see :meth:`_planned`)."""
        entry: CacheEntry | None = None
        lookup = False
        if isinstance(found, VaryIndex):
            key = self._state.keys.secondary(
                primary, facts.credentials, found.vary, request.headers
            )
            lookup = not facts.pass_through
        elif facts.credentials:
            # An entry stored for a request without credentials is not served to one
            # with credentials: the origin may answer them differently.
            key = self._state.keys.secondary(primary, facts.credentials, (), request.headers)
        else:
            key = primary
            entry = found
        if facts.pass_through:
            entry = None  # a conditional or partial request is the origin's to answer
        return _Plan(
            request, policy, facts, primary, key, isinstance(found, VaryIndex), entry, lookup
        )

    def _planned(self, plan: _Plan, candidate: Record | None, now: float) -> httpx.Response | _Plan:
        """With the secondary record read (when there was one to read): a response
        from the cache alone, or the plan for going upstream."""
        if plan.lookup and isinstance(candidate, CacheEntry):
            plan.entry = candidate
        entry = plan.entry
        if entry is not None:
            plan.host = entry.host
        response = self._fresh_response(plan, now)
        plan.now = now
        return plan if response is None else response

    def _fresh_response(self, plan: _Plan, now: float) -> httpx.Response | None:
        """A response answered from the cache alone (a hit, or 504 only-if-cached)."""
        entry = plan.entry
        if plan.facts.pass_through:
            return None
        if entry is not None and entry_usable(entry, now, plan.facts.directives):
            return self._serve(entry, plan.request, "hit")
        if plan.facts.directives.only_if_cached:
            response = httpx.Response(504, request=plan.request)
            self._report(response, plan, "miss", attempts=0, why="only-if-cached")
            return response
        return None

    def _serve(
        self, entry: CacheEntry, request: httpx.Request, result: str, attempts: int = 0
    ) -> httpx.Response:
        extensions = {
            **entry.extensions,
            EXTENSION_KEY: {"attempts": attempts, "cache": result, "breaker": None, "wait": 0.0},
        }
        preload = entry.plain and _PRELOAD
        response = (_Preloaded if preload else httpx.Response)(
            entry.status,
            headers=entry.headers,
            stream=entry.stream,
            request=request,
            extensions=extensions,
        )
        if preload:
            # The body is in memory and needs no decoding: hand it over as httpx's
            # MockTransport does, so the client's read costs nothing. Streaming it
            # (iter_raw) still works: the stream itself is untouched.
            response._content = entry.body
            response.elapsed = _NO_TIME
        events = self._context.events
        if events is not NULL_EVENTS:
            events.cache_result(entry.host, result)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("cache %s for %s", result, entry.host, extra={"host": entry.host})
        return response

    def _report(
        self,
        response: httpx.Response,
        plan: _Plan,
        result: str,
        *,
        attempts: int | None = None,
        why: str = "",
    ) -> None:
        info = report(response)
        info["cache"] = result
        if attempts is not None:
            info["attempts"] = attempts
        events = self._context.events
        debug = _log.isEnabledFor(logging.DEBUG)
        if events is not NULL_EVENTS or debug:
            host = _describe(plan)
            events.cache_result(host, result)
            if debug:
                _log.debug(
                    "cache %s for %s (%s)", result, host, why or result, extra={"host": host}
                )

    def _upstream_request(self, plan: _Plan) -> httpx.Request:
        entry = plan.entry
        plan.request_wall = self._context.clock.wall()
        if entry is None or plan.facts.pass_through:
            return plan.request
        validators = conditional_headers(entry)
        if not validators:
            return plan.request
        plan.conditional = True
        return _with_headers(plan.request, validators)

    # -- after the layers below answered ------------------------------------------------
    def _stale_after_error(self, plan: _Plan) -> httpx.Response | None:
        entry = plan.entry
        now = self._context.clock.monotonic()
        if entry is not None and stale_if_error_ok(entry, now, plan.facts.directives):
            return self._serve(entry, plan.request, "stale")
        return None

    def _freshened(self, plan: _Plan, not_modified: httpx.Response) -> CacheEntry:
        assert plan.entry is not None
        clock = self._context.clock
        return freshen(
            plan.entry,
            not_modified.headers,
            request_wall=plan.request_wall,
            response_wall=clock.wall(),
            now=clock.monotonic(),
            policy=plan.policy,
        )

    def _revalidated(
        self, plan: _Plan, entry: CacheEntry, not_modified: httpx.Response
    ) -> httpx.Response:
        """The response for a freshened (and stored) entry."""
        self._state.finish(plan.key, plan.flight, entry)
        attempts = report(not_modified)["attempts"]  # the revalidation went upstream
        return self._serve(entry, plan.request, "revalidated", attempts)

    def _entry_for(
        self,
        plan: _Plan,
        response: httpx.Response,
        key: str,
        vary: tuple[str, ...],
        body: bytes,
        response_wall: float,
        now: float,
    ) -> CacheEntry:
        return make_entry(
            key=key,
            host=_describe(plan),
            status=response.status_code,
            headers=response.headers.copy(),
            body=body,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
            vary=vary,
            request_wall=plan.request_wall,
            response_wall=response_wall,
            now=now,
            policy=plan.policy,
        )

    def _worth_storing(self, entry: CacheEntry) -> bool:
        # Neither fresh nor usable stale, nor worth revalidating: nothing to store.
        return entry.keep_until > self._context.clock.monotonic()

    @staticmethod
    def _vary_index(entry: CacheEntry, old: Record | None) -> VaryIndex:
        """The index to store under the primary key of a secondary ``entry``."""
        keep_until = entry.keep_until
        if isinstance(old, VaryIndex) and old.vary == entry.vary:
            keep_until = max(keep_until, old.keep_until)
        return VaryIndex(entry.vary, keep_until)

    def _prepare_store(
        self, plan: _Plan, response: httpx.Response
    ) -> Callable[[bytes], CacheEntry] | None:
        """Decide on storing a miss; returns what builds the entry from the read body.

        Returns None (and releases the waiters) when the response is not stored.
        The twins' ``_complete`` gets the whole body, or None when it was not kept
        (too large, not fully read, failed), stores it and releases the waiters.
        """
        directives, vary, length = response_fields(response.headers)
        reason = why_not_storable(
            plan.request.method, response.status_code, plan.facts, directives, vary, plan.policy
        )
        if (
            reason is None
            and length is not None
            and length.isdigit()
            and int(length) > plan.policy.max_entry_bytes
        ):
            reason = "too-large"  # streams through untouched
        if reason is not None:
            if reason == "vary-star" or (
                reason == "no-store" and not plan.facts.directives.no_store
            ):
                # The resource says so itself (not this request): stop coalescing it.
                now = self._context.clock.monotonic()
                self._state.mark_uncacheable(plan.key, now + UNCACHEABLE_MEMORY)
            if plan.flight is not None:
                self._state.finish(plan.key, plan.flight)
            self._report(response, plan, "miss", why="not stored: " + reason)
            return None
        assert vary is not None
        if vary or plan.facts.credentials or plan.indexed:
            key = self._state.keys.secondary(
                plan.primary, plan.facts.credentials, vary, plan.request.headers
            )
        else:
            key = plan.primary
        clock = self._context.clock
        response_wall, now = clock.wall(), clock.monotonic()
        self._report(response, plan, "miss")

        def build(body: bytes) -> CacheEntry:
            return self._entry_for(plan, response, key, vary, body, response_wall, now)

        return build

    def _passed(self, request: httpx.Request, response: httpx.Response, bypass: bool) -> None:
        """A response the cache let through (after the twin invalidated): report a bypass."""
        if bypass:
            report(response)["cache"] = "bypass"
            host = host_key(request.url)
            self._context.events.cache_result(host, "bypass")
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("cache bypass for %s", host, extra={"host": host})

    @staticmethod
    def _invalidated(
        request: httpx.Request, response: httpx.Response, policy: CachePolicy | None
    ) -> list[str]:
        """RFC 9111 §4.4: the keys of the stored responses to forget: the target URI,
        and a same-origin ``Location``/``Content-Location`` (deleting the primary
        key also orphans the secondary entries: they are found through it)."""
        if not invalidates(request.method, response.status_code):
            return []
        targets = [request.url]
        for name in ("location", "content-location"):
            value = response.headers.get(name)
            if value:
                try:
                    url = request.url.join(value)
                except (httpx.InvalidURL, ValueError, TypeError):
                    continue
                if origin(url) == origin(request.url):
                    targets.append(url)
        methods = policy.methods if policy is not None else ("GET", "HEAD")
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("cache invalidated by %s for %s", request.method, host_key(request.url))
        return [KeyMaker.primary(method, url) for url in targets for method in methods]

    def _waiter_result(self, plan: _Plan, flight: _Flight) -> httpx.Response | None:
        """What a released waiter gets: its own response, or None to go alone.

        Raises a copy of the leader's transport error when nothing stale can be served.
        """
        entry = flight.entry
        if entry is not None:
            if entry.key == plan.primary and not plan.facts.credentials:
                ok = True
            else:
                expected = self._state.keys.secondary(
                    plan.primary, plan.facts.credentials, entry.vary, plan.request.headers
                )
                ok = expected == entry.key
            if ok:
                self._context.events.coalesced(entry.host)
                return self._serve(entry, plan.request, flight.result)
            return None
        if flight.error is not None:
            stale = self._stale_after_error(plan)
            if stale is not None:
                return stale
            raise _copy_error(flight.error, plan.request)
        return None


# -- streams that keep a copy of a body for the cache --------------------------------
class _Collector:
    """Keeps up to ``limit`` bytes of a body aside; the tee that owns it completes
    the store once (:meth:`take`), with the body or with None."""

    __slots__ = ("chunks", "done", "limit", "size", "taken")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] | None = []
        self.size = 0
        self.limit = limit
        self.done = False
        self.taken = False

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; True when the body just turned out too large (then
        what was kept is dropped and the rest streams on: complete at once)."""
        chunks = self.chunks
        if chunks is None:
            return False
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks = None
            return not self.taken
        chunks.append(chunk)
        return False

    def take(self) -> tuple[bool, bytes | None]:
        """``(first, body)``: ``first`` once only; ``body`` when it was read whole."""
        if self.taken:
            return False, None
        self.taken = True
        chunks, self.chunks = self.chunks, None
        return True, (b"".join(chunks) if self.done and chunks is not None else None)


class _SyncTee(httpx.SyncByteStream):
    """Passes a body through, keeping a copy of it in a :class:`_Collector`.

    An explicit iterator rather than a generator: closing it also closes the
    iterator of the stream below, so a body abandoned half-way is released at once.
    """

    def __init__(
        self,
        stream: httpx.SyncByteStream,
        collector: _Collector,
        complete: Callable[[bytes | None], None],
    ) -> None:
        self._stream = stream
        self._collector = collector
        self._complete = complete
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._iterator = iter(self._stream)
        return self

    def __next__(self) -> bytes:
        assert self._iterator is not None
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._collector.done = True
            raise
        if self._collector.add(chunk):
            self._finish()
        return chunk

    def _finish(self) -> None:
        first, body = self._collector.take()
        if first:
            self._complete(body)

    def close(self) -> None:
        try:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._stream.close()
        finally:
            self._finish()


class _AsyncTee(httpx.AsyncByteStream):
    """The async twin of :class:`_SyncTee` (its completion awaits the store)."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        collector: _Collector,
        complete: Callable[[bytes | None], Awaitable[None]],
    ) -> None:
        self._stream = stream
        self._collector = collector
        self._complete = complete
        self._iterator: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._iterator = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._iterator is not None
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._collector.done = True
            raise
        if self._collector.add(chunk):
            await self._finish()
        return chunk

    async def _finish(self) -> None:
        first, body = self._collector.take()
        if first:
            await self._complete(body)

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._stream.aclose()
        finally:
            await self._finish()


def _preloaded_body(response: httpx.Response) -> bytes | None:
    """The raw body of a response whose body is already in memory (MockTransport)."""
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return b"".join(stream)
    return None


# -- the twins -----------------------------------------------------------------------
class CacheTransport(_CacheLogic, SyncLayer):
    """A private RFC 9111 HTTP cache with request coalescing, as an httpx transport.

    Usage::

        client = httpx.Client(transport=klayengo.CacheTransport(httpx.HTTPTransport()))

    Args:
        transport: the transport to send misses and revalidations to.
        policy: the :class:`CachePolicy`. Default ``CachePolicy()``.
        hosts: per-host overrides (``HostPolicy(cache=...)``).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport,
        policy: CachePolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        context = _context or LayerContext.standalone(
            cache=policy if policy is not None else CachePolicy(), hosts=hosts
        )
        super().__init__(transport, context)
        self._init_state(context)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy, bypass = self._policy(request)
        if policy is None or bypass or request.method not in policy.methods:
            response = self._next.handle_request(request)
            store = self._state.store
            for key in self._invalidated(request, response, policy):
                store.delete(key)
            self._passed(request, response, bypass)
            return response
        plan = self._begin(request, policy)
        if not isinstance(plan, _Plan):
            return plan
        if (
            policy.coalesce
            and not plan.facts.pass_through
            and self._state.coalescing(plan.key, plan.now)
        ):
            flight, leader = self._state.join(plan.key, threading.Event)
            if not leader:
                return self._wait(plan, flight)
            plan.flight = flight
        return self._forward(plan)

    def _begin(self, request: httpx.Request, policy: CachePolicy) -> httpx.Response | _Plan:
        """A response from the cache alone (hit, or 504 only-if-cached), or the plan
        for going upstream; the common hit costs one store lookup."""
        facts = request_facts(request.headers)
        primary = KeyMaker.primary(request.method, request.url)
        store = self._state.store
        found = store.get(primary)
        now = self._context.clock.monotonic()
        if found is None and facts is PLAIN_REQUEST:
            # The common miss: nothing stored, nothing asked of the cache.
            return _Plan(request, policy, facts, primary, primary, False, None, now=now)
        hit = self._hit(request, facts, found, now)
        if hit is not None:
            return hit
        plan = self._plan(request, policy, facts, primary, found)
        return self._planned(plan, store.get(plan.key) if plan.lookup else None, now)

    def _store(self, plan: _Plan, entry: CacheEntry) -> bool:
        """Store ``entry`` (and its Vary index); False when it has nothing to serve."""
        if not self._worth_storing(entry):
            return False
        store = self._state.store
        store.set(entry.key, entry)
        self._state.uncacheable.pop(plan.key, None)  # storable again: coalesce again
        if entry.key != plan.primary:
            store.set(plan.primary, self._vary_index(entry, store.get(plan.primary)))
        return True

    def _complete(
        self, plan: _Plan, build: Callable[[bytes], CacheEntry], body: bytes | None
    ) -> None:
        """Store a read body's entry, then release the waiters (with it when stored)."""
        stored = None
        try:
            if body is not None:
                entry = build(body)
                if self._store(plan, entry):
                    stored = entry  # not stored: the waiters ask for themselves
        finally:
            self._state.finish(plan.key, plan.flight, stored)

    def _wait(self, plan: _Plan, flight: _Flight) -> httpx.Response:
        entry = plan.entry
        if entry is not None and stale_while_revalidate_ok(entry, plan.now):
            return self._serve(entry, plan.request, "stale")
        flight.event.wait(_wait_budget(plan.request))
        found = self._waiter_result(plan, flight) if flight.finished else None
        if found is not None:
            return found
        return self._forward(plan)  # on its own: no flight

    def _forward(self, plan: _Plan) -> httpx.Response:
        try:
            upstream = self._upstream_request(plan)
            try:
                response = self._next.handle_request(upstream)
            except httpx.TransportError as error:
                stale = self._stale_after_error(plan)
                if stale is None:
                    self._state.finish(plan.key, plan.flight, error=error)
                    raise
                self._state.finish(plan.key, plan.flight, plan.entry, result="stale")
                return stale
            response.request = plan.request
            if response.status_code in ERROR_STATUSES:
                stale = self._stale_after_error(plan)
                if stale is not None:
                    response.close()
                    self._state.finish(plan.key, plan.flight, plan.entry, result="stale")
                    return stale
            if plan.conditional and response.status_code == 304:
                response.read()  # no body: reading it keeps the connection reusable
                response.close()
                if validator_matches(plan.entry, response.headers):  # type: ignore[arg-type]
                    entry = self._freshened(plan, response)
                    self._store(plan, entry)
                    return self._revalidated(plan, entry, response)
                # A 304 for another representation: ask again, unconditionally.
                plan.entry, plan.conditional = None, False
                return self._forward(plan)
            build = self._prepare_store(plan, response)
            if build is not None:
                body = _preloaded_body(response)
                limit = plan.policy.max_entry_bytes
                if body is not None:
                    self._complete(plan, build, body if len(body) <= limit else None)
                else:
                    response.stream = _SyncTee(
                        response.stream,  # type: ignore[arg-type]
                        _Collector(limit),
                        lambda body: self._complete(plan, build, body),
                    )
            return response
        except BaseException:
            self._state.finish(plan.key, plan.flight)
            raise


class AsyncCacheTransport(_CacheLogic, AsyncLayer):
    """The async twin of :class:`CacheTransport` (asyncio and trio)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        policy: CachePolicy | None = None,
        *,
        hosts: Mapping[str, HostPolicy] | None = None,
        _context: LayerContext | None = None,
    ) -> None:
        context = _context or LayerContext.standalone(
            cache=policy if policy is not None else CachePolicy(), hosts=hosts
        )
        super().__init__(transport, context)
        self._init_state(context)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy, bypass = self._policy(request)
        if policy is None or bypass or request.method not in policy.methods:
            response = await self._next.handle_async_request(request)
            store = self._state.store
            for key in self._invalidated(request, response, policy):
                await store.adelete(key)
            self._passed(request, response, bypass)
            return response
        plan = await self._begin(request, policy)
        if not isinstance(plan, _Plan):
            return plan
        if (
            policy.coalesce
            and not plan.facts.pass_through
            and self._state.coalescing(plan.key, plan.now)
        ):
            flight, leader = self._state.join(plan.key, anyio.Event)
            if not leader:
                return await self._wait(plan, flight)
            plan.flight = flight
        return await self._forward(plan)

    async def _begin(self, request: httpx.Request, policy: CachePolicy) -> httpx.Response | _Plan:
        facts = request_facts(request.headers)
        primary = KeyMaker.primary(request.method, request.url)
        store = self._state.store
        found = await store.aget(primary)
        now = self._context.clock.monotonic()
        if found is None and facts is PLAIN_REQUEST:
            # The common miss: nothing stored, nothing asked of the cache.
            return _Plan(request, policy, facts, primary, primary, False, None, now=now)
        hit = self._hit(request, facts, found, now)
        if hit is not None:
            return hit
        plan = self._plan(request, policy, facts, primary, found)
        return self._planned(plan, await store.aget(plan.key) if plan.lookup else None, now)

    async def _store(self, plan: _Plan, entry: CacheEntry) -> bool:
        if not self._worth_storing(entry):
            return False
        store = self._state.store
        await store.aset(entry.key, entry)
        self._state.uncacheable.pop(plan.key, None)  # storable again: coalesce again
        if entry.key != plan.primary:
            index = self._vary_index(entry, await store.aget(plan.primary))
            await store.aset(plan.primary, index)
        return True

    async def _complete(
        self, plan: _Plan, build: Callable[[bytes], CacheEntry], body: bytes | None
    ) -> None:
        stored = None
        try:
            if body is not None:
                entry = build(body)
                if await self._store(plan, entry):
                    stored = entry
        finally:
            # Also when cancelled while storing: the waiters then ask for themselves.
            self._state.finish(plan.key, plan.flight, stored)

    async def _wait(self, plan: _Plan, flight: _Flight) -> httpx.Response:
        entry = plan.entry
        if entry is not None and stale_while_revalidate_ok(entry, plan.now):
            return self._serve(entry, plan.request, "stale")
        with anyio.move_on_after(_wait_budget(plan.request)):
            await flight.event.wait()
        found = self._waiter_result(plan, flight) if flight.finished else None
        if found is not None:
            return found
        return await self._forward(plan)

    async def _forward(self, plan: _Plan) -> httpx.Response:
        try:
            upstream = self._upstream_request(plan)
            try:
                response = await self._next.handle_async_request(upstream)
            except httpx.TransportError as error:
                stale = self._stale_after_error(plan)
                if stale is None:
                    self._state.finish(plan.key, plan.flight, error=error)
                    raise
                self._state.finish(plan.key, plan.flight, plan.entry, result="stale")
                return stale
            response.request = plan.request
            if response.status_code in ERROR_STATUSES:
                stale = self._stale_after_error(plan)
                if stale is not None:
                    await response.aclose()
                    self._state.finish(plan.key, plan.flight, plan.entry, result="stale")
                    return stale
            if plan.conditional and response.status_code == 304:
                await response.aread()
                await response.aclose()
                if validator_matches(plan.entry, response.headers):  # type: ignore[arg-type]
                    entry = self._freshened(plan, response)
                    await self._store(plan, entry)
                    return self._revalidated(plan, entry, response)
                plan.entry, plan.conditional = None, False
                return await self._forward(plan)
            build = self._prepare_store(plan, response)
            if build is not None:
                body = _preloaded_body(response)
                limit = plan.policy.max_entry_bytes
                if body is not None:
                    await self._complete(plan, build, body if len(body) <= limit else None)
                else:

                    async def complete(body: bytes | None) -> None:
                        await self._complete(plan, build, body)

                    response.stream = _AsyncTee(
                        response.stream,  # type: ignore[arg-type]
                        _Collector(limit),
                        complete,
                    )
            return response
        except BaseException:
            self._state.finish(plan.key, plan.flight)
            raise
