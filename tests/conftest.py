"""The suite runs on one flavour per process: httpx (default) or, with
``KLAYENGO_FLAVOUR=httpx2``, httpx2.

On httpx2 every ``import httpx`` (the tests', and klayengo's ``import klayengo``
surface) resolves to httpx2 through httpx2's own ``alias_httpx()``, as an application
migrating to httpx2 would do, so the whole suite exercises the code bound to
httpx2. ``tests/test_flavours.py`` checks the ``klayengo.httpx2`` surface itself,
without the alias, in subprocesses.
"""

from __future__ import annotations

import os

FLAVOUR = os.environ.get("KLAYENGO_FLAVOUR", "httpx")
if FLAVOUR == "httpx2":
    import httpx2

    httpx2.alias_httpx()  # before anything imports httpx (hence `-p no:respx` in pyproject)
elif FLAVOUR != "httpx":
    raise RuntimeError(f"KLAYENGO_FLAVOUR must be httpx or httpx2, got {FLAVOUR!r}")

import pytest  # noqa: E402


def pytest_report_header() -> str:
    import httpx

    return f"klayengo flavour: {FLAVOUR} (httpx is {httpx.__name__} {httpx.__version__})"


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every `@pytest.mark.anyio` test runs on asyncio and on trio."""
    return str(request.param)
