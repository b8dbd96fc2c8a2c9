"""``klayengo get URL``: one GET request through the stack, with what each layer did.

The status line, the response headers (with ``-v``) and the layers' report go to
stderr; the body goes to stdout. The request is timed alone: building the client
(which loads TLS certificates, among others) is not part of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, TYPE_CHECKING

from ._core.events import Events, MultiEvents
from ._describe import (
    describe_breaker,
    describe_cache,
    describe_error,
    describe_rate_limit,
    describe_retry,
    layer_report,
)
from ._exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._flavour import bind
from ._policies import CachePolicy, CircuitBreakerPolicy, RateLimitPolicy, RetryPolicy

if TYPE_CHECKING:
    from ._flavour import httpx

__all__ = ["run_get"]


class _Attempts(Events):
    """Counts the attempts of the one call ``klayengo get`` makes, from the layers'
    events: the retry layer reports its attempts on a response only, and the call may
    end in an exception. Events name hosts by host key: never a URL, a query or
    credentials."""

    __slots__ = ("refused", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.refused = 0

    def retry(self, host: str, reason: str, attempt: int, delay: float) -> None:
        self.retries += 1

    def breaker_rejected(self, host: str) -> None:
        self.refused += 1

    def rate_limited(self, host: str) -> None:
        self.refused += 1

    @property
    def sent(self) -> int:
        """The attempts that went out: the first and one per retry, less those the
        breaker or the rate limiter refused before sending."""
        return 1 + self.retries - self.refused


def run_get(args: argparse.Namespace) -> int:
    """Run ``klayengo get`` with the parsed ``args`` (``args.flavour`` chosen and
    ``args.url`` parsed by that flavour's library); returns the exit code."""
    api = bind(args.flavour)
    url: httpx.URL = args.url
    err = sys.stderr
    try:
        retry = RetryPolicy(max_retries=args.retries, deadline=args.deadline)
        breaker = CircuitBreakerPolicy(consecutive_failures=args.breaker_failures)
        rate_limit = None
        if args.rate is not None:
            rate, per = args.rate
            rate_limit = RateLimitPolicy(rate=rate, per=per, max_wait=args.max_wait)
        cache = CachePolicy(ttl=args.cache_ttl) if args.cache_ttl is not None else None
    except (ValueError, TypeError) as exc:
        # A value the parser let through but a policy refuses: still a usage error.
        print(f"klayengo get: error: {exc}", file=err)
        return EXIT_USAGE
    if args.verbose:
        print(f"> GET {url}", file=err)
        for name, value in args.headers:
            print(f"> {name}: {value}", file=err)
        layers = [describe_retry(retry), describe_breaker(breaker)]
        if rate_limit is not None:
            layers.append(describe_rate_limit(rate_limit))
        if cache is not None:
            layers.append(describe_cache(cache))
        print(f"* {'; '.join(layers)}; timeout {args.timeout:g} s", file=err)
    attempts = _Attempts()
    try:
        with api.ResilientClient(
            retry=retry,
            breaker=breaker,
            rate_limit=rate_limit,
            cache=cache,
            metrics=False,
            timeout=args.timeout,
            # Bytes, as curl sends them: httpx would refuse a str that is not ASCII.
            headers=[(name, value.encode()) for name, value in args.headers],
        ) as client:
            # The layers read context.events at call time (as the demo's recorder does).
            context = client._klayengo
            context.events = MultiEvents([context.events, attempts])
            started = time.monotonic()
            response = client.get(url)
            elapsed = time.monotonic() - started
    except KeyboardInterrupt:
        print("klayengo get: interrupted", file=err)
        return EXIT_INTERRUPTED
    except api.httpx.HTTPError as exc:
        print(f"klayengo get: error: {describe_error(exc, url, attempts.sent)}", file=err)
        return EXIT_FAILURE
    print(
        f"{response.http_version} {response.status_code} {response.reason_phrase}"
        f"  ({elapsed * 1000:.0f} ms)",
        file=err,
    )
    if args.verbose:
        for name, value in response.headers.multi_items():
            print(f"< {name}: {value}", file=err)
    print(f"klayengo: {layer_report(response)}", file=err)
    err.flush()
    _write_body(sys.stdout, response.content)
    return EXIT_OK


def _write_body(out: IO[str], body: bytes) -> None:
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(body)
        buffer.flush()
    else:
        out.write(body.decode("utf-8", errors="replace"))
        out.flush()
