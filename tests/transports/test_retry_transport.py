"""RetryTransport / AsyncRetryTransport on scripted transports (sync, asyncio, trio)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from klayengo._httpx._transports.retry import DRAIN_LIMIT

import klayengo
from klayengo import (
    AsyncRetryTransport,
    CircuitOpenError,
    HostPolicy,
    RateLimitExceeded,
    RetryPolicy,
    RetryTransport,
)
from klayengo._context import LayerContext
from klayengo._core.clock import FakeClock
from klayengo._core.events import Events
from klayengo._core.hosts import PolicyResolver

URL = "https://api.example/items"
Outcome = int | tuple[int, dict[str, str]] | Exception | Callable[[], httpx.Response]


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether it was read and closed (unlike content=)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = False
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.read = True
        yield self.data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.data

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def streamed(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    return httpx.Response(status, headers=headers, stream=Body(body))


class Script(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Plays outcomes in order (the last one repeats); records what each attempt sent.

    It iterates ``request.stream`` itself (as a real transport does), so a body that
    cannot be replayed really is consumed, and it checks that every earlier response
    was closed before the next attempt arrives.
    """

    def __init__(self, *outcomes: Outcome, body: bytes = b"failed") -> None:
        self.outcomes = list(outcomes)
        self.body = body
        self.bodies: list[bytes] = []
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []
        self.per_request: dict[int, list[httpx.Response]] = {}

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def _play(self, request: httpx.Request, body: bytes) -> httpx.Response:
        earlier = self.per_request.setdefault(id(request), [])
        assert all(r.is_closed for r in earlier), "previous response not closed"
        self.requests.append(request)
        self.bodies.append(body)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        if callable(outcome):
            response = outcome()
        else:
            status, headers = outcome if isinstance(outcome, tuple) else (outcome, {})
            response = streamed(status, self.body, headers)
        self.responses.append(response)
        earlier.append(response)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        return self._play(request, b"".join(request.stream))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        return self._play(request, b"".join([chunk async for chunk in request.stream]))


class Recorder(Events):
    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        self.calls.append(("retry", host, reason, attempt, delay))

    def retry_budget_exhausted(self, host: str) -> None:
        self.calls.append(("exhausted", host))


