"""klayengo.testing: the flaky loopback server, over real HTTP."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from klayengo._core.clock import FakeClock
from klayengo.testing import (
    Behaviour,
    Cacheable,
    Down,
    Fail,
    FailTimes,
    FlakyServer,
    Healthy,
    Intermittent,
    Phases,
    RateLimited,
    RecordedRequest,
    Reply,
    Script,
    Slow,
    Upstream,
)


@pytest.fixture
def server() -> FlakyServer:
    with FlakyServer(name="test") as running:
        yield running


@pytest.fixture
def client() -> httpx.Client:
    with httpx.Client() as c:
        yield c


def test_addresses_are_loopback_on_a_free_port(server: FlakyServer) -> None:
    assert server.port > 0
    assert server.host_key == f"127.0.0.1:{server.port}"
    assert server.url("x") == f"http://127.0.0.1:{server.port}/x"
    assert repr(server) == f"<FlakyServer 'test' port {server.port}>"


def test_unrouted_paths_are_404_unless_a_default_is_given(client: httpx.Client) -> None:
    with FlakyServer() as bare, FlakyServer(Healthy(body=b"hi")) as origin:
        assert client.get(bare.url("/any")).status_code == 404
        response = client.get(origin.url("/any/path?q=1"))
        assert (response.status_code, response.text) == (200, "hi")
        assert origin.requests[0].path == "/any/path"
        assert origin.requests[0].query == "q=1"


def test_fail_times_then_succeeds_and_requests_are_recorded(
    server: FlakyServer, client: httpx.Client
) -> None:
    server.route("/orders", FailTimes(2, then=Healthy(body=b"[]")))
    statuses = [client.get(server.url("/orders")).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert server.count("/orders") == 4
    assert server.count("/orders", status=503) == 2
    assert server.count(method="post") == 0
    assert server.requests[0].header("user-agent", "").startswith("python-httpx")
    server.reset()
    assert server.count() == 0
    assert client.get(server.url("/orders")).status_code == 503  # the script started over


def test_script_plays_each_step_once_then_repeats_the_last(
    server: FlakyServer, client: httpx.Client
) -> None:
    server.route("/s", Script([Healthy(201), Fail(500), Healthy(202)]))
    assert [client.get(server.url("/s")).status_code for _ in range(4)] == [201, 500, 202, 202]


def test_fail_with_retry_after_and_drop(server: FlakyServer, client: httpx.Client) -> None:
    server.route("/busy", Fail(503, retry_after=2.5))
    server.route("/drop", Fail(drop=True))
    busy = client.get(server.url("/busy"))
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "3"
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url("/drop"))
    assert server.requests[-1].status is None
    assert client.get(server.url("/busy")).status_code == 503  # the client reconnects


def test_slow_delays_and_close_interrupts_the_delay(client: httpx.Client) -> None:
    server = FlakyServer(Slow(0.2)).start()
    try:
        started = time.monotonic()
        assert client.get(server.url()).status_code == 200
        assert time.monotonic() - started >= 0.2
        server.route("/stuck", Slow(30.0))
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.get(server.url("/stuck"), timeout=10)
            except httpx.HTTPError as exc:
                errors.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        while server.count("/stuck") == 0 and thread.is_alive():
            time.sleep(0.01)
        time.sleep(0.05)  # the handler is sleeping in its delay now
    finally:
        started = time.monotonic()
        server.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(errors) == 1


def test_down_then_recovers_on_its_clock(client: httpx.Client) -> None:
    clock = FakeClock()
    with FlakyServer(Down(5.0), clock=clock) as server:
        assert client.get(server.url()).status_code == 503
        clock.advance(4.9)
        assert client.get(server.url()).status_code == 503
        clock.advance(0.2)
        assert client.get(server.url()).status_code == 200
        server.reset()  # the down period starts again at the next request
        assert client.get(server.url()).status_code == 503


def test_phases_follow_the_timeline(client: httpx.Client) -> None:
    clock = FakeClock()
    phases = Phases((1.0, Healthy(201)), (2.0, Fail(500)), (None, Healthy(202)))
    with FlakyServer(phases, clock=clock) as server:
        assert phases.phase_index(clock.monotonic()) == 0
        seen = []
        for _ in range(4):
            seen.append(client.get(server.url()).status_code)
            clock.advance(1.0)
        assert seen == [201, 500, 500, 202]
        assert phases.phase_index(clock.monotonic()) == 2
    with pytest.raises(ValueError, match="only the last phase"):
        Phases((None, Healthy()), (1.0, Healthy()))


def test_intermittent_is_reproducible_with_a_seed(client: httpx.Client) -> None:
    def run() -> list[int]:
        with FlakyServer(Intermittent(0.5, seed=7)) as server:
            return [client.get(server.url()).status_code for _ in range(40)]

    first = run()
    assert first == run()
    assert 5 < first.count(503) < 35
    assert set(first) == {200, 503}


def test_rate_limited_answers_429_with_retry_after(client: httpx.Client) -> None:
    clock = FakeClock()
    with FlakyServer(RateLimited(2, per=1.0), clock=clock) as server:
        statuses = [client.get(server.url()).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert server.requests[-1].status == 429
        limited = client.get(server.url())
        assert limited.headers["retry-after"] == "1"
        clock.advance(0.5)  # one token back
        assert client.get(server.url()).status_code == 200
        assert client.get(server.url()).status_code == 429


def test_cacheable_validators_and_304(server: FlakyServer, client: httpx.Client) -> None:
    resource = Cacheable(max_age=30)
    server.route("/items/*", resource)
    first = client.get(server.url("/items/1"))
    assert first.status_code == 200
    assert first.headers["cache-control"] == "max-age=30"
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    other = client.get(server.url("/items/2"))
    assert other.headers["etag"] != etag
    assert other.text != first.text
    again = client.get(server.url("/items/1"), headers={"If-None-Match": f'"x", W/{etag}'})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    since = client.get(server.url("/items/1"), headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    head = client.head(server.url("/items/1"))
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(first.content))
    assert resource.not_modified == 2
    resource.update()
    changed = client.get(server.url("/items/1"), headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.headers["last-modified"] != modified
    stale_date = client.get(server.url("/items/1"), headers={"If-Modified-Since": modified})
    assert stale_date.status_code == 200
    garbage = client.get(server.url("/items/1"), headers={"If-Modified-Since": "garbage"})
    assert garbage.status_code == 200


def test_cacheable_changes_on_its_own_every_period(client: httpx.Client) -> None:
    clock = FakeClock()
    with FlakyServer(Cacheable(change_every=2.0), clock=clock) as server:
        first = client.get(server.url()).headers["etag"]
        clock.advance(1.0)
        assert client.get(server.url()).headers["etag"] == first
        clock.advance(1.5)
        assert client.get(server.url()).headers["etag"] != first


def test_request_bodies_are_read_content_length_and_chunked(
    server: FlakyServer, client: httpx.Client
) -> None:
    server.route("/upload", Healthy(201))

    def chunks() -> object:
        yield b"hello "
        yield b"world"

    assert client.post(server.url("/upload"), content=b"abc").status_code == 201
    assert client.post(server.url("/upload"), content=chunks()).status_code == 201  # type: ignore[arg-type]
    assert client.put(server.url("/upload"), content=b"").status_code == 201
    assert [r.body for r in server.requests] == [b"abc", b"hello world", b""]
    assert [r.method for r in server.requests] == ["POST", "POST", "PUT"]


def test_a_broken_custom_behaviour_answers_500(server: FlakyServer, client: httpx.Client) -> None:
    class Broken(Behaviour):
        def respond(self, request: RecordedRequest, now: float) -> Reply:
            raise RuntimeError("boom")

    class Echo(Behaviour):
        def respond(self, request: RecordedRequest, now: float) -> Reply:
            return Reply(status=200, body=request.query.encode())

    server.route("/broken", Broken())
    server.route("/echo", Echo())
    response = client.get(server.url("/broken"))
    assert response.status_code == 500
    assert "boom" in response.text
    assert client.get(server.url("/echo?a=b")).text == "a=b"
    with pytest.raises(TypeError, match="expected a Behaviour"):
        server.route("/x", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start with '/'"):
        server.route("x", Healthy())


def test_tcp_nodelay_is_set_on_accepted_connections(server: FlakyServer) -> None:
    seen: list[int] = []

    class Probe(Behaviour):
        def respond(self, request: RecordedRequest, now: float) -> Reply:
            with server._lock:
                sockets = list(server._connections)
            seen.extend(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
            return Reply()

    server.route("/", Probe())
    with httpx.Client() as c:
        c.get(server.url())
    assert seen and all(seen)


def test_lifecycle_errors_and_idempotent_close() -> None:
    server = FlakyServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    assert "stopped" in repr(server)
    server.start()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    port = server.port
    server.close()
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    server.route("/", Healthy(202))
    with server:  # back on the same port: an origin that went away and came back
        assert server.port == port
        assert httpx.get(server.url(), timeout=2).status_code == 202
    assert server.count() == 1


def test_upstream_runs_several_origins_on_distinct_ports(client: httpx.Client) -> None:
    with Upstream({"ok": Healthy(), "down": Fail(), "bare": None}) as upstream:
        assert upstream.names() == ["ok", "down", "bare"]
        assert len({s.port for s in upstream}) == 3
        assert client.get(upstream["ok"].url()).status_code == 200
        assert client.get(upstream["down"].url()).status_code == 503
        assert client.get(upstream["bare"].url()).status_code == 404
    assert upstream.servers == {}


@pytest.mark.anyio
async def test_async_clients_and_async_context_managers() -> None:
    async with FlakyServer(FailTimes(1)) as server, httpx.AsyncClient() as client:
        statuses = [(await client.get(server.url())).status_code for _ in range(2)]
        assert statuses == [503, 200]
    async with Upstream({"a": Healthy()}) as upstream, httpx.AsyncClient() as client:
        assert (await client.get(upstream["a"].url())).status_code == 200
