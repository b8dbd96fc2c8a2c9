"""The rich display: a live table refreshed a few times a second (rich is the optional
``cli`` extra: nothing here imports it at import time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .tables import (
    INTRO_HEADERS,
    LIVE_COUNT_COLUMNS,
    LIVE_HEADERS,
    SUMMARY_HEADERS,
    BreakerStates,
    breaker_states,
    counts,
    layer_lines,
    summary_rows,
)

if TYPE_CHECKING:
    from .scenario import Origin
    from .stats import DemoSummary, Recorder

__all__ = ["REFRESH", "LiveDisplay", "load_rich"]

#: How often the live table refreshes, seconds.
REFRESH: Final = 0.25
_STATE_STYLES: Final = {"closed": "green", "open": "bold red", "half_open": "yellow"}
#: The widest breaker state: its column keeps that width, so rows do not shift.
_STATE_WIDTH: Final = max(map(len, _STATE_STYLES))
#: The intro's columns whose text wraps (the others are short and never do).
_INTRO_WRAPPED: Final = frozenset({"upstream behaviour", "client policy"})


def load_rich() -> Any:
    """The rich package, or None when it is not installed (rich is the optional ``cli``
    extra; ``import klayengo`` never imports it)."""
    try:
        import rich.box
        import rich.console
        import rich.live
        import rich.table
        import rich.text
    except ImportError:
        return None
    return rich


def _table(
    rich: Any,
    title: str,
    headers: Sequence[str],
    *,
    text: int,
    wrapped: frozenset[str] = frozenset(),
    min_widths: Mapping[str, int] | None = None,
) -> Any:
    """A table whose first ``text`` columns are text (left-aligned) and the others
    numbers (right-aligned); only the ``wrapped`` columns wrap; a column named in
    ``min_widths`` is at least that wide."""
    table = rich.table.Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=rich.box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),  # the box's blank separator is enough: fits 80 columns
    )
    for index, header in enumerate(headers):
        table.add_column(
            header,
            justify="left" if index < text else "right",
            no_wrap=header not in wrapped,
            min_width=(min_widths or {}).get(header),
        )
    return table


class LiveDisplay:
    """A rich ``Live`` table, refreshed a few times a second.

    Args:
        rich: the rich package (see :func:`load_rich`).
        console: the rich console everything is printed on.
    """

    def __init__(self, rich: Any, console: Any) -> None:
        self.rich = rich
        self.console = console

    def intro(self, head: str, rows: list[list[str]], metrics_url: str) -> None:
        """The origins, their upstream's behaviour and the client's policy for each."""
        table = _table(
            self.rich, head, INTRO_HEADERS, text=len(INTRO_HEADERS), wrapped=_INTRO_WRAPPED
        )
        for row in rows:
            table.add_row(*row)
        self.console.print(table)
        self.console.print(f"metrics: [bold]{metrics_url}[/bold]", highlight=False)

    def render(
        self,
        scenario: list[Origin],
        recorder: Recorder,
        states: Sequence[str],
        now: float,
        started: float,
        end: float,
    ) -> Any:
        """The live table at ``now``, with the breaker ``states`` of the origins, and
        the latest breaker transitions under it."""
        rich = self.rich
        elapsed = min(now, end) - started
        # The phase and breaker columns are as wide as their widest word from the start,
        # so the table does not shift when a phase or a state changes.
        phase_width = max(len(label) for origin in scenario for label in origin.phase_labels)
        table = _table(
            rich,
            f"klayengo demo  {elapsed:4.1f} / {end - started:g} s",
            LIVE_HEADERS,
            text=3,
            min_widths={"phase": phase_width, "breaker": _STATE_WIDTH},
        )
        with recorder.lock:
            for origin, stats, state in zip(
                scenario, recorder.hosts.values(), states, strict=False
            ):
                table.add_row(
                    origin.name,
                    rich.text.Text(origin.phase(now), style="dim"),
                    rich.text.Text(state, style=_STATE_STYLES.get(state, "")),
                    *counts(stats, LIVE_COUNT_COLUMNS),
                )
            recent = list(recorder.recent)
        log = rich.text.Text("\n".join(recent) or "no breaker transitions yet", style="dim")
        return rich.console.Group(table, log)

    def _render_now(
        self,
        client: BreakerStates,
        scenario: list[Origin],
        recorder: Recorder,
        started: float,
        end: float,
    ) -> Any:
        states = breaker_states(client, recorder)
        return self.render(scenario, recorder, states, time.monotonic(), started, end)

    def run(
        self,
        client: BreakerStates,
        scenario: list[Origin],
        recorder: Recorder,
        stop: threading.Event,
        started: float,
        end: float,
    ) -> None:
        """Refresh the live table every :data:`REFRESH` seconds until ``end``."""
        with self.rich.live.Live(
            self._render_now(client, scenario, recorder, started, end),
            console=self.console,
            auto_refresh=False,
        ) as live:
            while True:
                now = time.monotonic()
                recorder.take_lines()  # the live table shows the latest ones itself
                live.update(
                    self._render_now(client, scenario, recorder, started, end), refresh=True
                )
                if now >= end:
                    return
                stop.wait(min(REFRESH, end - now))

    def summary(self, summary: DemoSummary) -> None:
        """The table headed ``Summary`` and one line per layer."""
        console = self.console
        rows = summary_rows(summary)
        table = _table(self.rich, "Summary", SUMMARY_HEADERS, text=1)
        for row in rows[:-1]:
            table.add_row(*row)
        table.add_row(*rows[-1], style="bold")
        console.print(table)
        for line in layer_lines(summary):
            console.print(line, highlight=False)
        footer = f"{summary.elapsed:.1f} s; the metrics were served at {summary.metrics_url}"
        console.print(footer, style="dim", highlight=False)
