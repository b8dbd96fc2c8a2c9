"""Real SDKs over klayengo's clients, against a loopback fake of their APIs.

- openai and anthropic depend on httpx2: they take ``klayengo.httpx2.ResilientClient`` /
  ``AsyncResilientClient`` as ``http_client=``. (openai also takes an httpx client, so
  ``klayengo.ResilientClient`` too; anthropic takes httpx2 clients only.)
- groq still depends on httpx: it takes ``klayengo.ResilientClient`` /
  ``AsyncResilientClient``. In the ``KLAYENGO_FLAVOUR=httpx2`` run ``import httpx`` is
  httpx2 process-wide, so groq and ``klayengo.ResilientClient`` both run on httpx2 there:
  that is the test that groq works on an application aliased to httpx2.

The setup the README recommends, and these tests check: one side retries, not both.
SDK ``max_retries=0``, and klayengo retries the API host's POSTs (the SDKs send no
``Idempotency-Key`` of their own: ``retry_non_idempotent=True`` for that host, or an
``Idempotency-Key`` per call). Both sides on multiply: 3 SDK attempts x 4 klayengo
attempts = 12 upstream requests for one call.

The async SDK clients run on asyncio and trio (anyio underneath); each async test runs on
both (tests/conftest.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import groq
import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry

import klayengo
import klayengo.httpx2

from .sdk_upstream import ANTHROPIC_MODEL, GROQ_MODEL, OPENAI_MODEL, STREAMED, FakeAI

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
#: Backoff short enough for tests that make many attempts; the counts are what matter.
FAST = {"backoff_base": 0.001, "backoff_max": 0.001}
CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
ANTHROPIC = "/v1/messages"
GROQ = "/openai/v1/chat/completions"
#: The SDKs' own retry sleeps honour this header: their backoff stays out of the tests.
SDK_RETRY_NOW = {"retry-after-ms": "1"}
#: klayengo's ResilientClient is bound to the process's `httpx`, httpx2 in the aliased run.
ALIASED = issubclass(klayengo.ResilientClient, httpx2.Client)


@pytest.fixture
def fake() -> Iterator[FakeAI]:
    with FakeAI() as running:
        yield running


#: The fake's host, in ``hosts=`` as the README has ``"api.openai.com"`` (any port).
API_HOST = "127.0.0.1"


def retry_posts(**policy: Any) -> dict[str, klayengo.HostPolicy]:
    """The README's ``hosts=``: retry POSTs too, to the API's host only."""
    retry = klayengo.RetryPolicy(retry_non_idempotent=True, **policy)
    return {API_HOST: klayengo.HostPolicy(retry=retry)}


def retry_counts(fake: FakeAI, path: str) -> list[str]:
    """The SDK's ``x-stainless-retry-count`` of each attempt the fake saw: the SDK's own
    retries count up, klayengo's resend the same request (and so the same count)."""
    return [seen.headers["x-stainless-retry-count"] for seen in fake.seen(path)]


def openai_client(fake: FakeAI, http_client: Any, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test", base_url=f"{fake.base_url}/v1", http_client=http_client, **options
    )


def async_openai(fake: FakeAI, http_client: Any, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"{fake.base_url}/v1", http_client=http_client, **options
    )


# -- openai ----------------------------------------------------------------------------
def test_openai_chat_completion_runs_through_the_stack(fake: FakeAI) -> None:
    http_client = klayengo.httpx2.ResilientClient()
    with openai_client(fake, http_client) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=MESSAGES
        )
        completion = raw.parse()
    assert http_client.is_closed  # the SDK's close() closes the client it was given
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert raw.http_response.extensions["klayengo"] == {
        "attempts": 1,
        "cache": None,
        "breaker": "closed",
        "wait": 0.0,
    }
    (seen,) = fake.seen(CHAT)
    assert seen.json() == {"model": OPENAI_MODEL, "messages": MESSAGES}
    assert seen.headers["authorization"] == "Bearer sk-test"


