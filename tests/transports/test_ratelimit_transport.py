"""RateLimitTransport / AsyncRateLimitTransport on MockTransport, mostly on a fake clock."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

import klayengo
from klayengo import (
    AsyncRateLimitTransport,
    HostPolicy,
    RateLimitExceeded,
    RateLimitPolicy,
    RateLimitTransport,
)
from klayengo._context import LayerContext
from klayengo._core.backend import MemoryState
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events
from klayengo._core.hosts import PolicyResolver
from klayengo._core.ratelimit import LimiterRegistry


def limiters(context: LayerContext) -> LimiterRegistry:
    """The in-memory limiters behind a context's (default) rate-limit store."""
    state = context.stores.limits._state  # type: ignore[attr-defined]
    assert isinstance(state, MemoryState)
    return state.limiters


class Recorder(Events):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def rate_limited(self, host: str) -> None:
        self.calls.append(("rate_limited", host))

    def rate_limit_wait(self, host: str, seconds: float) -> None:
        self.calls.append(("wait", host, round(seconds, 6)))


Handler = Callable[[httpx.Request], httpx.Response]


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text="ok")


class Setup:
    """A fake-clock context and the clients of both twins built on it."""

    def __init__(
        self,
        policy: RateLimitPolicy | None,
        handler: Handler = ok,
        hosts: dict[str, HostPolicy] | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.events = Recorder()
        self.sent: list[tuple[str, float]] = []

        def recording(request: httpx.Request) -> httpx.Response:
            self.sent.append((str(request.url), self.clock.monotonic()))
            return handler(request)

        self.context = LayerContext(
            name="test",
            resolver=PolicyResolver(rate_limit=policy, hosts=hosts),
            clock=self.clock,
            sleep=self.clock.sleep,
            async_sleep=self.clock.async_sleep,
            events=self.events,
        )
        self.mock = httpx.MockTransport(recording)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=RateLimitTransport(self.mock, _context=self.context))

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=AsyncRateLimitTransport(self.mock, _context=self.context)
        )

    def send_times(self) -> list[float]:
        return [t - 1000.0 for _, t in self.sent]


def sync_get(setup: Setup, urls: list[str], **kwargs: Any) -> list[httpx.Response]:
    with setup.client() as client:
        return [client.get(url, **kwargs) for url in urls]


async def async_get(setup: Setup, urls: list[str], **kwargs: Any) -> list[httpx.Response]:
    async with setup.async_client() as client:
        return [await client.get(url, **kwargs) for url in urls]


# Every behaviour below runs on the sync twin and on the async twin (asyncio and trio).
@pytest.fixture(params=["sync", "asyncio", "trio"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def runner(setup: Setup, urls: list[str], **kwargs: Any) -> list[httpx.Response]:
        if request.param == "sync":
            return sync_get(setup, urls, **kwargs)
        return anyio.run(lambda: async_get(setup, urls, **kwargs), backend=request.param)

    return runner


def test_waits_are_spaced_and_reported(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=10, burst=2))
    responses = run(setup, ["http://a.test/x?token=secret"] * 5)
    assert setup.send_times() == pytest.approx([0, 0, 0.1, 0.2, 0.3])
    waits = [r.extensions["klayengo"]["wait"] for r in responses]
    assert waits == pytest.approx([0, 0, 0.1, 0.1, 0.1])
    assert setup.events.calls == [
        ("wait", "a.test", 0.0),
        ("wait", "a.test", 0.0),
        ("wait", "a.test", 0.1),
        ("wait", "a.test", 0.1),
        ("wait", "a.test", 0.1),
    ]
    assert all(r.text == "ok" for r in responses)


def test_no_policy_passes_through(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(None)
    responses = run(setup, ["http://a.test/"] * 3)
    assert setup.send_times() == [0, 0, 0]
    assert setup.events.calls == []
    assert "klayengo" not in responses[0].extensions


def test_per_request_opt_out(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=1))
    run(setup, ["http://a.test/"] * 3, extensions={"klayengo": {"rate_limit": False}})
    assert setup.send_times() == [0, 0, 0]
    assert setup.events.calls == []


def test_max_wait_raises_at_once(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=2, max_wait=0.3))
    run(setup, ["http://a.test/"])
    with pytest.raises(RateLimitExceeded) as info:
        run(setup, ["http://a.test/?q=secret"])  # would wait 0.5 s
    error = info.value
    assert error.host == "a.test"
    assert error.retry_after == pytest.approx(0.5)
    assert error.request is not None and error.request.url.host == "a.test"
    assert "secret" not in str(error)
    assert isinstance(error, httpx.TransportError)
    assert len(setup.sent) == 1  # the refused request was never sent
    assert setup.clock.sleeps == []  # ...and never waited
    assert setup.events.calls[-1] == ("rate_limited", "a.test")
    setup.clock.advance(0.5)
    run(setup, ["http://a.test/"])  # retry_after was accurate
    assert setup.clock.sleeps == []


