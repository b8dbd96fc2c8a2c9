"""The ``klayengo`` command-line tool (console script and ``python -m klayengo``).

This module parses the command line and dispatches; the commands live elsewhere:

- ``klayengo demo``: a live, offline demo of every layer on loopback (``klayengo._demo``);
- ``klayengo get URL``: one request through the stack, with what each layer did
  (``klayengo._get``).

Each command runs on the flavour ``--flavour`` names (``auto``: httpx if installed,
else httpx2), bound once the command line is parsed; ``get``'s URL is then parsed by
that library, so ``--flavour httpx2`` never imports httpx.

Exit codes: 0 success (for ``get``: any HTTP response, as curl does); 1 a transport or
resilience error (one line on stderr, no traceback); 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from . import __version__
from ._exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._flavour import FLAVOURS, bind, installed
from ._policies import RetryPolicy

if TYPE_CHECKING:
    from ._flavour import httpx

__all__ = ["build_parser", "main"]

MAX_PORT: Final = 65535
#: More demo workers than this would only queue on the connection pool.
MAX_CONCURRENCY: Final = 64
#: ``klayengo get``'s default timeout, seconds (httpx's own default).
DEFAULT_TIMEOUT: Final = 5.0

_RATE = re.compile(
    r"^\s*(?P<rate>\d+(?:\.\d+)?)\s*"
    r"(?:/\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>s|sec|second|m|min|minute|h|hour)?)?\s*$",
    re.IGNORECASE,
)
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

_DESCRIPTION = """\
klayengo: a resilient drop-in httpx client (per-host circuit breakers, retries with a
budget, rate limiting, an RFC 9111 cache, Prometheus metrics).

Start with `klayengo demo`: it runs offline, on loopback, and shows every layer at work.
"""

_EPILOG = """\
exit codes: 0 success; 1 transport or resilience error; 2 usage error; 130 interrupted.
Run `klayengo COMMAND --help` for the options of a command.
"""

_DEMO_DESCRIPTION = """\
Start five misbehaving origins on 127.0.0.1 (random free ports) and drive concurrent
traffic through ONE ResilientClient configured per host:

  healthy    always 200                                  the client's defaults
  slow       50-300 ms, some replies slower than the     1 s timeout, 1 retry, a deadline
             client's timeout
  flaky      intermittent 503s -> down -> recovered      a strict circuit breaker
  limited    429 + Retry-After over 5 requests/s         a client rate limit, max_wait 0.5 s
  cacheable  ETag/Last-Modified + max-age; goes down     a cache with stale-if-error, and
             for a while                                 the strict breaker

It shows live, per origin: the upstream's phase, the breaker state and its
transitions, responses and errors, retries, rate-limit waits and refusals, cache
hits/revalidations/stale serves/misses. Meanwhile the client's Prometheus metrics are
served at the /metrics URL printed at start. The run ends by itself after --duration
seconds with a table headed "Summary" of what each layer did, and exits 0.

The live view uses `rich` when the output is a terminal (pip install "klayengo[cli]");
without rich, with --no-live, or when the output is not a terminal (CI logs, pipes) it
prints plain periodic lines with no control codes. Ctrl-C stops early (exit 130) after
printing the summary. Nothing leaves 127.0.0.1.
"""

_GET_DESCRIPTION = """\
Perform one GET request through the klayengo stack and print the response.

The status line, the response headers (with -v) and what each layer did (attempts,
cache result, breaker state, rate-limit wait) go to stderr; the body goes to stdout,
so `klayengo get URL > file` saves just the body. Exit 0 for any HTTP response,
including 4xx/5xx (as curl does); 1 for a transport or resilience error (connection
refused, timeout, open circuit breaker, rate limited), reported as one line on
stderr; 2 for a usage error.

examples:
  klayengo get https://example.com/ -v
  klayengo get http://127.0.0.1:8000/api --retries 5 --timeout 2 -H 'Accept: application/json'
  klayengo get http://127.0.0.1:8000/api --rate 1/10s --max-wait 0
