""":class:`Upstream`: several origins, one port each, started and closed together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ._behaviours import Behaviour
from ._server import FlakyServer

__all__ = ["Upstream"]


class Upstream:
    """Several :class:`FlakyServer` origins, one port each, started and closed together.

    Usage::

        with Upstream({"healthy": Healthy(), "flaky": Down(2.0)}) as upstream:
            upstream["flaky"].url("/"), upstream.names()

    Args:
        defaults: ``{name: behaviour}``, the per-origin behaviour of each server
            (``None``: only routes added later answer).
    """

    def __init__(self, defaults: Mapping[str, Behaviour | None]) -> None:
        self.defaults = dict(defaults)
        self.servers: dict[str, FlakyServer] = {}

    def start(self) -> Upstream:
        """Start every origin. Returns ``self``."""
        try:
            for name, behaviour in self.defaults.items():
                self.servers[name] = FlakyServer(behaviour, name=name).start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close every origin."""
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.close()

    def __getitem__(self, name: str) -> FlakyServer:
        return self.servers[name]

    def __iter__(self) -> Iterator[FlakyServer]:
        return iter(self.servers.values())

    def names(self) -> list[str]:
        """The origins' names, in order."""
        return list(self.servers)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Upstream:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close)