def test_openai_503_once_is_retried_by_klayengo_not_by_the_sdk(fake: FakeAI) -> None:
    fake.fail(CHAT, times=1, status=503)
    http_client = klayengo.httpx2.ResilientClient(hosts=retry_posts())
    with openai_client(fake, http_client, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=MESSAGES
        )
        assert raw.parse().choices[0].message.content == "Hello there!"
    assert [seen.status for seen in fake.seen(CHAT)] == [503, 200]
    assert retry_counts(fake, CHAT) == ["0", "0"]  # the same request, sent twice
    first, second = fake.seen(CHAT)
    assert first.body == second.body
    assert raw.http_response.extensions["klayengo"]["attempts"] == 2


@pytest.mark.anyio
async def test_async_openai_503_once_is_retried_by_klayengo(fake: FakeAI) -> None:
    fake.fail(CHAT, times=1, status=503)
    http_client = klayengo.httpx2.AsyncResilientClient(hosts=retry_posts())
    async with async_openai(fake, http_client, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=MESSAGES
        )
        assert raw.parse().choices[0].message.content == "Hello there!"
    assert http_client.is_closed
    assert [seen.status for seen in fake.seen(CHAT)] == [503, 200]
    assert retry_counts(fake, CHAT) == ["0", "0"]
    assert raw.http_response.extensions["klayengo"]["attempts"] == 2


def test_a_post_is_not_retried_by_default(fake: FakeAI) -> None:
    # Why the README's setup opts in: the SDK sends no Idempotency-Key, so klayengo's
    # default policy does not resend a POST, and with the SDK's retries off nobody does.
    fake.fail(CHAT, times=1, status=503)
    with openai_client(fake, klayengo.httpx2.ResilientClient(), max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    assert [seen.status for seen in fake.seen(CHAT)] == [503]
    assert "idempotency-key" not in fake.seen(CHAT)[0].headers


def test_an_idempotency_key_per_call_makes_a_post_retryable(fake: FakeAI) -> None:
    fake.fail(CHAT, times=1, status=503)
    with openai_client(fake, klayengo.httpx2.ResilientClient(), max_retries=0) as client:
        completion = client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=MESSAGES,
            extra_headers={"Idempotency-Key": "order-42-summary"},
        )
    assert completion.choices[0].message.content == "Hello there!"
    assert [seen.status for seen in fake.seen(CHAT)] == [503, 200]
    assert [seen.headers["idempotency-key"] for seen in fake.seen(CHAT)] == ["order-42-summary"] * 2


@pytest.mark.parametrize(
    ("path", "retry"),
    [
        pytest.param(MODELS, klayengo.RetryPolicy(**FAST), id="GET-default-rules"),
        pytest.param(
            CHAT, klayengo.RetryPolicy(retry_non_idempotent=True, **FAST), id="POST-opted-in"
        ),
    ],
)
def test_both_sides_retrying_multiply_into_twelve_attempts(
    fake: FakeAI, path: str, retry: klayengo.RetryPolicy
) -> None:
    # The trap: the SDK's 3 attempts (max_retries=2, its default) each go through
    # klayengo's 4 (max_retries=3). For a GET it needs no opt-in at all.
    fake.fail(path, times=100, status=503, headers=SDK_RETRY_NOW)
    with openai_client(fake, klayengo.httpx2.ResilientClient(retry=retry)) as client:
        with pytest.raises(openai.InternalServerError):
            if path == MODELS:
                client.models.list()
            else:
                client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert len(fake.seen(path)) == 12
    assert retry_counts(fake, path) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4


@pytest.mark.parametrize(
    ("sdk_retries", "hosts", "attempts"),
    [
        pytest.param(2, {API_HOST: klayengo.HostPolicy(retry=None)}, 3, id="the-SDK-retries"),
        pytest.param(0, retry_posts(**FAST), 4, id="klayengo-retries"),
    ],
)
def test_one_side_retrying_keeps_the_attempts_bounded(
    fake: FakeAI, sdk_retries: int, hosts: dict[str, klayengo.HostPolicy], attempts: int
) -> None:
    fake.fail(CHAT, times=100, status=503, headers=SDK_RETRY_NOW)
    http_client = klayengo.httpx2.ResilientClient(hosts=hosts)
    with openai_client(fake, http_client, max_retries=sdk_retries) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert len(fake.seen(CHAT)) == attempts


