"""Tolerant parsers for the HTTP header values the layers act on.

Servers send malformed headers; none of these functions ever raises on a bad value:
they return ``None`` ("absent"), and the caller falls back to its default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = ["fields", "parse_delta_seconds", "parse_http_date", "parse_retry_after"]

#: A header field as httpx keeps it: (raw name, lower-cased name, raw value).
Field = tuple[bytes, bytes, bytes]

# Headers type -> whether it keeps exactly these triples in ``_list`` (httpx and
# httpx2 do), found once per type with a probe.
_KEEPS_FIELDS: dict[type, bool] = {}


def _keeps_fields(kind: type[httpx.Headers]) -> bool:
    try:
        probe = kind([("X-A", "b")])
    except Exception:  # a Headers type that cannot be built this way: use .raw
        keeps = False
    else:
        keeps = getattr(probe, "_list", None) == [(b"X-A", b"x-a", b"b")]
    _KEEPS_FIELDS[kind] = keeps
    return keeps


def fields(headers: httpx.Headers) -> Sequence[Field]:
    """Every field of ``headers`` as ``(raw name, lower-cased name, raw value)``, in
    order, without decoding anything. Never modify the result.

    The layers scan the headers of every request and response; httpx and httpx2
    keep exactly these triples, so they are read in place when the type does, else
    built from ``.raw``.
    """
    kind = type(headers)
    keeps = _KEEPS_FIELDS.get(kind)
    if keeps is None:
        keeps = _keeps_fields(kind)
    if keeps:
        found: Sequence[Field] = headers._list
        return found
    return _fields_copied(headers)


def _fields_copied(headers: httpx.Headers) -> Sequence[Field]:
    return [(name, name.lower(), value) for name, value in headers.raw]


#: Larger values are treated as this many seconds (RFC 9111 §1.2.2: 2**31).
MAX_DELTA_SECONDS: Final = 2**31


def parse_delta_seconds(value: str) -> int | None:
    """RFC 9111 delta-seconds: a non-negative decimal integer, else None."""
    value = value.strip()
    if not value or not value.isascii() or not value.isdigit():
        return None
    if len(value) > 10:
        return MAX_DELTA_SECONDS
    return min(int(value), MAX_DELTA_SECONDS)


def parse_http_date(value: str) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7, including the obsolete forms) as a POSIX timestamp.

    Returns None for anything unparseable, including dates without a time zone that
    do not say GMT/UTC.
    """
    value = value.strip()
    if not value or len(value) > 64 or not value.isascii():
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # parsedate_to_datetime returns naive datetimes for "-0000"; HTTP dates are GMT.
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        stamp = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if math.isfinite(stamp) else None


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """``Retry-After`` (RFC 9110 §10.2.3) as seconds from now, or None when malformed.

    Accepts delta-seconds or an HTTP-date; a date in the past means ``0.0``.
    """
    if value is None:
        return None
    delta = parse_delta_seconds(value)
    if delta is not None:
        return float(delta)
    when = parse_http_date(value)
    if when is None:
        return None
    return max(0.0, when - now_wall)
