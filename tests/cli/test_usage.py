"""Usage errors (exit 2), --help, --version and `python -m klayengo`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from klayengo._cli import main, parse_header, parse_rate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["get"],
        ["get", "not a url"],
        ["get", "ftp://127.0.0.1/x"],
        ["get", "/relative"],
        ["get", "http://127.0.0.1:1/", "--retries", "-1"],
        ["get", "http://127.0.0.1:1/", "--retries", "many"],
        ["get", "http://127.0.0.1:1/", "--rate", "fast"],
        ["get", "http://127.0.0.1:1/", "--rate", "0/s"],
        ["get", "http://127.0.0.1:1/", "--timeout", "0"],
        ["get", "http://127.0.0.1:1/", "--timeout", "nan"],
        ["get", "http://127.0.0.1:1/", "--cache-ttl", "-1"],
        ["get", "http://127.0.0.1:1/", "-H", "no colon"],
        ["get", "http://127.0.0.1:1/", "-H", ": empty name"],
        ["get", "http://127.0.0.1:1/", "--max-wait", "1"],
        ["get", "http://127.0.0.1:1/", "--breaker-failures", "0"],
        ["get", "http://127.0.0.1:1/", "--unknown"],
        ["demo", "--duration", "0"],
        ["demo", "--concurrency", "0"],
        ["demo", "--concurrency", "65"],
        ["demo", "--metrics-port", "-5"],
        ["demo", "--metrics-port", "65536"],
        ["demo", "--seed", "x"],
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: klayengo" in captured.err
    assert "Traceback" not in captured.err


def test_help_documents_every_command_and_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for word in ("demo", "get", "exit codes", "--version"):
        assert word in top
    assert main(["demo", "--help"]) == 0
    demo = capsys.readouterr().out
    for flag in ("--duration", "--metrics-port", "--no-live", "--concurrency", "--seed", "--json"):
        assert flag in demo
    assert "Summary" in demo and "rich" in demo
    assert main(["get", "--help"]) == 0
    get = capsys.readouterr().out
    for flag in (
        "--retries",
        "--rate",
        "--max-wait",
        "--cache-ttl",
        "--timeout",
        "--deadline",
        "--breaker-failures",
        "--header",
        "--verbose",
    ):
        assert flag in get
    assert "exit 0 for any http response" in " ".join(get.lower().split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import klayengo

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"klayengo {klayengo.__version__}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/s", (10.0, 1.0)),
        ("10", (10.0, 1.0)),
        ("600/m", (600.0, 60.0)),
        ("600/min", (600.0, 60.0)),
        ("5/10s", (5.0, 10.0)),
        ("2.5/h", (2.5, 3600.0)),
        (" 3 / 2 sec ", (3.0, 2.0)),
    ],
)
def test_parse_rate(text: str, expected: tuple[float, float]) -> None:
    assert parse_rate(text) == expected


def test_parse_header_keeps_the_value_and_refuses_control_characters() -> None:
    import argparse

    assert parse_header("Accept:  a/b ") == ("Accept", "a/b")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    assert parse_header("X-Url: http://a:b@c") == ("X-Url", "http://a:b@c")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_header("X-Bad: a\nb")


def test_python_dash_m_klayengo_and_import_without_rich() -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "klayengo", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "usage: klayengo" in help_run.stdout
    assert "demo" in help_run.stdout and "get" in help_run.stdout
    # rich is optional (the `cli` extra): klayengo, its CLI and its testing helper import
    # without it. (httpx itself imports rich when it happens to be installed.)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['rich'] = None; "
            "import klayengo, klayengo.testing, klayengo._demo, klayengo._cli as c; "
            "c.build_parser()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


def test_a_closed_stdout_pipe_ends_the_demo_quietly() -> None:
    # `klayengo demo | head -3`: the reader leaves early; no traceback, no hang.
    process = subprocess.Popen(
        [sys.executable, "-m", "klayengo", "demo", "--duration", "1", "--concurrency", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in err
    assert "Broken pipe" not in err
