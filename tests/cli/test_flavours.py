"""`klayengo get` and `klayengo demo` on either flavour: --flavour httpx2, and auto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import klayengo._cli
import klayengo._demo.runner
import klayengo._get
from klayengo._cli import choose_flavour, main
from klayengo._flavour import bind
from klayengo.testing import FailTimes, FlakyServer, Healthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> FlakyServer:
    with FlakyServer(name="flavours") as running:
        yield running


def spy_binds(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[str]:
    """The flavours ``module`` binds, in order (its ``bind`` still binds them)."""
    bound: list[str] = []

    def spy(flavour: str) -> ModuleType:
        bound.append(flavour)
        return bind(flavour)

    monkeypatch.setattr(module, "bind", spy)
    return bound


def test_get_on_httpx2(
    server: FlakyServer,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = spy_binds(monkeypatch, klayengo._get)
    server.route("/x", FailTimes(1, then=Healthy(body=b"on httpx2\n")))
    code = main(["get", "--flavour", "httpx2", server.url("/x"), "--retries", "2"])
    captured = capsysbinary.readouterr()
    assert code == 0
    assert captured.out == b"on httpx2\n"
    assert b"klayengo: attempts=2 " in captured.err
    assert bound == ["httpx2"]


def test_get_errors_on_httpx2_say_how_many_attempts(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["get", "--flavour", "httpx2", f"http://127.0.0.1:{port}/", "--retries", "1"])
    err = capsysbinary.readouterr().err.decode()
    assert code == 1
    assert err.startswith(f"klayengo get: error: cannot connect to 127.0.0.1:{port}: ")
    assert err.endswith(" (after 2 attempts)\n")


def test_demo_on_httpx2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = spy_binds(monkeypatch, klayengo._demo.runner)
    argv = ["demo", "--flavour", "httpx2", "--duration", "1", "--concurrency", "2", "--seed", "4"]
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert bound == ["httpx2"]
    data = json.loads(captured.out)
    assert data["unexpected_errors"] == 0
    assert sum(h["requests"] for h in data["hosts"].values()) > 0
    assert "\nSummary\n" in captured.err


def test_auto_prefers_httpx_and_falls_back_to_httpx2(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_flavour("httpx2") == "httpx2"
    assert choose_flavour("auto") == "httpx"  # both are installed here
    monkeypatch.setattr(klayengo._cli, "installed", lambda flavour: flavour != "httpx")
    assert choose_flavour("auto") == "httpx2"
    monkeypatch.setattr(klayengo._cli, "installed", lambda flavour: False)
    with pytest.raises(ModuleNotFoundError, match="neither httpx nor httpx2"):
        choose_flavour("auto")


def test_get_auto_runs_on_httpx2_without_httpx(
    server: FlakyServer,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = spy_binds(monkeypatch, klayengo._get)
    monkeypatch.setattr(klayengo._cli, "installed", lambda flavour: flavour != "httpx")
    server.route("/a", Healthy(body=b"auto\n"))
    assert main(["get", server.url("/a")]) == 0
    assert capsysbinary.readouterr().out == b"auto\n"
    assert bound == ["httpx2"]


def test_neither_flavour_installed_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(klayengo._cli, "installed", lambda flavour: False)
    for command in (["get", "http://127.0.0.1:1/"], ["demo", "--duration", "1"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err == (
            f"klayengo {command[0]}: error: neither httpx nor httpx2 is installed: "
            "pip install 'klayengo[httpx]'\n"
        )


def test_get_on_httpx2_never_imports_httpx(server: FlakyServer) -> None:
    # In a fresh interpreter (this one may alias httpx to httpx2): the URL is parsed by
    # the flavour asked for, not by whichever one `auto` would pick.
    server.route("/only", Healthy(body=b"only httpx2\n"))
    code = (
        "import sys\n"
        "from klayengo._cli import main\n"
        f"code = main(['get', '--flavour', 'httpx2', {server.url('/only')!r}])\n"
        "loaded = sorted(m for m in sys.modules if m == 'httpx' or m.startswith('httpx.'))\n"
        "sys.exit(f'httpx was imported: {loaded}' if loaded else code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "only httpx2\n"
    assert run.stderr.startswith("HTTP/1.1 200 OK")