def test_openai_stream_is_passed_through_unbuffered(fake: FakeAI) -> None:
    # A cache and retries on: neither may hold the stream back. The fake sends the first
    # piece, then waits for this test to have it before sending the rest.
    gate = fake.stream_gate = threading.Event()
    http_client = klayengo.httpx2.ResilientClient(cache=klayengo.CachePolicy(), hosts=retry_posts())
    with openai_client(fake, http_client, max_retries=0) as client:
        with client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, stream=True
        ) as stream:
            chunks = iter(stream)
            assert next(chunks).choices[0].delta.role == "assistant"
            assert next(chunks).choices[0].delta.content == STREAMED[0]
            gate.set()
            rest = [chunk.choices[0].delta.content for chunk in chunks]
            report = stream.response.extensions["klayengo"]
    assert fake.gate_opened == [True]  # the piece came before the rest was sent
    assert rest == [*STREAMED[1:], None]
    # A POST is not the cache's business (it stores GET/HEAD): no cache result at all.
    assert report == {"attempts": 1, "cache": None, "breaker": "closed", "wait": 0.0}
    assert len(fake.seen(CHAT)) == 1


@pytest.mark.anyio
# On trio: openai's AsyncStream stops reading at [DONE] without closing its SSE generators
# (its own, and the Response.aiter_bytes() it reads), and trio warns as they are dropped.
# A plain httpx2.AsyncClient gets the same warnings; asyncio gives none.
@pytest.mark.filterwarnings("ignore:Async generator 'openai._streaming.:ResourceWarning")
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx2._models.Response.aiter_bytes':ResourceWarning"
)
async def test_async_openai_stream_is_passed_through_unbuffered(fake: FakeAI) -> None:
    gate = fake.stream_gate = threading.Event()
    http_client = klayengo.httpx2.AsyncResilientClient(
        cache=klayengo.CachePolicy(), hosts=retry_posts()
    )
    async with async_openai(fake, http_client, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, stream=True
        )
        async with stream:
            assert (await stream.__anext__()).choices[0].delta.role == "assistant"
            assert (await stream.__anext__()).choices[0].delta.content == STREAMED[0]
            gate.set()
            rest = [chunk.choices[0].delta.content async for chunk in stream]
    assert fake.gate_opened == [True]
    assert rest == [*STREAMED[1:], None]
    assert len(fake.seen(CHAT)) == 1