def test_max_wait_zero_fails_fast(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=1, max_wait=0))
    run(setup, ["http://a.test/"])
    with pytest.raises(RateLimitExceeded) as info:
        run(setup, ["http://a.test/"])
    assert info.value.retry_after == pytest.approx(1.0)
    assert setup.clock.sleeps == []


def test_scope_host_keeps_one_limiter_per_origin(
    run: Callable[..., list[httpx.Response]],
) -> None:
    setup = Setup(RateLimitPolicy(rate=1))
    run(setup, ["http://a.test/1", "http://b.test/1", "https://a.test/", "http://a.test:80/2"])
    # a.test over http and over https are distinct origins; :80 is http's default.
    assert setup.send_times() == [0, 0, 0, 1]
    names = sorted(lim.name for lim in limiters(setup.context).host_limiters().values())
    assert names == ["test|http://a.test", "test|http://b.test", "test|https://a.test"]


def test_scope_client_shares_one_limiter(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=1, scope="client"))
    run(setup, ["http://a.test/", "http://b.test/", "http://c.test:8080/"])
    assert setup.send_times() == [0, 1, 2]
    # Events still name the host each request went to.
    assert [c[1] for c in setup.events.calls] == ["a.test", "b.test", "c.test:8080"]


def test_host_policies_apply(run: Callable[..., list[httpx.Response]]) -> None:
    hosts = {
        "slow.test": HostPolicy(rate_limit=RateLimitPolicy(rate=0.5)),
        "free.test": HostPolicy(rate_limit=None),
    }
    setup = Setup(RateLimitPolicy(rate=10), hosts=hosts)
    run(setup, ["http://slow.test/"] * 2 + ["http://free.test/"] * 2 + ["http://x.test/"] * 2)
    assert setup.send_times() == pytest.approx([0, 2, 2, 2, 2, 2.1])


def retry_after(status: int, value: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/busy":
            return httpx.Response(status, headers={"Retry-After": value}, text="busy")
        return httpx.Response(200)

    return handler


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_pauses_the_host(run: Callable[..., list[httpx.Response]], status: int) -> None:
    setup = Setup(RateLimitPolicy(rate=100, burst=5), handler=retry_after(status, "3"))
    responses = run(setup, ["http://a.test/busy", "http://a.test/", "http://b.test/"])
    busy = responses[0]
    assert busy.status_code == status and busy.text == "busy"
    assert busy.headers["Retry-After"] == "3"
    # a.test waits out the pause; b.test has its own limiter.
    assert setup.send_times() == pytest.approx([0, 3, 3])


def test_retry_after_http_date(run: Callable[..., list[httpx.Response]]) -> None:
    setup_clock = FakeClock()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(setup_clock.wall() + 7))
    setup = Setup(RateLimitPolicy(rate=100), handler=retry_after(503, date))
    run(setup, ["http://a.test/busy", "http://a.test/"])
    assert setup.send_times() == pytest.approx([0, 7])


def test_retry_after_is_capped_by_max_pause(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=100, max_pause=2), handler=retry_after(429, "3600"))
    run(setup, ["http://a.test/busy", "http://a.test/"])
    assert setup.send_times() == pytest.approx([0, 2])


@pytest.mark.parametrize(
    ("status", "value"), [(429, "soon"), (429, "-5"), (429, ""), (500, "10"), (200, "10")]
)
def test_retry_after_ignored_when_malformed_or_not_back_pressure(
    run: Callable[..., list[httpx.Response]], status: int, value: str
) -> None:
    setup = Setup(RateLimitPolicy(rate=100), handler=retry_after(status, value))
    run(setup, ["http://a.test/busy", "http://a.test/"])
    assert setup.send_times() == pytest.approx([0, 0.01])


def test_max_pause_zero_disables_back_pressure(
    run: Callable[..., list[httpx.Response]],
) -> None:
    setup = Setup(RateLimitPolicy(rate=100, max_pause=0), handler=retry_after(429, "5"))
    run(setup, ["http://a.test/busy", "http://a.test/"])
    assert setup.send_times() == pytest.approx([0, 0.01])