@dataclass
class Harness:
    mode: str
    script: Script
    policy: RetryPolicy | None = None
    hosts: dict[str, HostPolicy] | None = None
    rand: Callable[[], float] = lambda: 0.5
    clock: FakeClock = field(default_factory=FakeClock)
    events: Recorder = field(default_factory=Recorder)

    def __post_init__(self) -> None:
        self.context = LayerContext(
            resolver=PolicyResolver(
                retry=self.policy if self.policy is not None else RetryPolicy(), hosts=self.hosts
            ),
            clock=self.clock,
            sleep=self.clock.sleep,
            async_sleep=self.clock.async_sleep,
            events=self.events,
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "sync":
            return RetryTransport(
                self.script, _context=self.context, _random=self.rand
            ).handle_request(request)
        transport = AsyncRetryTransport(self.script, _context=self.context, _random=self.rand)
        return anyio.run(transport.handle_async_request, request, backend=self.mode)

    def get(self, url: str = URL, **kw: Any) -> httpx.Response:
        return self.send(httpx.Request("GET", url, **kw))


@pytest.fixture(params=["sync", "asyncio", "trio"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def harness(mode: str, *outcomes: Outcome, **kw: Any) -> Harness:
    return Harness(mode, Script(*outcomes), **kw)


def attempts(response: httpx.Response) -> int:
    return int(response.extensions["klayengo"]["attempts"])


# -- success and plain retries ---------------------------------------------------------


def test_success_passes_through_untouched(mode: str) -> None:
    h = harness(mode, 200)
    extensions = {"timeout": {"connect": 1.0}, "trace": None, "custom": object()}
    request = httpx.Request("GET", URL, extensions=extensions)
    passed = request.extensions
    response = h.send(request)
    assert response is h.script.responses[0]
    assert not response.is_closed  # the caller reads it, as with httpx
    assert h.script.requests[0] is request
    assert request.extensions is passed and passed == extensions
    assert attempts(response) == 1
    assert h.clock.sleeps == [] and h.events.calls == []


def test_retried_statuses_back_off_with_full_jitter_then_succeed(mode: str) -> None:
    h = harness(mode, 503, 502, (429, {}), 200)
    response = h.get()
    assert response.status_code == 200
    assert attempts(response) == 4
    # rand = 0.5 of the ceilings 0.1, 0.2, 0.4
    assert h.clock.sleeps == pytest.approx([0.05, 0.1, 0.2])
    assert [c[:4] for c in h.events.calls] == [
        ("retry", "api.example", "status", 2),
        ("retry", "api.example", "status", 3),
        ("retry", "api.example", "status", 4),
    ]
    assert all(r.is_closed for r in h.script.responses[:-1])


def test_after_max_retries_the_last_response_is_returned_open(mode: str) -> None:
    h = harness(mode, 503, policy=RetryPolicy(max_retries=2))
    response = h.get()
    assert response is h.script.responses[-1]
    assert response.status_code == 503 and attempts(response) == 3
    assert not response.is_closed
    assert response.read() == b"failed"


def test_max_retries_zero_sends_once(mode: str) -> None:
    h = harness(mode, 503, policy=RetryPolicy(max_retries=0))
    assert attempts(h.get()) == 1 and h.script.attempts == 1


# -- methods -----------------------------------------------------------------------------


def test_post_is_not_retried_after_a_response(mode: str) -> None:
    h = harness(mode, 503, 200)
    response = h.send(httpx.Request("POST", URL, content=b"{}"))
    assert response.status_code == 503 and h.script.attempts == 1


@pytest.mark.parametrize("header", ["Idempotency-Key", "idempotency-key"])
def test_post_with_an_idempotency_key_is_retried(mode: str, header: str) -> None:
    h = harness(mode, 503, 200)
    response = h.send(httpx.Request("POST", URL, content=b"{}", headers={header: "k-1"}))
    assert response.status_code == 200 and h.script.bodies == [b"{}", b"{}"]


def test_connect_failures_are_retried_for_post(mode: str) -> None:
    h = harness(mode, httpx.ConnectError("refused"), httpx.PoolTimeout("busy"), 201)
    response = h.send(httpx.Request("POST", URL, content=b"x"))
    assert response.status_code == 201 and attempts(response) == 3
    assert [c[2] for c in h.events.calls] == ["connect", "timeout"]


def test_read_timeout_on_post_is_never_retried(mode: str) -> None:
    error = httpx.ReadTimeout("slow")
    h = harness(mode, error, 200)
    with pytest.raises(httpx.ReadTimeout) as raised:
        h.send(httpx.Request("POST", URL, content=b"x"))
    assert raised.value is error
    assert h.script.attempts == 1 and h.clock.sleeps == []


def test_read_failures_on_get_are_retried_and_the_last_error_is_raised(mode: str) -> None:
    errors = [httpx.ReadTimeout("a"), httpx.RemoteProtocolError("b"), httpx.ReadError("c")]
    h = harness(mode, *errors, policy=RetryPolicy(max_retries=2))
    with pytest.raises(httpx.ReadError) as raised:
        h.get()
    assert raised.value is errors[-1]
    assert raised.value.__context__ is None  # not chained onto the earlier failures
    assert [c[2] for c in h.events.calls] == ["timeout", "network"]


def test_other_errors_propagate_at_once(mode: str) -> None:
    h = harness(mode, httpx.LocalProtocolError("bad header"))
    with pytest.raises(httpx.LocalProtocolError):
        h.get()
    assert h.script.attempts == 1


# -- klayengo's own refusals -----------------------------------------------------------


def test_circuit_open_and_rate_limited_are_not_retried_by_default(mode: str) -> None:
    for error in (
        CircuitOpenError("open", host="api.example", retry_after=1.0),
        RateLimitExceeded("limited", host="api.example", retry_after=1.0),
    ):
        h = harness(mode, error, 200)
        with pytest.raises(type(error)):
            h.get()
        assert h.script.attempts == 1


def test_opted_in_refusals_wait_their_retry_after(mode: str) -> None:
    policy = RetryPolicy(retry_on_circuit_open=True, retry_on_rate_limited=True)
    h = harness(
        mode,
        CircuitOpenError("open", host="api.example", retry_after=3.0),
        RateLimitExceeded("limited", host="api.example", retry_after=0.0),
        200,
        policy=policy,
        rand=lambda: 0.0,
    )
    assert attempts(h.get()) == 3
    assert h.clock.sleeps == [3.0, 0.0]


# -- Retry-After and deadline ----------------------------------------------------------


def test_retry_after_seconds_and_dates_are_honoured(mode: str) -> None:
    from email.utils import formatdate

    clock = FakeClock()
    date = formatdate(clock.wall() + 4, usegmt=True)
    h = harness(
        mode,
        (503, {"Retry-After": "2"}),
        (429, {"Retry-After": date}),
        200,
        clock=clock,
        rand=lambda: 0.0,
    )
    assert attempts(h.get()) == 3
    assert h.clock.sleeps == [2.0, pytest.approx(2.0)]  # the date is 4 s after the start


def test_retry_after_past_the_cap_returns_the_response_without_retrying(mode: str) -> None:
    h = harness(mode, (503, {"Retry-After": "61"}), 200)
    response = h.get()
    assert response.status_code == 503 and attempts(response) == 1
    assert h.clock.sleeps == [] and not response.is_closed


def test_malformed_retry_after_falls_back_to_backoff(mode: str) -> None:
    h = harness(mode, (503, {"Retry-After": "in a bit"}), 200)
    assert h.get().status_code == 200
    assert h.clock.sleeps == [0.05]


def test_deadline_bounds_attempts_and_sleeps(mode: str) -> None:
    policy = RetryPolicy(deadline=1.0, backoff_base=0.4, backoff_max=10, jitter=False)
    h = harness(mode, 503, policy=policy)
    response = h.get()
    # Sleeps 0.4 (ends at 0.4); the next one, 0.8, would end at 1.2, past the deadline.
    assert h.clock.sleeps == [0.4] and attempts(response) == 2
    assert response is h.script.responses[-1] and not response.is_closed


def test_deadline_returns_the_last_error(mode: str) -> None:
    h = harness(mode, httpx.ConnectError("down"), policy=RetryPolicy(deadline=0.5))
    with pytest.raises(httpx.ConnectError):
        h.get(extensions={"klayengo": {"deadline": 0.12}})
    # rand 0.5: sleeps 0.05 (ends 0.05), then 0.1 would end at 0.15 >= 0.12.
    assert h.clock.sleeps == [0.05] and h.script.attempts == 2


# -- per-request options and per-host policies ------------------------------------------


def test_per_request_options(mode: str) -> None:
    h = harness(mode, 503)
    assert attempts(h.get(extensions={"klayengo": {"retry": None}})) == 1
    assert attempts(h.get(extensions={"klayengo": {"retry": False}})) == 1
    assert attempts(h.get(extensions={"klayengo": {"max_retries": 1}})) == 2
    one = RetryPolicy(max_retries=1, retry_statuses=frozenset({503}))
    assert attempts(h.get(extensions={"klayengo": {"retry": one}})) == 2
    assert attempts(h.get(extensions={"klayengo": {"retry": True}})) == 4
    with pytest.raises(TypeError, match="unknown key"):
        h.get(extensions={"klayengo": {"retries": 1}})


def test_a_host_with_retry_off_passes_straight_through(mode: str) -> None:
    h = harness(mode, 503, hosts={"api.example": HostPolicy(retry=None)})
    response = h.get()
    assert attempts(response) == 1 and h.script.attempts == 1
    assert attempts(h.get("https://other.example/")) == 4


def test_standalone_layer_defaults_to_retry_policy_defaults() -> None:
    script = Script(503, 503, 200)
    slept: list[float] = []
    transport = RetryTransport(script, _random=lambda: 0.0)
    transport._context.sleep = slept.append
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
    assert script.attempts == 3 and slept == [0.0, 0.0]


# -- the report --------------------------------------------------------------------------


def test_report_sums_waits_and_keeps_the_layers_below_keys(mode: str) -> None:
    def failed(wait: float) -> Callable[[], httpx.Response]:
        def make() -> httpx.Response:
            return httpx.Response(
                503,
                content=b"",
                extensions={
                    "klayengo": {"attempts": 1, "cache": None, "breaker": "x", "wait": wait}
                },
            )

        return make

    def ok() -> httpx.Response:
        return httpx.Response(
            200,
            extensions={
                "klayengo": {"attempts": 1, "cache": None, "breaker": "closed", "wait": 0.5}
            },
        )

    h = harness(mode, failed(0.25), httpx.ConnectError("no wait"), failed(1.0), ok)
    report = h.get().extensions["klayengo"]
    assert report == {"attempts": 4, "cache": None, "breaker": "closed", "wait": 1.75}


# -- bodies ------------------------------------------------------------------------------


def test_bytes_form_and_json_bodies_are_replayed_identically(mode: str) -> None:
    h = harness(mode, 503)
    requests = [
        httpx.Request("PUT", URL, content=b"payload"),
        httpx.Request("PUT", URL, data={"a": "1"}),
        httpx.Request("PUT", URL, json={"k": [1, 2]}),
    ]
    for request in requests:
        h.script.outcomes = [503, 200]
        assert h.send(request).status_code == 200
    assert h.script.bodies == [b"payload"] * 2 + [b"a=1"] * 2 + [b'{"k":[1,2]}'] * 2


def test_multipart_with_rewindable_files_is_replayed_identically(mode: str) -> None:
    h = harness(mode, 503, 503, 200)
    upload = io.BytesIO(b"file contents")
    request = httpx.Request(
        "PUT", URL, data={"field": "v"}, files={"f": ("a.txt", upload, "text/plain")}
    )
    assert attempts(h.send(request)) == 3
    first = h.script.bodies[0]
    assert b"file contents" in first and h.script.bodies == [first] * 3


def test_multipart_with_an_unseekable_file_is_sent_once(mode: str) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(b"once")

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: Any) -> int:
            chunk = self.data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    h = harness(mode, 503, 200)
    response = h.send(httpx.Request("PUT", URL, files={"f": ("a.bin", Pipe())}))
    assert response.status_code == 503 and h.script.attempts == 1


def test_sync_streams_replayed_only_when_rewindable() -> None:
    h = harness("sync", 503, 200)

    def generate() -> Iterator[bytes]:
        yield b"gen"

    # A generator cannot be replayed: sent once, the response returned as is.
    assert h.send(httpx.Request("PUT", URL, content=generate())).status_code == 503
    # A plain iterator cannot either (a second pass would silently send nothing).
    h.script.outcomes = [503, 200]
    assert h.send(httpx.Request("PUT", URL, content=iter([b"it"]))).status_code == 503
    # A list of chunks is iterated again.
    h.script.outcomes = [503, 200]
    assert h.send(httpx.Request("PUT", URL, content=[b"a", b"b"])).status_code == 200
    # A seekable file is rewound to where it was when the request started.
    h.script.outcomes = [503, 503, 200]
    upload = io.BytesIO(b"skip:the body")
    upload.seek(5)
    assert h.send(httpx.Request("PUT", URL, content=upload)).status_code == 200
    assert h.script.bodies == [b"gen", b"it", b"ab", b"ab"] + [b"the body"] * 3


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_streams_are_sent_once(backend: str) -> None:
    h = harness(backend, 503, 200)

    async def generate() -> AsyncIterator[bytes]:
        yield b"agen"

    response = h.send(httpx.Request("PUT", URL, content=generate()))
    assert response.status_code == 503 and h.script.bodies == [b"agen"]


def test_a_body_that_fails_to_rewind_is_not_resent() -> None:
    class Flaky(io.BytesIO):
        seeks = 0

        def seek(self, *args: Any) -> int:
            Flaky.seeks += 1
            if Flaky.seeks > 1:
                raise OSError("gone")
            return super().seek(*args)

    h = harness("sync", 503, 200)
    upload = Flaky(b"data")
    upload.seek(0)
    assert h.send(httpx.Request("PUT", URL, content=upload)).status_code == 503
    assert h.script.attempts == 1


# -- logging -----------------------------------------------------------------------------


def test_each_retry_is_logged_at_debug_without_query_or_credentials(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(mode, httpx.ConnectError("x"), 503, 200)
    with caplog.at_level(logging.DEBUG, logger="klayengo"):
        h.get("https://user:hunter2@api.example:8443/p?token=s3cret#frag")
    retries = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert len(retries) == 2
    for record in caplog.records:
        # Not `pathname`: the checkout's own path may contain "/p".
        fields = {k: v for k, v in record.__dict__.items() if k != "pathname"}
        text = record.getMessage() + repr(fields)
        for secret in ("hunter2", "user", "s3cret", "token", "frag", "/p"):
            assert secret not in text
        assert record.levelno == logging.DEBUG
    first = retries[0]
    assert first.klayengo_host == "api.example:8443"  # type: ignore[attr-defined]
    assert (first.klayengo_attempt, first.klayengo_reason) == (2, "connect")  # type: ignore[attr-defined]
    assert first.klayengo_delay == pytest.approx(0.05)  # type: ignore[attr-defined]
    assert "api.example:8443" in first.getMessage()


def test_nothing_is_logged_above_debug(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    h = harness(mode, 503, policy=RetryPolicy(max_retries=1))
    with caplog.at_level(logging.INFO, logger="klayengo"):
        h.get()
    assert caplog.records == []


# -- the budget --------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


def test_budget_storm_over_10000_requests_is_bounded_exactly() -> None:
    """Every request fails; 100 requests/s for 100 s against the default budget.

    Each 10 s window may carry ``budget_ratio * requests + budget_min_per_second *
    budget_window`` = 0.2 * 1000 + 10 * 10 = 300 retries, so ten windows carry exactly
    3000, instead of the 30000 that ``max_retries=3`` alone would send.
    """
    policy = RetryPolicy()
    clock = ManualClock()
    events = Recorder()
    context = LayerContext(
        resolver=PolicyResolver(retry=policy),
        clock=clock,
        sleep=lambda _: None,  # the storm's timing is the arrivals', not the backoff's
        events=events,
    )
    script = Script(503)
    transport = RetryTransport(script, _context=context)
    per_second, seconds = 100, 100
    retry_times: list[float] = []
    short = 0
    for i in range(per_second * seconds):
        clock.now = 1000.0 + i / per_second
        before = len(events.calls)
        response = transport.handle_request(httpx.Request("GET", URL))
        retry_times += [clock.now] * sum(c[0] == "retry" for c in events.calls[before:])
        short += attempts(response) < policy.max_retries + 1
    retries = len(retry_times)
    window_allowance = (
        policy.budget_ratio * per_second * policy.budget_window
        + policy.budget_min_per_second * policy.budget_window
    )
    windows = seconds / policy.budget_window
    assert retries == window_allowance * windows == 3000
    assert script.attempts == per_second * seconds + retries
    for start in range(1000, 1100, 10):  # each aligned window is exactly at its allowance
        assert sum(start <= t < start + 10 for t in retry_times) == window_allowance
    # One refusal event per request that was cut short by the budget.
    assert sum(c[0] == "exhausted" for c in events.calls) == short > 0


def test_budget_refusal_returns_the_last_response_and_emits_an_event(mode: str) -> None:
    policy = RetryPolicy(budget_ratio=0, budget_min_per_second=0.1, budget_window=10)
    h = harness(mode, 503, policy=policy)
    assert attempts(h.get()) == 2  # the reserve allows one retry in the window
    response = h.get()
    assert attempts(response) == 1 and not response.is_closed
    assert ("exhausted", "api.example") in h.events.calls
    h.clock.advance(10)
    assert attempts(h.get()) == 2


def test_budget_holds_under_concurrent_threads() -> None:
    """8 threads x 250 failing requests at one instant: at most 0.2 * 2000 + 100 retries."""
    import threading

    policy = RetryPolicy()
    events = Recorder()
    context = LayerContext(
        resolver=PolicyResolver(retry=policy),
        clock=ManualClock(),
        sleep=lambda _: None,
        events=events,
    )
    inner = httpx.MockTransport(lambda _: httpx.Response(503))  # thread-safe, unlike Script
    transport = RetryTransport(inner, _context=context)

    def worker() -> None:
        for _ in range(250):
            transport.handle_request(httpx.Request("GET", URL))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    retries = sum(c[0] == "retry" for c in events.calls)
    bound = policy.budget_ratio * 2000 + policy.budget_min_per_second * policy.budget_window
    assert bound - policy.max_retries <= retries <= bound


def test_budget_is_shared_by_every_stack_of_a_client() -> None:
    policy = RetryPolicy(budget_ratio=0, budget_min_per_second=0.1, budget_window=10)
    context = LayerContext(resolver=PolicyResolver(retry=policy), sleep=lambda _: None)
    one = RetryTransport(Script(503), _context=context)
    two = RetryTransport(Script(503), _context=context)
    assert attempts(one.handle_request(httpx.Request("GET", URL))) == 2
    assert attempts(two.handle_request(httpx.Request("GET", URL))) == 1


# -- cancellation ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelling_during_backoff_ends_at_once_without_another_attempt() -> None:
    script = Script(503, 200)
    policy = RetryPolicy(backoff_base=30, backoff_max=30, jitter=False)
    transport = AsyncRetryTransport(script, policy)  # real anyio.sleep
    started = anyio.current_time()
    with anyio.move_on_after(0.2) as scope:
        await transport.handle_async_request(httpx.Request("GET", URL))
    assert scope.cancelled_caught
    assert anyio.current_time() - started < 2.0
    await anyio.sleep(0.1)
    assert script.attempts == 1 and script.responses[0].is_closed


@pytest.mark.anyio
async def test_cancelling_from_another_task_during_backoff() -> None:
    script = Script(httpx.ConnectError("down"), 200)
    # The full 30 s backoff: a jittered one below 0.06 s would let the second attempt in.
    transport = AsyncRetryTransport(
        script, RetryPolicy(backoff_base=30, backoff_max=30), _random=lambda: 1.0
    )
    async with anyio.create_task_group() as group:
        group.start_soon(transport.handle_async_request, httpx.Request("GET", URL))
        while script.attempts == 0:
            await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert script.attempts == 1


# -- through the client ----------------------------------------------------------------


def test_resilient_client_retries_and_reports() -> None:
    script = Script(503, 200)
    with klayengo.ResilientClient(
        transport=script, _clock=FakeClock(), metrics=False, breaker=None
    ) as client:
        response = client.get(URL)
    assert response.status_code == 200 and response.extensions["klayengo"]["attempts"] == 2


@pytest.mark.anyio
async def test_async_resilient_client_retries_and_reports() -> None:
    script = Script(httpx.ConnectError("x"), 200)
    async with klayengo.AsyncResilientClient(
        transport=script, _clock=FakeClock(), metrics=False, breaker=None
    ) as client:
        response = await client.get(URL)
    assert response.status_code == 200 and response.extensions["klayengo"]["attempts"] == 2


# -- failed responses are drained (when small) and closed --------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "drained"),
    [
        (b"small", {}, True),
        (b"x" * (DRAIN_LIMIT + 1), {}, False),  # announced as too large: not downloaded
        (b"chunked", {"Content-Length": ""}, False),  # no usable length: closed unread
        (b"lying", {"Content-Length": "nan"}, False),
    ],
)
def test_failed_responses_are_drained_only_when_small_and_always_closed(
    mode: str, body: bytes, headers: dict[str, str], drained: bool
) -> None:
    failed = streamed(503, body)
    if headers.get("Content-Length") == "":
        del failed.headers["Content-Length"]
    elif headers:
        failed.headers.update(headers)
    h = harness(mode, lambda: failed, 200)
    assert h.get().status_code == 200
    stream = failed.stream
    assert isinstance(stream, Body)
    assert (stream.read, stream.closed, failed.is_closed) == (drained, True, True)


def test_a_body_that_breaks_while_draining_is_still_closed(mode: str) -> None:
    class Broken(Body):
        def __iter__(self) -> Iterator[bytes]:
            raise httpx.ReadError("reset")

        async def __aiter__(self) -> AsyncIterator[bytes]:
            raise httpx.ReadError("reset")
            yield b""  # pragma: no cover

    stream = Broken(b"")
    failed = httpx.Response(503, headers={"Content-Length": "10"}, stream=stream)
    h = harness(mode, lambda: failed, 200)
    assert h.get().status_code == 200 and stream.closed