"""


# -- argument types ------------------------------------------------------------------------
def parse_rate(text: str) -> tuple[float, float]:
    """``"10/s"`` -> ``(10.0, 1.0)``: requests and the period in seconds.

    Accepts ``N``, ``N/s``, ``N/m`` (or ``min``), ``N/h``, and ``N/<k><unit>`` such as
    ``5/10s`` (5 requests per 10 seconds).
    """
    match = _RATE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: expected N/s, N/m, N/h or N/<k>s (e.g. 10/s, 5/10s)"
        )
    rate = float(match["rate"])
    count = float(match["count"]) if match["count"] else 1.0
    unit = (match["unit"] or "s")[0].lower()
    per = count * _UNITS[unit]
    if rate <= 0 or per <= 0:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: must be > 0")
    return rate, per


def _number(kind: str, *, minimum: float, strict: bool) -> type[float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            rule = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r} (must be {rule})")
        return value

    convert.__name__ = kind
    return convert  # type: ignore[return-value]


def _count(kind: str, *, minimum: int, maximum: int | None = None) -> type[int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r} (must be >= {minimum})")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r} (must be <= {maximum})")
        return value

    convert.__name__ = kind
    return convert  # type: ignore[return-value]


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")``."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.match(name):
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected 'Name: value'")
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: control characters")
    return name, value


def choose_flavour(asked: str = "auto") -> str:
    """The flavour to run on: ``asked``, or for ``"auto"`` the first one installed
    (httpx, then httpx2).

    Raises:
        ModuleNotFoundError: ``"auto"``, and neither library is installed.
    """
    if asked != "auto":
        return asked
    for flavour in FLAVOURS:
        if installed(flavour):
            return flavour
    raise ModuleNotFoundError(
        "neither httpx nor httpx2 is installed: pip install 'klayengo[httpx]'",
        name=FLAVOURS[0],
    )


def parse_url(text: str, library: Any) -> httpx.URL:
    """An absolute http(s) URL, parsed by ``library`` (the ``httpx`` or ``httpx2``
    module)."""
    try:
        url: httpx.URL = library.URL(text)
    except (library.InvalidURL, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"invalid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(
            "invalid URL: expected an absolute http:// or https:// URL"
        )
    return url


# -- the parser ----------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' layout; shows a default unless the help already explains
    it or there is none to show (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``klayengo`` argument parser, with the ``demo`` and ``get`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="klayengo",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"klayengo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    from ._demo.options import DEFAULT_CONCURRENCY, DEFAULT_DURATION

    demo = commands.add_parser(
        "demo",
        help="a live, offline demo of every layer against flaky loopback origins",
        description=_DEMO_DESCRIPTION,
        formatter_class=_Formatter,
    )
    demo.set_defaults(command_parser=demo)
    demo.add_argument(
        "--duration",
        type=_number("duration", minimum=1.0, strict=False),
        default=DEFAULT_DURATION,
        metavar="S",
        help="seconds of traffic; the scenario's phases scale with it (>= 1)",
    )
    demo.add_argument(
        "--metrics-port",
        type=_count("port", minimum=0, maximum=MAX_PORT),
        default=0,
        metavar="P",
        help="serve /metrics on 127.0.0.1:P (default: 0, a free port)",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="plain periodic lines instead of the live table (automatic when the output "
        "is not a terminal or rich is missing)",
    )
    demo.add_argument(
        "--concurrency",
        type=_count("concurrency", minimum=1, maximum=MAX_CONCURRENCY),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"worker threads sharing the one client (1 to {MAX_CONCURRENCY})",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="seed for the traffic mix and the upstream's random failures (default: random, "
        "printed at start)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="also print the summary numbers as JSON on stdout; the display then goes to "
        "stderr, without the live table",
    )
    demo.add_argument(
        "--flavour",
        choices=("auto", *FLAVOURS),
        default="auto",
        help="the HTTP library to run on (auto: httpx if installed, else httpx2)",
    )

    get = commands.add_parser(
        "get",
        help="one request through the stack, with what each layer did",
        description=_GET_DESCRIPTION,
        formatter_class=_Formatter,
    )
    get.set_defaults(command_parser=get)
    # Parsed by the flavour's library once the flavour is known (see _prepare).
    get.add_argument("url", metavar="URL", help="an absolute http(s) URL")
    get.add_argument(
        "--retries",
        type=_count("retries", minimum=0),
        default=RetryPolicy().max_retries,
        metavar="N",
        help="retries after the first attempt (0: no retries)",
    )
    get.add_argument(
        "--rate",
        type=parse_rate,
        default=None,
        metavar="RATE",
        help="rate-limit the attempts: N/s, N/m, N/h or N/<k>s, e.g. 10/s or 1/10s "
        "(default: no limit)",
    )
    get.add_argument(
        "--max-wait",
        type=_number("max-wait", minimum=0.0, strict=False),
        default=None,
        metavar="S",
        help="with --rate: fail with 'rate limited' rather than wait longer than S seconds "
        "for a turn (0: fail fast; default: wait as long as needed)",
    )
    get.add_argument(
        "--cache-ttl",
        type=_number("cache-ttl", minimum=0.0, strict=False),
        default=None,
        metavar="S",
        help="enable the cache, with S seconds of freshness when the server states none "
        "(default: no cache)",
    )
    get.add_argument(
        "--timeout",
        type=_number("timeout", minimum=0.0, strict=True),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="httpx timeout of each attempt, seconds",
    )
    get.add_argument(
        "--deadline",
        type=_number("deadline", minimum=0.0, strict=True),
        default=None,
        metavar="S",
        help="bound on the whole call, attempts and retry sleeps included (default: none)",
    )
    get.add_argument(
        "--breaker-failures",
        type=_count("breaker-failures", minimum=1),
        default=None,
        metavar="N",
        help="trip the circuit breaker after N consecutive failed attempts; later attempts "
        "then fail fast with 'circuit open' (default: the breaker's failure-rate rule only)",
    )
    get.add_argument(
        "-H",
        "--header",
        dest="headers",
        type=parse_header,
        action="append",
        default=[],
        metavar="'K: V'",
        help="add a request header (repeatable)",
    )
    get.add_argument(
        "--flavour",
        choices=("auto", *FLAVOURS),
        default="auto",
        help="the HTTP library to run on (auto: httpx if installed, else httpx2)",
    )
    get.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the request line, the response headers and the policies in force",
    )
    return parser


# -- dispatch ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (``klayengo`` exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        _prepare(args)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ModuleNotFoundError as exc:
        if exc.name not in FLAVOURS:
            raise
        # The flavour's library is not installed: one line, as for other failures.
        print(f"klayengo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if args.command == "demo":
            return _demo(args)
        from ._get import run_get

        return run_get(args)
    except BrokenPipeError:
        # The reader went away (`klayengo demo | head`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE


def _prepare(args: argparse.Namespace) -> None:
    """What the parser cannot check alone: choose and bind the flavour, then parse
    ``get``'s URL with that flavour's library.

    Raises:
        SystemExit: a usage error, printed.
        ModuleNotFoundError: the flavour's library is not installed.
    """
    command: argparse.ArgumentParser = args.command_parser
    args.flavour = choose_flavour(args.flavour)
    api = bind(args.flavour)
    if args.command == "get":
        try:
            args.url = parse_url(args.url, api.httpx)
        except argparse.ArgumentTypeError as exc:
            command.error(f"argument URL: {exc}")
        if args.max_wait is not None and args.rate is None:
            command.error("--max-wait needs --rate")


def _demo(args: argparse.Namespace) -> int:
    from ._demo import DemoOptions, run_demo

    options = DemoOptions(
        duration=args.duration,
        metrics_port=args.metrics_port,
        live=False if args.no_live or args.json else None,
        concurrency=args.concurrency,
        seed=args.seed,
        json=args.json,
        flavour=args.flavour,
    )
    try:
        summary = run_demo(options)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except OSError as exc:  # the metrics port is taken, or the upstream cannot bind
        print(f"klayengo demo: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if summary.unexpected else EXIT_OK