def test_pause_may_push_past_max_wait(run: Callable[..., list[httpx.Response]]) -> None:
    setup = Setup(RateLimitPolicy(rate=100, max_wait=1), handler=retry_after(429, "5"))
    run(setup, ["http://a.test/busy"])
    with pytest.raises(RateLimitExceeded) as info:
        run(setup, ["http://a.test/"])
    assert info.value.retry_after == pytest.approx(5)


def test_debug_log_names_host_only(
    run: Callable[..., list[httpx.Response]], caplog: pytest.LogCaptureFixture
) -> None:
    strict = HostPolicy(rate_limit=RateLimitPolicy(rate=1, max_wait=0))
    setup = Setup(RateLimitPolicy(rate=1), hosts={"b.test": strict})
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        run(setup, ["http://user:pw@a.test:8080/p?key=secret"] * 2)
        with pytest.raises(RateLimitExceeded):
            run(setup, ["http://b.test/p?key=secret"] * 2)
    text = caplog.text
    assert "a.test:8080 waits 1.000 s" in text
    assert "b.test rejected" in text
    assert "secret" not in text and "pw" not in text and "/p" not in text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_no_logging_above_debug_on_normal_requests(
    run: Callable[..., list[httpx.Response]], caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(RateLimitPolicy(rate=1))
    with caplog.at_level(logging.INFO, logger="klayengo"):
        run(setup, ["http://a.test/"] * 3)
    assert caplog.records == []


# -- cancellation --------------------------------------------------------------------------


def test_sync_interrupted_waiter_gives_its_slot_back() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    context = LayerContext(
        resolver=PolicyResolver(rate_limit=RateLimitPolicy(rate=1)),
        clock=clock,
        sleep=sleep,
    )
    with httpx.Client(transport=RateLimitTransport(httpx.MockTransport(ok), _context=context)) as c:
        c.get("http://a.test/")
        with pytest.raises(KeyboardInterrupt):
            c.get("http://a.test/")  # interrupted while waiting for t+1
        response = c.get("http://a.test/")  # gets t+1, not t+2
    assert response.extensions["klayengo"]["wait"] == pytest.approx(1.0)
    assert clock.sleeps == [1.0]


async def _sleep_forever(seconds: float) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
async def test_async_cancelled_waiter_gives_its_slot_back() -> None:
    clock = FakeClock()
    context = LayerContext(
        resolver=PolicyResolver(rate_limit=RateLimitPolicy(rate=1)),
        clock=clock,
        sleep=clock.sleep,
        async_sleep=_sleep_forever,
    )
    transport = AsyncRateLimitTransport(httpx.MockTransport(ok), _context=context)
    async with httpx.AsyncClient(transport=transport) as c:
        await c.get("http://a.test/")
        with anyio.move_on_after(0.01):
            await c.get("http://a.test/")  # waits "forever" for t+1, then is cancelled
        (limiter,) = limiters(context).host_limiters().values()
        assert not limiter.pending
        assert limiter.tat == pytest.approx(1001.0)  # only the first request's slot is taken


@pytest.mark.anyio
async def test_async_cancelled_waiter_lets_later_waiters_start_earlier() -> None:
    # Real time, small intervals: a cancelled waiter in the middle of the queue must
    # not delay the ones behind it, which are asleep until their old slots.
    interval = 0.1
    started: dict[str, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        started[request.url.path] = time.monotonic()
        return httpx.Response(200)

    transport = AsyncRateLimitTransport(
        httpx.MockTransport(handler), RateLimitPolicy(rate=1 / interval)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        t0 = time.monotonic()
        await client.get("http://a.test/0")
        async with anyio.create_task_group() as tg:
            scopes = {}

            async def get(path: str) -> None:
                with anyio.CancelScope() as scope:
                    scopes[path] = scope
                    await client.get(f"http://a.test/{path}")

            for path in ("1", "2", "3", "4"):
                tg.start_soon(get, path)
                await anyio.sleep(0)
            await anyio.sleep(interval / 2)
            scopes["1"].cancel()
    assert "/1" not in started
    rel = {k.strip("/"): v - t0 for k, v in started.items()}
    # Without the give-back, 2, 3 and 4 would start at 2, 3 and 4 intervals. 2 is
    # woken by the cancellation, 3 by 2 when it starts, 4 by 3.
    assert 0.5 * interval < rel["2"] < 1.5 * interval, rel
    assert 1.5 * interval < rel["3"] < 2.5 * interval, rel
    assert 2.5 * interval < rel["4"] < 3.5 * interval, rel


@pytest.mark.skipif(os.name != "posix", reason="needs pthread_kill")
def test_sync_interrupted_waiter_wakes_the_threads_behind_it() -> None:
    # Real time: the main thread waits for slot 1 and gets a real SIGINT; the thread
    # waiting for slot 2 is asleep until then and must be woken to take slot 1.
    interval = 0.2
    started: dict[str, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        started[request.url.path] = time.monotonic()
        return httpx.Response(200)

    transport = RateLimitTransport(httpx.MockTransport(handler), RateLimitPolicy(rate=1 / interval))
    main = threading.get_ident()
    with httpx.Client(transport=transport) as client:
        t0 = time.monotonic()
        client.get("http://a.test/0")
        behind = threading.Thread(target=lambda: client.get("http://a.test/2"))

        def interrupt() -> None:
            time.sleep(interval / 3)
            behind.start()
            time.sleep(interval / 6)
            signal.pthread_kill(main, signal.SIGINT)

        # Only raise while the main thread is where we expect it: a late signal
        # must fail this test, not interrupt the whole test run.
        armed = threading.Event()

        def on_sigint(signum: int, frame: object) -> None:
            if armed.is_set():
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            armed.set()
            interrupter = threading.Thread(target=interrupt)
            interrupter.start()
            with pytest.raises(KeyboardInterrupt):
                client.get("http://a.test/1")
            armed.clear()
            interrupter.join()
            behind.join()
        finally:
            armed.clear()
            signal.signal(signal.SIGINT, previous)
    assert "/1" not in started
    assert started["/2"] - t0 < 1.5 * interval, started


def test_registry_is_shared_by_every_stack_of_a_client() -> None:
    clock = FakeClock()
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.monotonic() - 1000)
        return httpx.Response(200)

    client = klayengo.ResilientClient(
        transport=httpx.MockTransport(handler),
        mounts={"http://b.test": httpx.MockTransport(handler)},
        rate_limit=RateLimitPolicy(rate=1, scope="client"),
        retry=None,
        breaker=None,
        _clock=clock,
    )
    with client:
        client.get("http://a.test/")
        client.get("http://b.test/")  # the mount's stack, same limiter
    assert sent == [0, 1]


def test_evicted_limiter_is_looked_up_again() -> None:
    setup = Setup(RateLimitPolicy(rate=1, max_hosts=1))
    with setup.client() as client:
        client.get("http://a.test/")
        (stale,) = limiters(setup.context).host_limiters().values()
        setup.clock.advance(5)  # a.test is idle now
        client.get("http://b.test/")  # evicts a.test
        assert stale.evicted
        client.get("http://a.test/")
        client.get("http://a.test/")
    assert setup.send_times() == [0, 5, 5, 6]


def test_standalone_transport_with_plain_httpx_client() -> None:
    # Real time: the 4th request waits up to 100 ms, however slowly the first three ran
    # (at rate=1000 a busy machine could take the whole 1 ms slot on them: no wait).
    transport = RateLimitTransport(httpx.MockTransport(ok), RateLimitPolicy(rate=10, burst=3))
    with httpx.Client(transport=transport) as client:
        responses = [client.get("http://a.test/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert responses[3].extensions["klayengo"]["wait"] > 0


def test_standalone_transport_without_policy_limits_listed_hosts_only() -> None:
    strict = HostPolicy(rate_limit=RateLimitPolicy(rate=1, max_wait=0))
    transport = RateLimitTransport(httpx.MockTransport(ok), hosts={"a.test": strict})
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            assert client.get("http://b.test/").status_code == 200
        client.get("http://a.test/")
        with pytest.raises(RateLimitExceeded):
            client.get("http://a.test/")


def test_standalone_transport_rejects_a_wrong_policy_type() -> None:
    with pytest.raises(TypeError, match="RateLimitPolicy"):
        RateLimitTransport(httpx.MockTransport(ok), 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RateLimitPolicy"):
        AsyncRateLimitTransport(httpx.MockTransport(ok), {"rate": 10})  # type: ignore[arg-type]


def test_client_reports_waits_through_the_whole_stack() -> None:
    clock = FakeClock()
    client = klayengo.ResilientClient(
        transport=httpx.MockTransport(ok),
        rate_limit=RateLimitPolicy(rate=4),
        _clock=clock,
    )
    with client:
        waits = [client.get("http://a.test/").extensions["klayengo"]["wait"] for _ in range(3)]
    assert waits == pytest.approx([0, 0.25, 0.25])
