"""`klayengo get URL`: one request through the stack, against the flaky loopback server."""

from __future__ import annotations

import socket
import types

import pytest

from klayengo._cli import main
from klayengo.testing import Fail, FailTimes, FlakyServer, Healthy


@pytest.fixture
def server() -> FlakyServer:
    with FlakyServer(name="get") as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsysbinary.readouterr()
    return code, captured.out.decode(), captured.err.decode()


def test_prints_status_layers_and_body(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.route("/hello", Healthy(body=b"hello, world\n"))
    code, out, err = run(capsysbinary, "get", server.url("/hello"))
    assert code == 0
    assert out == "hello, world\n"  # stdout is the body alone: `klayengo get URL > file`
    lines = err.splitlines()
    assert lines[0].startswith("HTTP/1.1 200 OK")
    assert lines[1].startswith("klayengo: attempts=1 cache=off breaker=")
    assert "wait=0.000s" in lines[1]
    assert "content-type" not in err.lower()


def test_verbose_prints_request_policies_and_response_headers(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.route("/h", Healthy(headers={"X-Served-By": "flaky"}))
    code, _, err = run(
        capsysbinary,
        "get",
        server.url("/h"),
        "-v",
        "-H",
        "X-Trace: abc",
        "--header=Accept:  text/plain",
        "-H",
        "X-Name: café",
    )
    assert code == 0
    assert f"> GET {server.url('/h')}" in err
    assert "> X-Trace: abc" in err
    assert "* retry 3x; breaker: 50% of >= 20 calls, open 30 s; timeout 5 s" in err
    assert "< x-served-by: flaky" in err
    recorded = server.requests[-1]
    assert recorded.header("X-Trace") == "abc"
    assert recorded.header("Accept") == "text/plain"
    # Sent as UTF-8 bytes (the server's parser reads them as latin-1).
    assert recorded.header("X-Name") == "café".encode().decode("latin-1")


def test_any_http_response_exits_0(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.route("/gone", Healthy(404, body=b"nope\n"))
    server.route("/down", Fail(500))
    code, out, err = run(capsysbinary, "get", server.url("/gone"))
    assert (code, out) == (0, "nope\n")
    assert err.startswith("HTTP/1.1 404 Not Found")
    code, _, err = run(capsysbinary, "get", server.url("/down"), "--retries", "0")
    assert code == 0
    assert err.startswith("HTTP/1.1 500 Internal Server Error")
    assert server.count("/down") == 1


def test_connection_refused_is_one_line_without_the_query(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    port = free_port()
    code, out, err = run(
        capsysbinary,
        "get",
        f"http://user:hunter2@127.0.0.1:{port}/x?token=s3cret",
        "--retries",
        "0",
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"klayengo get: error: cannot connect to 127.0.0.1:{port}: ")
    assert err.endswith(" (after 1 attempt)\n")
    assert "Traceback" not in err
    assert "s3cret" not in err and "hunter2" not in err


def test_connection_refused_says_how_many_attempts_were_made(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    port = free_port()
    code, out, err = run(
        capsysbinary,
        "get",
        f"http://user:hunter2@127.0.0.1:{port}/x?token=s3cret",
        "--retries",
        "3",
    )
    assert (code, out) == (1, "")
    assert err.startswith(f"klayengo get: error: cannot connect to 127.0.0.1:{port}: ")
    assert err.endswith(" (after 4 attempts)\n")
    assert err.count("\n") == 1
    assert "s3cret" not in err and "hunter2" not in err


def test_timeout_is_one_line(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    from klayengo.testing import Slow

    server.route("/slow", Slow(2.0))
    code, _, err = run(
        capsysbinary, "get", server.url("/slow"), "--timeout", "0.2", "--retries", "0"
    )
    assert code == 1
    assert err == (
        f"klayengo get: error: timed out talking to {server.host_key}: ReadTimeout "
        "(after 1 attempt)\n"
    )


def test_retries_are_reported(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.route("/flaky", FailTimes(2, then=Healthy(body=b"finally\n")))
    code, out, err = run(capsysbinary, "get", server.url("/flaky"), "--retries", "3")
    assert (code, out) == (0, "finally\n")
    assert "klayengo: attempts=3 " in err
    assert server.count("/flaky") == 3


def test_open_breaker_fails_fast_with_one_line(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    server.route("/down", Fail(503))
    code, out, err = run(
        capsysbinary, "get", server.url("/down"), "--retries", "4", "--breaker-failures", "2"
    )
    assert code == 1
    assert out == ""
    assert err.startswith(f"klayengo get: error: circuit open for {server.host_key}: not sent")
    # The two attempts that went out, not the third the open breaker refused.
    assert err.endswith(" (after 2 attempts)\n")
    assert err.count("\n") == 1
    assert server.count("/down") == 2  # the third attempt never left the client


def test_rate_limited_with_max_wait_0_is_one_line(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # The first attempt takes the only token; its retry would wait ~60 s for the next.
    server.route("/busy", FailTimes(1))
    code, out, err = run(
        capsysbinary, "get", server.url("/busy"), "--rate", "1/60s", "--max-wait", "0"
    )
    assert code == 1
    assert out == ""
    assert err.startswith(f"klayengo get: error: rate limited for {server.host_key}: not sent")
    assert err.endswith(" (after 1 attempt)\n")
    assert err.count("\n") == 1
    assert server.count("/busy") == 1


def test_cache_result_is_reported(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    from klayengo.testing import Cacheable

    server.route("/c", Cacheable(max_age=60))
    code, _, err = run(capsysbinary, "get", server.url("/c"), "--cache-ttl", "30", "-v")
    assert code == 0
    assert "klayengo: attempts=1 cache=miss breaker=closed" in err
    assert "* retry 3x; breaker: 50% of >= 20 calls, open 30 s; cache ttl 30 s; timeout" in err


def test_the_time_shown_is_the_request_s_not_the_client_s_construction(
    server: FlakyServer, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that only the client's construction moves (by 5 s): the status line must
    # not count it. The request itself does not move this clock, so it shows 0 ms.
    import klayengo._get
    from klayengo._cli import choose_flavour
    from klayengo._flavour import bind

    clock = {"now": 100.0}
    api = bind(choose_flavour())

    class SlowToBuild(api.ResilientClient):  # type: ignore[misc, name-defined]
        def __init__(self, **kwargs: object) -> None:
            clock["now"] += 5.0
            super().__init__(**kwargs)

    monkeypatch.setattr(api, "ResilientClient", SlowToBuild)
    monkeypatch.setattr(
        klayengo._get, "time", types.SimpleNamespace(monotonic=lambda: clock["now"])
    )
    server.route("/t", Healthy())
    code, _, err = run(capsysbinary, "get", server.url("/t"))
    assert code == 0
    assert clock["now"] == 105.0  # the client was built through the patched class
    assert err.splitlines()[0] == "HTTP/1.1 200 OK  (0 ms)"