def test_klayengo_refusals_reach_the_caller_as_connection_errors(fake: FakeAI) -> None:
    # An open breaker fails fast with CircuitOpenError, an httpx2.TransportError: the SDK
    # raises its APIConnectionError from it (and would retry it, were its retries on).
    fake.fail(CHAT, times=1, status=503)
    http_client = klayengo.httpx2.ResilientClient(
        breaker=klayengo.CircuitBreakerPolicy(consecutive_failures=1)
    )
    with openai_client(fake, http_client, max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
        with pytest.raises(openai.APIConnectionError) as caught:
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert isinstance(caught.value.__cause__, klayengo.httpx2.CircuitOpenError)
    assert len(fake.seen(CHAT)) == 1  # the second call never left the process


def test_with_the_sdks_retries_on_it_retries_an_open_breaker(fake: FakeAI) -> None:
    # One more reason to leave retrying to klayengo: the SDK takes CircuitOpenError for a
    # connection error and retries it, sleeping its backoff each time (no traffic, though).
    fake.fail(CHAT, times=1, status=503)
    registry = CollectorRegistry()
    http_client = klayengo.httpx2.ResilientClient(
        metrics=registry, breaker=klayengo.CircuitBreakerPolicy(consecutive_failures=1)
    )
    with openai_client(fake, http_client, max_retries=1) as client:
        with pytest.raises(openai.InternalServerError):  # this 503 opens the breaker
            client.with_options(max_retries=0).chat.completions.create(
                model=OPENAI_MODEL, messages=MESSAGES
            )
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    labels = {"client": "default", "host": fake.host_key}
    rejected = registry.get_sample_value("klayengo_circuit_breaker_rejections_total", labels)
    assert rejected == 2  # both attempts of the SDK's second call
    assert len(fake.seen(CHAT)) == 1


@pytest.mark.slow
def test_connection_failures_multiply_with_klayengos_default_rules() -> None:
    # Nothing listens: a ConnectError, which klayengo retries for every method (nothing was
    # sent), and so does the SDK. 3 x 4 attempts without any opt-in; metrics count them.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = CollectorRegistry()
    http_client = klayengo.httpx2.ResilientClient(
        metrics=registry, retry=klayengo.RetryPolicy(**FAST)
    )
    with openai.OpenAI(
        api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", http_client=http_client
    ) as client:
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    host = f"127.0.0.1:{port}"
    calls = registry.get_sample_value(
        "klayengo_requests_total",
        {"client": "default", "host": host, "method": "POST", "status_code": "error"},
    )
    retries = registry.get_sample_value(
        "klayengo_retries_total", {"client": "default", "host": host, "reason": "connect"}
    )
    assert (calls, retries) == (3, 9)  # 3 SDK attempts, each retried 3 times: 12 connects


def test_openai_also_takes_klayengos_httpx_client(fake: FakeAI) -> None:
    # openai accepts an httpx.Client as well as an httpx2.Client.
    fake.fail(CHAT, times=1, status=503)
    http_client = klayengo.ResilientClient(hosts=retry_posts())
    with openai_client(fake, http_client, max_retries=0) as client:
        completion = client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello there!"
    assert [seen.status for seen in fake.seen(CHAT)] == [503, 200]


# -- anthropic -------------------------------------------------------------------------
#: Anthropic's API answers 529 when it is overloaded: not among klayengo's default retry
#: and breaker statuses, so the README's setup for it adds 529 to both.
ANTHROPIC_HOSTS = {
    API_HOST: klayengo.HostPolicy(
        retry=klayengo.RetryPolicy(
            retry_non_idempotent=True, retry_statuses={429, 502, 503, 504, 529}
        ),
        breaker=klayengo.CircuitBreakerPolicy(failure_statuses={500, 502, 503, 504, 529}),
    )
}


def anthropic_client(fake: FakeAI, http_client: Any, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test", base_url=fake.base_url, http_client=http_client, **options
    )


@pytest.mark.parametrize(
    ("status", "hosts", "attempts"),
    [
        pytest.param(503, retry_posts(), 2, id="503"),
        pytest.param(529, ANTHROPIC_HOSTS, 2, id="529-with-the-README-setup"),
        pytest.param(529, retry_posts(), 1, id="529-not-retried-by-default"),
    ],
)
def test_anthropic_failure_once_is_retried_by_klayengo(
    fake: FakeAI, status: int, hosts: dict[str, klayengo.HostPolicy], attempts: int
) -> None:
    fake.fail(ANTHROPIC, times=1, status=status)
    http_client = klayengo.httpx2.ResilientClient(hosts=hosts)
    with anthropic_client(fake, http_client, max_retries=0) as client:
        if attempts == 1:
            with pytest.raises(anthropic.OverloadedError):
                client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES)
        else:
            message = client.messages.create(
                model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
            )
            assert message.content[0].type == "text"
            assert message.content[0].text == "Hello there!"
            assert message.usage.output_tokens == 3
    assert [seen.status for seen in fake.seen(ANTHROPIC)] == [status, 200][:attempts]
    assert retry_counts(fake, ANTHROPIC) == ["0"] * attempts
    assert fake.seen(ANTHROPIC)[0].json()["max_tokens"] == 64


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        pytest.param({500, 502, 503, 504, 529}, "open", id="529-listed"),
        pytest.param(klayengo.CircuitBreakerPolicy().failure_statuses, "closed", id="default"),
    ],
)
def test_anthropic_529_counts_for_the_breaker_when_listed(
    fake: FakeAI, statuses: set[int], state: str
) -> None:
    fake.fail(ANTHROPIC, times=1, status=529)
    http_client = klayengo.httpx2.ResilientClient(
        retry=None,
        breaker=klayengo.CircuitBreakerPolicy(consecutive_failures=1, failure_statuses=statuses),
    )
    with anthropic_client(fake, http_client, max_retries=0) as client:
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES)
        assert http_client.breaker_state(fake.host_key) == state


@pytest.mark.anyio
async def test_async_anthropic_503_once_is_retried_by_klayengo(fake: FakeAI) -> None:
    fake.fail(ANTHROPIC, times=1, status=503)
    http_client = klayengo.httpx2.AsyncResilientClient(hosts=retry_posts())
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-test", base_url=fake.base_url, http_client=http_client, max_retries=0
    ) as client:
        message = await client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
        )
    assert http_client.is_closed
    assert message.content[0].type == "text" and message.content[0].text == "Hello there!"
    assert [seen.status for seen in fake.seen(ANTHROPIC)] == [503, 200]
    assert retry_counts(fake, ANTHROPIC) == ["0", "0"]


