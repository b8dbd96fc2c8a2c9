"""The settings of one ``klayengo demo`` run (the command-line flags) and their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CLIENT_NAME", "DEFAULT_CONCURRENCY", "DEFAULT_DURATION", "DemoOptions"]

#: Default length of the demo, seconds; the scenario's timeline is scaled to it.
DEFAULT_DURATION: Final = 20.0
#: Default number of worker threads sharing the one client.
DEFAULT_CONCURRENCY: Final = 8
#: The client's name, i.e. the ``client`` label of its metrics.
CLIENT_NAME: Final = "demo"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Settings of one demo run (the command-line flags).

    Attributes:
        duration: seconds of traffic.
        metrics_port: the ``/metrics`` port on 127.0.0.1; 0 picks a free one.
        live: ``True`` forces the rich live table, ``False`` plain lines, ``None`` picks
            the live table when the output is a terminal and rich is installed.
        concurrency: worker threads sharing the client.
        seed: seeds the traffic mix and the upstream's random failures (``None``: random).
        json: also print the summary as JSON on stdout (the rest goes to stderr).
        flavour: the HTTP library the client runs on, ``"httpx"`` or ``"httpx2"``.
    """

    duration: float = DEFAULT_DURATION
    metrics_port: int = 0
    live: bool | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int | None = None
    json: bool = False
    flavour: str = "httpx"
