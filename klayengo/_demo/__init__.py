"""``klayengo demo``: one client, five misbehaving origins on loopback, live.

The demo starts a :class:`klayengo.testing.Upstream` of five origins (healthy, slow,
flaky, rate-limiting, cacheable), serves the client's metrics on a loopback
``/metrics`` endpoint, and drives concurrent traffic through ONE
:class:`klayengo.ResilientClient` configured per host. It shows, live, what each
layer does, then a table headed ``Summary``.

Modules, by concern:

- :mod:`.options`: the run's settings and their defaults (what the CLI reads);
- :mod:`.scenario`: the five origins, their upstream behaviour and client policy;
- :mod:`.stats`: the numbers, and the event sink and call-site counters filling them;
- :mod:`.tables`: what the tables show, shared by both displays;
- :mod:`.plain` and :mod:`.live`: the displays, plain lines and rich's live table;
- :mod:`.runner`: :func:`run_demo`, which puts them together.
"""

from __future__ import annotations

from .options import DEFAULT_CONCURRENCY, DEFAULT_DURATION, DemoOptions
from .runner import run_demo
from .stats import DemoSummary, HostStats

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DURATION",
    "DemoOptions",
    "DemoSummary",
    "HostStats",
    "run_demo",
]