def test_anthropic_stream_is_passed_through_unbuffered(fake: FakeAI) -> None:
    gate = fake.stream_gate = threading.Event()
    http_client = klayengo.httpx2.ResilientClient(cache=klayengo.CachePolicy(), hosts=retry_posts())
    with anthropic_client(fake, http_client, max_retries=0) as client:
        with client.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
        ) as stream:
            texts = stream.text_stream
            assert next(texts) == STREAMED[0]
            gate.set()
            rest = list(texts)
            final = stream.get_final_message()
    assert fake.gate_opened == [True]
    assert rest == list(STREAMED[1:])
    assert final.stop_reason == "end_turn"
    assert len(fake.seen(ANTHROPIC)) == 1


@pytest.mark.anyio
async def test_async_anthropic_stream_is_passed_through_unbuffered(fake: FakeAI) -> None:
    gate = fake.stream_gate = threading.Event()
    http_client = klayengo.httpx2.AsyncResilientClient(
        cache=klayengo.CachePolicy(), hosts=retry_posts()
    )
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-test", base_url=fake.base_url, http_client=http_client, max_retries=0
    ) as client:
        async with client.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
        ) as stream:
            texts = stream.text_stream.__aiter__()
            assert await texts.__anext__() == STREAMED[0]
            gate.set()
            rest = [text async for text in texts]
    assert fake.gate_opened == [True]
    assert rest == list(STREAMED[1:])


@pytest.mark.skipif(ALIASED, reason="httpx is httpx2 in this run: every klayengo client is httpx2")
def test_anthropic_refuses_an_httpx_client(fake: FakeAI) -> None:
    # Why anthropic users need klayengo.httpx2: the SDK checks for httpx2.Client.
    with klayengo.ResilientClient() as http_client, pytest.raises(TypeError, match="httpx2"):
        anthropic_client(fake, http_client)


# -- groq (an SDK on httpx) -------------------------------------------------------------
def groq_client(fake: FakeAI, http_client: Any, **options: Any) -> groq.Groq:
    return groq.Groq(api_key="gsk-test", base_url=fake.base_url, http_client=http_client, **options)


def test_groq_503_once_is_retried_by_klayengo(fake: FakeAI) -> None:
    fake.fail(GROQ, times=1, status=503)
    http_client = klayengo.ResilientClient(hosts=retry_posts())
    with groq_client(fake, http_client, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model=GROQ_MODEL, messages=MESSAGES)
        completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.model == GROQ_MODEL
    assert [seen.status for seen in fake.seen(GROQ)] == [503, 200]
    assert retry_counts(fake, GROQ) == ["0", "0"]
    assert raw.http_response.extensions["klayengo"]["attempts"] == 2


@pytest.mark.anyio
async def test_async_groq_503_once_is_retried_by_klayengo(fake: FakeAI) -> None:
    fake.fail(GROQ, times=1, status=503)
    http_client = klayengo.AsyncResilientClient(hosts=retry_posts())
    async with groq.AsyncGroq(
        api_key="gsk-test", base_url=fake.base_url, http_client=http_client, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model=GROQ_MODEL, messages=MESSAGES)
    assert http_client.is_closed
    assert completion.choices[0].message.content == "Hello there!"
    assert [seen.status for seen in fake.seen(GROQ)] == [503, 200]


def test_groq_stream_is_passed_through_unbuffered(fake: FakeAI) -> None:
    gate = fake.stream_gate = threading.Event()
    http_client = klayengo.ResilientClient(cache=klayengo.CachePolicy(), hosts=retry_posts())
    with groq_client(fake, http_client, max_retries=0) as client:
        stream = client.chat.completions.create(model=GROQ_MODEL, messages=MESSAGES, stream=True)
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"
        assert next(chunks).choices[0].delta.content == STREAMED[0]
        gate.set()
        rest = [chunk.choices[0].delta.content for chunk in chunks]
    assert fake.gate_opened == [True]
    assert rest == [*STREAMED[1:], None]
