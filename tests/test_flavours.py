"""The two surfaces, ``klayengo`` (httpx) and ``klayengo.httpx2``, from one codebase.

Each check runs in a fresh interpreter without the test suite's httpx2 alias, so
what a process imports is exactly what the user's would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Blocks one library as if it were not installed (a user who has only the other).
_WITHOUT = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {missing!r} or name.startswith({missing!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Missing())
"""


def run(code: str, *, without: str | None = None) -> str:
    """Run ``code`` in a new interpreter and return what it printed."""
    prelude = _WITHOUT.format(missing=without) if without else ""
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_klayengo_imports_no_library_until_a_bound_name_is_used() -> None:
    out = run(
        """
        import sys, klayengo
        print("httpx" in sys.modules, "httpx2" in sys.modules)
        klayengo.RetryPolicy(), klayengo.CachePolicy()  # flavour-free names
        print("httpx" in sys.modules)
        client = klayengo.ResilientClient(metrics=False)
        import httpx
        print(isinstance(client, httpx.Client), "httpx2" in sys.modules)
        print(klayengo.ResilientClient.__module__, klayengo.CircuitOpenError.__module__)
        """
    )
    assert out.splitlines() == ["False False", "False", "True False", "klayengo klayengo"]


def test_import_klayengo_httpx2_never_imports_httpx() -> None:
    out = run(
        """
        import sys, httpx2
        import klayengo.httpx2 as k
        with k.ResilientClient(metrics=False, transport=httpx2.MockTransport(
            lambda request: httpx2.Response(200, text="ok"))
        ) as client:
            response = client.get("http://a.example/")
        print(type(response).__module__.split(".")[0], response.extensions["klayengo"]["attempts"])
        print(issubclass(k.ResilientClient, httpx2.Client),
              issubclass(k.AsyncResilientClient, httpx2.AsyncClient),
              issubclass(k.CircuitOpenError, httpx2.TransportError),
              issubclass(k.RetryTransport, httpx2.BaseTransport))
        print(k.ResilientClient.__module__, k.RetryPolicy is __import__("klayengo").RetryPolicy)
        print("httpx" in sys.modules)
        """
    )
    assert out.splitlines() == [
        "httpx2 1",
        "True True True True",
        "klayengo.httpx2 True",
        "False",
    ]


def test_only_httpx2_installed() -> None:
    out = run(
        """
        import klayengo, klayengo.httpx2
        print(klayengo.httpx2.ResilientClient.__name__)
        try:
            klayengo.ResilientClient
        except ModuleNotFoundError as exc:
            print(exc)
        """,
        without="httpx",
    )
    assert out.splitlines() == [
        "ResilientClient",
        "klayengo on httpx needs httpx installed: pip install 'klayengo[httpx]'",
    ]


def test_only_httpx_installed() -> None:
    out = run(
        """
        import klayengo
        print(klayengo.ResilientClient.__name__)
        try:
            import klayengo.httpx2
        except ModuleNotFoundError as exc:
            print(exc.name)
        """,
        without="httpx2",
    )
    assert out.splitlines() == ["ResilientClient", "httpx2"]


def test_both_flavours_in_one_process_keep_their_own_types_and_state() -> None:
    out = run(
        """
        import anyio, httpx, httpx2, klayengo, klayengo.httpx2 as k2

        def handler(library):
            return lambda request: library.Response(503)

        breaker = klayengo.CircuitBreakerPolicy(consecutive_failures=1)
        one = klayengo.ResilientClient(
            metrics=False, retry=None, breaker=breaker,
            transport=httpx.MockTransport(handler(httpx)),
        )
        two = k2.ResilientClient(
            metrics=False, retry=None, breaker=breaker,
            transport=httpx2.MockTransport(handler(httpx2)),
        )
        one.get("http://a.example/")
        print(one.breaker_state("a.example"), two.breaker_state("a.example"))
        try:
            two.get("http://a.example/")
            two.get("http://a.example/")
        except httpx2.HTTPError as exc:  # httpx2's own base class catches klayengo's error
            print(type(exc).__module__, isinstance(exc, httpx.HTTPError))

        async def main():
            async with k2.AsyncResilientClient(
                metrics=False, transport=httpx2.MockTransport(lambda r: httpx2.Response(204))
            ) as client:
                print((await client.get("http://b.example/")).status_code)

        anyio.run(main)
        anyio.run(main, backend="trio")
        """
    )
    assert out.splitlines() == ["open closed", "klayengo.httpx2 False", "204", "204"]


def test_the_bound_source_is_not_importable_on_its_own() -> None:
    out = run(
        """
        try:
            import klayengo._bound
        except ImportError as exc:
            print(exc)
        """
    )
    assert out == "klayengo._bound is not importable as such: import klayengo or klayengo.httpx2"


def test_unknown_flavour_is_refused() -> None:
    from klayengo._flavour import bind

    with pytest.raises(ValueError, match="flavour must be one of httpx, httpx2"):
        bind("requests")


def test_every_surface_exports_the_same_names() -> None:
    out = run(
        """
        import klayengo, klayengo.httpx2
        from klayengo._surface import BOUND_NAMES
        import klayengo._httpx as bound
        print(set(klayengo.httpx2.__all__) - {"__version__"} == set(klayengo.__all__))
        print(sorted(bound.__all__) == sorted(BOUND_NAMES))
        """
    )
    assert out.splitlines() == ["True", "True"]


def test_type_checkers_see_the_httpx2_surface_on_httpx2(tmp_path: Path) -> None:
    """klayengo/httpx2/__init__.pyi: what a user's mypy sees matches the binding
    (stubtest), and is built on httpx2's classes, not httpx's."""
    config = Path(__file__).parents[1] / ".ci" / "mypy-httpx2.toml"
    stubtest = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "klayengo.httpx2", "--mypy-config-file", config],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert stubtest.returncode == 0, stubtest.stdout + stubtest.stderr
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            import httpx, httpx2, openai
            from klayengo.httpx2 import AsyncResilientClient, CircuitOpenError, ResilientClient

            sdk = openai.OpenAI(max_retries=0, http_client=ResilientClient())
            asdk = openai.AsyncOpenAI(http_client=AsyncResilientClient())
            client: httpx2.Client = ResilientClient()
            error: httpx2.TransportError = CircuitOpenError("x", host="h")
            state: str = ResilientClient().breaker_state("api.example")
            wrong: httpx.Client = ResilientClient()
            """
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    # Exactly one error: the deliberate `wrong` line (an httpx2 client is no httpx one).
    lines = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(lines) == 1 and "user.py:10:" in lines[0], checked.stdout
