"""The plain display: periodic lines with no control codes, for CI logs and pipes
(and wherever rich is not installed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Final

from .tables import (
    COUNT_COLUMNS,
    INTRO_HEADERS,
    SUMMARY_HEADERS,
    BreakerStates,
    breaker_states,
    layer_lines,
    summary_rows,
)

if TYPE_CHECKING:
    from .scenario import Origin
    from .stats import DemoSummary, Recorder

__all__ = ["REFRESH", "PlainDisplay", "plain_table"]

#: How often the display looks for news (breaker transitions to print), seconds.
REFRESH: Final = 0.25
#: A status block is printed every this many seconds (at least), ...
MIN_INTERVAL: Final = 1.0
#: ... or ten times per run, whichever is rarer.
TICKS: Final = 10


def plain_table(title: str, headers: Sequence[str], rows: list[list[str]]) -> str:
    """``rows`` under ``headers`` in space-aligned columns, headed by ``title``."""
    columns = [h.replace("\n", " ") for h in headers]
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(columns)]
    lines = [title]
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


class PlainDisplay:
    """Periodic plain lines, no control codes: for CI logs and pipes."""

    def __init__(self, out: IO[str], duration: float) -> None:
        self.out = out
        self.interval = max(MIN_INTERVAL, duration / TICKS)

    def intro(self, head: str, rows: list[list[str]], metrics_url: str) -> None:
        """The origins, their upstream's behaviour and the client's policy for each."""
        self.out.write(plain_table(head, INTRO_HEADERS, rows) + "\n")
        self.out.write(f"metrics: {metrics_url}\n")
        self.out.flush()

    def run(
        self,
        client: BreakerStates,
        scenario: list[Origin],
        recorder: Recorder,
        stop: threading.Event,
        started: float,
        end: float,
    ) -> None:
        """Print breaker transitions as they happen and a status block every
        ``interval`` seconds, until ``end``."""
        next_tick = started + self.interval
        while True:
            now = time.monotonic()
            for line in recorder.take_lines():
                self.out.write(line + "\n")
            if now >= next_tick or now >= end:
                self.tick(client, scenario, recorder, now, now - started)
                next_tick += self.interval
            self.out.flush()
            if now >= end:
                return
            stop.wait(min(REFRESH, end - now))

    def tick(
        self,
        client: BreakerStates,
        scenario: list[Origin],
        recorder: Recorder,
        now: float,
        elapsed: float,
    ) -> None:
        """One status line per origin."""
        states = breaker_states(client, recorder)
        with recorder.lock:
            for origin, stats, state in zip(
                scenario, recorder.hosts.values(), states, strict=False
            ):
                cells = " ".join(
                    f"{header.replace(chr(10), ' ')} {cell(stats)}"
                    for header, cell in COUNT_COLUMNS
                )
                self.out.write(
                    f"{elapsed:5.1f}s  {origin.name:<9} phase {origin.phase(now):<12} "
                    f"breaker {state:<9} {cells}\n"
                )

    def summary(self, summary: DemoSummary) -> None:
        """The table headed ``Summary`` and one line per layer."""
        footer = f"{summary.elapsed:.1f} s; the metrics were served at {summary.metrics_url}"
        self.out.write("\n" + plain_table("Summary", SUMMARY_HEADERS, summary_rows(summary)))
        self.out.write("\n" + "\n".join(layer_lines(summary)) + "\n" + footer + "\n")
        self.out.flush()
