"""Running the demo: the upstream, the one client, the workers, the display.

The client's ``LayerContext.events`` is wrapped in ``MultiEvents([metrics_sink,
recorder])`` right after construction (the layers read it at call time), so the
demo's :class:`~.stats.Recorder` sees exactly the events the metrics do.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Final, Protocol

from .._core.errors import error_names
from .._core.events import MultiEvents
from .._core.labels import error_type
from .._flavour import bind
from .._server import serve_metrics
from ..testing import LOOPBACK, Upstream
from .live import LiveDisplay, load_rich
from .options import CLIENT_NAME, DemoOptions
from .plain import PlainDisplay
from .scenario import CLIENT_RETRY, REQUEST_TIMEOUT, Origin, scenario
from .stats import DemoSummary, HostStats, Recorder
from .tables import BreakerStates, intro_head, intro_rows

if TYPE_CHECKING:
    from .._bound import ResilientClient

__all__ = ["run_demo"]

#: Pause between two requests of one worker (uniform in this range), seconds. Keeps the
#: load light: the demo must run happily on a laptop next to other work.
THINK_TIME: Final = (0.02, 0.08)
#: Seconds to wait for the workers' last requests after the end.
JOIN_TIMEOUT: Final = 10.0


class _Display(Protocol):
    def intro(self, head: str, rows: list[list[str]], metrics_url: str) -> None: ...

    def run(
        self,
        client: BreakerStates,
        scenario: list[Origin],
        recorder: Recorder,
        stop: threading.Event,
        started: float,
        end: float,
    ) -> None: ...

    def summary(self, summary: DemoSummary) -> None: ...


def run_demo(
    options: DemoOptions,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    on_finish: Callable[[DemoSummary], None] | None = None,
) -> DemoSummary:
    """Run the demo and return its numbers.

    Args:
        options: the settings.
        out: where the display and the summary go (default ``sys.stdout``; with
            ``options.json``, ``sys.stderr``, and the JSON goes to ``sys.stdout``).
        err: where warnings go (default ``sys.stderr``).
        on_finish: called with the summary after the traffic stops and before the
            ``/metrics`` endpoint closes (the tests scrape it there).

    Raises:
        OSError: the metrics port cannot be bound.
        KeyboardInterrupt: after printing the summary, when interrupted.
    """
    json_out = sys.stdout
    if out is None:
        out = sys.stderr if options.json else sys.stdout
    if err is None:
        err = sys.stderr
    display = _display(options, out, err)
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    origins = scenario(options.duration, seed)
    from prometheus_client import CollectorRegistry

    # A registry of its own: the demo's series never mix with the process's default one.
    registry = CollectorRegistry()
    with Upstream({o.name: o.behaviour for o in origins}) as upstream:
        keys = {o.name: upstream[o.name].host_key for o in origins}
        endpoint = serve_metrics(options.metrics_port, LOOPBACK, registry)
        try:
            with bind(options.flavour).ResilientClient(
                name=CLIENT_NAME,
                timeout=REQUEST_TIMEOUT,
                retry=CLIENT_RETRY,
                hosts={keys[o.name]: o.policy for o in origins if o.policy is not None},
                metrics=registry,
            ) as client:
                summary = _drive(client, origins, upstream, options, seed, endpoint.url, display)
            display.summary(summary)
            if summary.unexpected:
                print(
                    f"klayengo demo: {len(summary.unexpected)} unexpected errors (a bug); "
                    f"the first:\n{summary.unexpected[0]}",
                    file=err,
                )
            if options.json:
                json_out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
                json_out.flush()
            if on_finish is not None:
                on_finish(summary)
            if summary.interrupted:
                raise KeyboardInterrupt
            return summary
        finally:
            endpoint.stop()


def _display(options: DemoOptions, out: IO[str], err: IO[str]) -> _Display:
    """The live table when asked for (or, by default, on a terminal with rich
    installed), else plain lines."""
    rich = load_rich()
    live = options.live
    if live is None:
        live = rich is not None and _isatty(out) and not options.json
    if live and rich is None:
        print("klayengo demo: rich is not installed (pip install 'klayengo[cli]')", file=err)
        live = False
    if live:
        return LiveDisplay(rich, rich.console.Console(file=out))
    return PlainDisplay(out, options.duration)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _drive(
    client: ResilientClient,
    origins: list[Origin],
    upstream: Upstream,
    options: DemoOptions,
    seed: int,
    metrics_url: str,
    display: _Display,
) -> DemoSummary:
    hosts = {
        upstream[o.name].host_key: HostStats(name=o.name, host=upstream[o.name].host_key)
        for o in origins
    }
    started = time.monotonic()
    recorder = Recorder(hosts, started)
    # The layers read context.events at call time: from now on both the metrics sink and
    # the demo's recorder see every event.
    context = client._klayengo
    context.events = MultiEvents([context.events, recorder])
    display.intro(
        intro_head(options, len(origins), seed), intro_rows(origins, upstream), metrics_url
    )
    stop = threading.Event()
    end = started + options.duration
    workers = [
        threading.Thread(
            target=_worker,
            args=(client, origins, upstream, recorder, stop, end, random.Random(seed + n + 1)),
            name=f"klayengo-demo-{n}",
            daemon=True,
        )
        for n in range(options.concurrency)
    ]
    for worker in workers:
        worker.start()
    interrupted = False
    try:
        display.run(client, origins, recorder, stop, started, end)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        for worker in workers:
            worker.join(JOIN_TIMEOUT)
    for stats in hosts.values():
        stats.final_state = client.breaker_state(stats.host)
    return DemoSummary(
        hosts=hosts,
        elapsed=time.monotonic() - started,
        seed=seed,
        metrics_url=metrics_url,
        unexpected=list(recorder.unexpected),
        interrupted=interrupted,
    )


def _worker(
    client: ResilientClient,
    origins: list[Origin],
    upstream: Upstream,
    recorder: Recorder,
    stop: threading.Event,
    end: float,
    rng: random.Random,
) -> None:
    weights = [o.weight for o in origins]
    while not stop.is_set() and time.monotonic() < end:
        origin = rng.choices(origins, weights)[0]
        server = upstream[origin.name]
        url = server.url(rng.choice(origin.paths))
        started = time.monotonic()
        try:
            response = client.get(url)
        except Exception as exc:
            if "HTTPError" in error_names(type(exc)):  # httpx's or httpx2's
                recorder.error(server.host_key, error_type(exc), time.monotonic() - started)
            else:
                recorder.bug(server.host_key, traceback.format_exc(), time.monotonic() - started)
        else:
            recorder.response(server.host_key, response, time.monotonic() - started)
        stop.wait(rng.uniform(*THINK_TIME))
