"""CircuitBreakerTransport and its async twin, through the clients and standalone."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from klayengo._httpx._transports.breaker import _BAD_TARGET, REGISTRY_KEY

import klayengo._core.hosts as hosts_module
from klayengo import (
    AsyncCircuitBreakerTransport,
    AsyncResilientClient,
    BreakerSnapshot,
    CircuitBreakerPolicy,
    CircuitBreakerTransport,
    CircuitOpenError,
    HostPolicy,
    RateLimitExceeded,
    ResilientClient,
)
from klayengo._context import LayerContext
from klayengo._core.breaker import BreakerRegistry
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events
from klayengo._core.hosts import PolicyResolver
from klayengo._core.report import report

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder(Events):
    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        self.log.append(("transition", host, old, new))

    def breaker_rejected(self, host: str) -> None:
        self.log.append(("rejected", host))

    def breaker_removed(self, host: str) -> None:
        self.log.append(("removed", host))

    def of(self, kind: str) -> list[tuple[str, ...]]:
        return [entry[1:] for entry in self.log if entry[0] == kind]


class Upstream:
    """A MockTransport handler: status per host, counting the calls that reached it."""

    def __init__(self, default: int = 200, **statuses: int) -> None:
        self.default = default
        self.statuses = {host.replace("_", "."): code for host, code in statuses.items()}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.host)
        return httpx.Response(self.statuses.get(request.url.host, self.default))


STRICT = CircuitBreakerPolicy(consecutive_failures=2, open_duration=30.0)


Client = TypeVar("Client", ResilientClient, AsyncResilientClient)


def build(
    cls: type[Client],
    handler: Callable[[httpx.Request], Any],
    breaker: CircuitBreakerPolicy | None = STRICT,
    clock: FakeClock | None = None,
    **kwargs: Any,
) -> tuple[Client, FakeClock, Recorder]:
    """A klayengo client on a MockTransport, with a fake clock and an event recorder."""
    clock = clock or FakeClock()
    c = cls(
        transport=httpx.MockTransport(handler),
        retry=None,
        breaker=breaker,
        metrics=False,
        _clock=clock,
        **kwargs,
    )
    recorder = Recorder()
    c._klayengo.events = recorder
    return c, clock, recorder


def client(handler: Handler, **kwargs: Any) -> tuple[ResilientClient, FakeClock, Recorder]:
    return build(ResilientClient, handler, **kwargs)


def async_client(
    handler: Callable[[httpx.Request], Any], **kwargs: Any
) -> tuple[AsyncResilientClient, FakeClock, Recorder]:
    return build(AsyncResilientClient, handler, **kwargs)


def trip(c: ResilientClient, url: str, times: int = 2) -> None:
    for _ in range(times):
        c.get(url)
    assert c.breaker_state(url) == "open"


# -- isolation and per-host policies -----------------------------------------------------------
def test_a_failing_host_never_affects_another() -> None:
    upstream = Upstream(bad_test=503)
    c, _, _ = client(upstream)
    trip(c, "http://bad.test/")
    with pytest.raises(CircuitOpenError):
        c.get("http://bad.test/")
    for _ in range(10):
        assert c.get("http://good.test/").status_code == 200
    assert c.breaker_state("good.test") == "closed"
    assert c.breaker_state("bad.test") == "open"


@pytest.mark.anyio
async def test_a_failing_host_never_affects_another_async() -> None:
    upstream = Upstream(bad_test=503)
    c, _, _ = async_client(upstream)
    async with c:
        for _ in range(2):
            await c.get("http://bad.test/")
        with pytest.raises(CircuitOpenError):
            await c.get("http://bad.test/")
        assert (await c.get("http://good.test/")).status_code == 200
    assert upstream.calls.count("bad.test") == 2


def test_each_origin_has_its_own_breaker() -> None:
    c, _, _ = client(Upstream(500))
    trip(c, "http://api.test:8080/")
    assert c.breaker_state("http://api.test:8080") == "open"
    assert c.breaker_state("https://api.test:8080") == "closed"
    assert c.breaker_state("http://api.test") == "closed"
    assert c.get("https://api.test:8080/").status_code == 500  # still admitted


def test_per_host_policies_apply() -> None:
    upstream = Upstream(500)
    c, _, _ = client(
        upstream,
        breaker=CircuitBreakerPolicy(consecutive_failures=5),
        hosts={
            "strict.test": HostPolicy(breaker=CircuitBreakerPolicy(consecutive_failures=1)),
            "free.test": HostPolicy(breaker=None),
        },
    )
    c.get("http://strict.test/")
    assert c.breaker_state("strict.test") == "open"
    for _ in range(4):
        c.get("http://other.test/")
    assert c.breaker_state("other.test") == "closed"
    c.get("http://other.test/")
    assert c.breaker_state("other.test") == "open"
    for _ in range(20):
        response = c.get("http://free.test/")
        assert report(response)["breaker"] is None
    assert "free.test" not in c.breaker_snapshot()


def test_breakers_only_for_some_hosts() -> None:
    c, _, _ = client(
        Upstream(500),
        breaker=None,
        hosts={"api.test": HostPolicy(breaker=CircuitBreakerPolicy(consecutive_failures=1))},
    )
    c.get("http://api.test/")
    assert c.breaker_state("api.test") == "open"
    for _ in range(5):
        c.get("http://other.test/")
    assert list(c.breaker_snapshot()) == ["api.test"]


# -- classification ----------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_default_failure_statuses_trip(status: int) -> None:
    c, _, _ = client(Upstream(status))
    trip(c, "http://api.test/")


@pytest.mark.parametrize("status", [400, 401, 404, 429, 501])
def test_other_statuses_never_trip(status: int) -> None:
    c, _, _ = client(Upstream(status), breaker=CircuitBreakerPolicy(minimum_calls=2))
    for _ in range(30):
        assert c.get("http://api.test/").status_code == status
    snap = c.breaker_snapshot()["api.test"]
    assert (snap.state, snap.calls, snap.failures) == ("closed", 30, 0)


def raiser(exc: BaseException) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("garbage"),
        TimeoutError("timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_and_timeouts_are_failures(exc: Exception) -> None:
    c, _, _ = client(raiser(exc))
    for _ in range(2):
        with pytest.raises(type(exc)):
            c.get("http://api.test/")
    assert c.breaker_state("api.test") == "open"


@pytest.mark.parametrize(
    "exc",
    [
        RateLimitExceeded("limited", host="api.test", retry_after=1.0),
        httpx.UnsupportedProtocol("no transport for this scheme"),
        RuntimeError("a bug in a custom transport"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_local_refusals_and_bugs_count_as_nothing(exc: Exception) -> None:
    # The client's own rate limiter (below the breaker) must never trip it.
    c, _, _ = client(raiser(exc))
    for _ in range(5):
        with pytest.raises(type(exc)) as info:
            c.get("http://api.test/")
        assert info.value is exc
    snap = c.breaker_snapshot()["api.test"]
    assert (snap.state, snap.calls, snap.in_flight) == ("closed", 0, 0)


def test_predicate_overrides_the_classification() -> None:
    def is_failure(response: httpx.Response | None, exc: BaseException | None) -> bool:
        if response is not None:
            return response.status_code == 429
        return not isinstance(exc, httpx.ReadTimeout)

    policy = CircuitBreakerPolicy(consecutive_failures=2, is_failure=is_failure)
    c, _, _ = client(Upstream(500, limited_test=429), breaker=policy)
    for _ in range(5):
        c.get("http://api.test/")
    assert c.breaker_state("api.test") == "closed"  # 500 is fine by the predicate
    trip(c, "http://limited.test/")
    timeouts, _, _ = client(raiser(httpx.ReadTimeout("slow")), breaker=policy)
    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            timeouts.get("http://api.test/")
    assert timeouts.breaker_snapshot()["api.test"].failures == 0


def test_a_raising_predicate_is_logged_and_the_default_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(response: httpx.Response | None, exc: BaseException | None) -> bool:
        raise ValueError("oops")

    policy = CircuitBreakerPolicy(consecutive_failures=2, is_failure=broken)
    c, _, _ = client(Upstream(503), breaker=policy)
    with caplog.at_level(logging.WARNING, logger="klayengo"):
        trip(c, "http://api.test/")
    assert any(
        r.levelno == logging.WARNING and "is_failure" in r.getMessage() for r in caplog.records
    )


def test_slow_calls_trip_with_the_injected_clock() -> None:
    clock = FakeClock()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.advance(2.0)
        return httpx.Response(200)

    policy = CircuitBreakerPolicy(minimum_calls=3, slow_call_duration=1.0)
    c, _, _ = client(slow, breaker=policy, clock=clock)
    for _ in range(3):
        c.get("http://api.test/")
    assert c.breaker_state("api.test") == "open"


# -- open, half-open, the report ---------------------------------------------------------------
def test_open_fails_fast_without_touching_the_network() -> None:
    upstream = Upstream(503)
    c, clock, recorder = client(upstream)
    trip(c, "http://api.test/")
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        c.get("http://user:secret@api.test/private?token=s3cret")
    err = info.value
    assert isinstance(err, httpx.TransportError)
    assert err.host == "api.test"
    assert err.retry_after == pytest.approx(20.0)
    assert err.request.url.path == "/private"
    message = str(err)
    assert "api.test" in message and "secret" not in message and "private" not in message
    assert upstream.calls == ["api.test", "api.test"]
    assert recorder.of("rejected") == [("api.test",)]


def test_half_open_probe_closes_and_reports_the_state() -> None:
    statuses = iter([503, 503, 200, 200])
    c, clock, recorder = client(lambda request: httpx.Response(next(statuses)))
    reports = [c.get("http://api.test/").extensions["klayengo"]["breaker"] for _ in range(2)]
    assert reports == ["closed", "open"]
    clock.advance(30.0)
    assert c.get("http://api.test/").extensions["klayengo"]["breaker"] == "closed"
    assert recorder.of("transition") == [
        ("api.test", "closed", "open"),
        ("api.test", "open", "half_open"),
        ("api.test", "half_open", "closed"),
    ]


def test_half_open_busy_rejects_with_zero_retry_after() -> None:
    c, clock, _ = client(Upstream(503))
    trip(c, "http://api.test/")
    clock.advance(30.0)
    context = c._klayengo
    breaker = context.peek(REGISTRY_KEY).get(("http", "api.test", 80))
    assert breaker.allow(clock.monotonic()) is not None  # someone holds the only probe
    with pytest.raises(CircuitOpenError, match="half-open") as info:
        c.get("http://api.test/")
    assert info.value.retry_after == 0.0


def test_a_failed_probe_reopens() -> None:
    c, clock, _ = client(Upstream(503))
    trip(c, "http://api.test/")
    clock.advance(30.0)
    assert c.get("http://api.test/").extensions["klayengo"]["breaker"] == "open"
    with pytest.raises(CircuitOpenError) as info:
        c.get("http://api.test/")
    assert info.value.retry_after == pytest.approx(30.0)


def test_per_request_bypass_is_neither_checked_nor_counted() -> None:
    upstream = Upstream(503)
    c, _, _ = client(upstream)
    bypass = {"klayengo": {"breaker": False}}
    for _ in range(5):
        response = c.get("http://api.test/", extensions=bypass)
        assert report(response)["breaker"] is None
    assert c.breaker_state("api.test") == "closed"
    trip(c, "http://api.test/")
    assert c.get("http://api.test/", extensions=bypass).status_code == 503
    assert len(upstream.calls) == 8


def test_untracked_hosts_pass_when_the_registry_is_full_of_busy_breakers() -> None:
    c, _, recorder = client(Upstream(500), breaker=CircuitBreakerPolicy(max_hosts=2))
    for host in ("a.test", "b.test"):
        c.get(f"http://{host}/")  # a failure in the window: not idle
    response = c.get("http://c.test/")
    assert response.status_code == 500
    assert report(response)["breaker"] is None
    assert sorted(c.breaker_snapshot()) == ["a.test", "b.test"]
    assert recorder.of("removed") == []


def test_idle_breakers_are_evicted_and_reported() -> None:
    c, _, recorder = client(Upstream(200), breaker=CircuitBreakerPolicy(max_hosts=2))
    for host in ("a.test", "b.test", "c.test"):
        c.get(f"http://{host}/")
    assert sorted(c.breaker_snapshot()) == ["b.test", "c.test"]
    assert recorder.of("removed") == [("a.test",)]


def test_memory_stays_flat_while_100k_hosts_pass_through() -> None:
    clock = FakeClock()
    context = LayerContext(
        resolver=PolicyResolver(breaker=CircuitBreakerPolicy(max_hosts=100)), clock=clock
    )
    ok = httpx.Response(200)
    transport = CircuitBreakerTransport(httpx.MockTransport(lambda r: ok), _context=context)

    def churn(start: int, count: int) -> None:
        for i in range(start, start + count):
            transport.handle_request(httpx.Request("GET", f"http://h{i}.test/"))

    # The host-key memo is process-wide and bounded (it starts over when full): start
    # it empty, so how full earlier tests left it does not decide what is measured.
    hosts_module._memo.clear()
    churn(0, 2_000)
    # Garbage waiting for the collector (from this test or an earlier one) is not
    # memory the registry keeps: count only what survives a collection.
    gc.collect()
    before = sys.getallocatedblocks()
    churn(2_000, 98_000)
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert len(context.peek(REGISTRY_KEY)) <= 100
    assert grown < 1_000, grown


# -- callbacks, events, logging ----------------------------------------------------------------
def test_on_state_change_runs_outside_every_lock() -> None:
    seen: list[tuple[str, str, str, bool, str]] = []
    holder: dict[str, ResilientClient] = {}

    def on_change(host: str, old: str, new: str) -> None:
        c = holder["client"]
        registry = c._klayengo.peek(REGISTRY_KEY)
        breaker = registry.get(("http", "api.test", 80))
        # Reading the state and the snapshot from the callback must not deadlock.
        seen.append((host, old, new, breaker._lock.locked(), c.breaker_state(host)))
        c.breaker_snapshot()

    policy = CircuitBreakerPolicy(consecutive_failures=1, on_state_change=on_change)
    statuses = iter([500, 200])
    c, clock, _ = client(lambda request: httpx.Response(next(statuses)), breaker=policy)
    holder["client"] = c
    c.get("http://api.test/")
    clock.advance(30.0)
    c.get("http://api.test/")
    assert seen == [
        ("api.test", "closed", "open", False, "open"),
        ("api.test", "open", "half_open", False, "half_open"),
        ("api.test", "half_open", "closed", False, "closed"),
    ]


def test_a_raising_callback_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_change(host: str, old: str, new: str) -> None:
        raise RuntimeError("callback bug")

    policy = CircuitBreakerPolicy(consecutive_failures=1, on_state_change=on_change)
    c, _, recorder = client(Upstream(500), breaker=policy)
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        assert c.get("http://api.test/").status_code == 500
    assert c.breaker_state("api.test") == "open"
    assert recorder.of("transition") == [("api.test", "closed", "open")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "on_state_change" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None
    with pytest.raises(CircuitOpenError):
        c.get("http://api.test/")


def test_logging_is_debug_except_transitions(caplog: pytest.LogCaptureFixture) -> None:
    c, _, _ = client(Upstream(200, bad_test=500))
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        for _ in range(5):
            c.get("http://api.test/?q=secret")
        assert all(r.levelno <= logging.DEBUG for r in caplog.records)
        trip(c, "http://bad.test/")
        with pytest.raises(CircuitOpenError):
            c.get("http://bad.test/?q=secret")
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r.levelno for r in loud] == [logging.INFO]
    assert "closed -> open" in loud[0].getMessage()
    assert all("secret" not in r.getMessage() for r in caplog.records)


# -- cancellation ------------------------------------------------------------------------------
def test_keyboard_interrupt_frees_the_probe_and_counts_nothing() -> None:
    outcomes: list[BaseException | int] = [500, 500, KeyboardInterrupt(), 200]

    def handler(request: httpx.Request) -> httpx.Response:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return httpx.Response(outcome)

    c, clock, _ = client(handler)
    trip(c, "http://api.test/")
    clock.advance(30.0)
    with pytest.raises(KeyboardInterrupt):
        c.get("http://api.test/")
    snap = c.breaker_snapshot()["api.test"]
    assert (snap.state, snap.in_flight) == ("half_open", 0)
    assert c.get("http://api.test/").status_code == 200  # the slot was free
    assert c.breaker_state("api.test") == "closed"


@pytest.mark.anyio
async def test_a_cancelled_probe_frees_its_slot() -> None:
    started = anyio.Event()
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return httpx.Response(503)
        if calls == 3:
            started.set()
            await anyio.sleep(60)
        return httpx.Response(200)

    c, clock, _ = async_client(handler)
    async with c:
        for _ in range(2):
            await c.get("http://api.test/")
        clock.advance(30.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.get, "http://api.test/")
            await started.wait()
            with pytest.raises(CircuitOpenError):
                await c.get("http://api.test/")  # the probe is busy
            tg.cancel_scope.cancel()
        snap = c.breaker_snapshot()["api.test"]
        assert (snap.state, snap.in_flight) == ("half_open", 0)
        assert (await c.get("http://api.test/")).status_code == 200
        assert c.breaker_state("api.test") == "closed"


# -- introspection -----------------------------------------------------------------------------
def test_host_keys_cover_both_default_origins_and_report_the_worst() -> None:
    c, clock, recorder = client(Upstream(500))
    c.get("https://api.test/")  # one failure: still closed
    trip(c, "http://api.test/")
    assert c.breaker_state("api.test") == "open"
    assert c.breaker_state("API.test") == "open"
    assert c.breaker_state("https://api.test") == "closed"
    assert c.breaker_state(httpx.URL("http://api.test/any/path?q=1")) == "open"
    assert c.breaker_state("api.test:80") == "open"  # http on its explicit default port
    assert c.breaker_state("api.test:443") == "closed"
    assert c.breaker_state("api.test:8080") == "closed"
    snapshot = c.breaker_snapshot()
    assert list(snapshot) == ["api.test"]
    assert isinstance(snapshot["api.test"], BreakerSnapshot)
    assert snapshot["api.test"].state == "open"
    clock.advance(30.0)
    assert c.breaker_state("api.test") == "half_open"  # the lazy transition, applied on read
    assert recorder.of("transition")[-1] == ("api.test", "open", "half_open")


def test_ports_and_ipv6_host_keys() -> None:
    c, _, _ = client(Upstream(500))
    trip(c, "https://localhost:8443/")
    trip(c, "http://[::1]:8080/")
    assert c.breaker_state("localhost:8443") == "open"
    assert c.breaker_state("localhost") == "closed"
    assert c.breaker_state("[::1]:8080") == "open"
    assert sorted(c.breaker_snapshot()) == ["[::1]:8080", "localhost:8443"]


def test_snapshot_fields() -> None:
    c, _, _ = client(Upstream(500, ok_test=200), breaker=CircuitBreakerPolicy())
    for _ in range(3):
        c.get("http://api.test/")
    c.get("http://ok.test/")
    snap = c.breaker_snapshot()
    assert snap["api.test"] == BreakerSnapshot(
        host="api.test",
        state="closed",
        calls=3,
        failures=3,
        failure_rate=1.0,
        slow_calls=0,
        slow_call_rate=0.0,
        consecutive_failures=3,
        in_flight=0,
        seconds_until_half_open=0.0,
    )
    assert snap["ok.test"].failure_rate == 0.0
    c2, clock2, _ = client(Upstream(500))
    trip(c2, "http://api.test/")
    clock2.advance(12.0)
    assert c2.breaker_snapshot()["api.test"].seconds_until_half_open == pytest.approx(18.0)


def test_reset_forgets_every_matching_breaker() -> None:
    seen: list[tuple[str, str, str]] = []
    policy = CircuitBreakerPolicy(consecutive_failures=1, on_state_change=lambda *a: seen.append(a))
    upstream = Upstream(500)
    c, _, recorder = client(upstream, breaker=policy)
    c.get("http://api.test/")
    c.get("https://api.test/")
    c.get("http://other.test/")
    c.reset_breaker("api.test")
    assert c.breaker_state("api.test") == "closed"
    assert c.breaker_state("other.test") == "open"
    assert sorted(c.breaker_snapshot()) == ["other.test"]
    assert seen.count(("api.test", "open", "closed")) == 2
    assert recorder.of("removed") == [("api.test",)]
    assert c.get("http://api.test/").status_code == 500  # admitted again
    c.reset_breaker("https://unknown.test")  # unknown: nothing happens


def test_reset_before_any_request_and_unknown_hosts() -> None:
    c, _, _ = client(Upstream(200))
    assert c.breaker_state("api.test") == "closed"
    assert c.breaker_snapshot() == {}
    c.reset_breaker("api.test")


@pytest.mark.parametrize("bad", ["", "a b", "user:pw@api.test", "api.test/path", "api.test?q=1"])
def test_bad_host_arguments_are_clear_errors(bad: str) -> None:
    c, _, _ = client(Upstream(200))
    with pytest.raises(ValueError, match="host key") as info:
        c.breaker_state(bad)
    assert "pw" not in str(info.value)
    with pytest.raises(TypeError):
        c.reset_breaker(42)  # type: ignore[arg-type]


# -- standalone layers -------------------------------------------------------------------------
def test_standalone_transport_with_the_default_policy() -> None:
    upstream = Upstream(503)
    transport = CircuitBreakerTransport(httpx.MockTransport(upstream))
    with httpx.Client(transport=transport) as c:
        for _ in range(20):
            assert c.get("http://api.test/").status_code == 503
        with pytest.raises(CircuitOpenError):
            c.get("http://api.test/")
    assert transport.breaker_state("api.test") == "open"
    assert transport.breaker_snapshot()["api.test"].calls == 20
    transport.reset_breaker("api.test")
    assert transport.breaker_snapshot() == {}


@pytest.mark.anyio
async def test_standalone_async_transport_with_hosts() -> None:
    upstream = Upstream(503)
    transport = AsyncCircuitBreakerTransport(
        httpx.MockTransport(upstream),
        CircuitBreakerPolicy(consecutive_failures=1),
        hosts={"free.test": HostPolicy(breaker=None)},
    )
    async with httpx.AsyncClient(transport=transport) as c:
        await c.get("http://api.test/")
        with pytest.raises(CircuitOpenError):
            await c.get("http://api.test/")
        for _ in range(3):
            assert (await c.get("http://free.test/")).status_code == 503
    assert transport.breaker_state("api.test") == "open"
    assert transport.breaker_state("free.test") == "closed"


def test_the_registry_is_shared_by_every_stack_of_a_client() -> None:
    upstream = Upstream(500)
    mounted = httpx.MockTransport(upstream)
    c, _, _ = client(upstream, mounts={"http://mounted.test": mounted})
    trip(c, "http://api.test/")
    trip(c, "http://mounted.test/")
    assert sorted(c.breaker_snapshot()) == ["api.test", "mounted.test"]


def test_a_call_racing_a_reset_gets_a_fresh_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _, _ = client(Upstream(500))
    trip(c, "http://api.test/")
    registry = c._klayengo.peek(REGISTRY_KEY)
    stale = registry.get(("http", "api.test", 80))
    c.reset_breaker("api.test")
    # The lock-free lookup returns the breaker the reset just retired.
    monkeypatch.setattr(BreakerRegistry, "get", lambda self, key: stale)
    assert c.get("http://api.test/").extensions["klayengo"]["breaker"] == "closed"
    monkeypatch.undo()
    fresh = registry.get(("http", "api.test", 80))
    assert fresh is not stale
    assert c.breaker_snapshot()["api.test"].calls == 1


_URLISH = st.text(alphabet=st.sampled_from("ab.-:/[]@?#% 0123456789\x00é"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), _URLISH, _URLISH.map(lambda t: "http://" + t)))
def test_any_host_argument_gives_a_state_or_a_clear_error(text: str) -> None:
    c, _, _ = client(Upstream(200))
    c.get("http://api.test/")
    try:
        state = c.breaker_state(text)
    except ValueError as exc:
        assert str(exc) == _BAD_TARGET  # never echoes the input: it may hold credentials
    else:
        assert state == "closed"
