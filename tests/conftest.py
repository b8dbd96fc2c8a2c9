from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.loopback import LoopbackServer, loopback_server


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every `@pytest.mark.anyio` test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(scope="session")
def server() -> Iterator[LoopbackServer]:
    """A real HTTP/1.1 server on 127.0.0.1 (see tests/loopback.py)."""
    with loopback_server() as running:
        yield running
