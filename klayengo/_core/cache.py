"""RFC 9111 rules for klayengo's private client cache: pure functions of (input, now).

Nothing here performs I/O or reads a clock: the transport passes wall time (for HTTP
dates) and monotonic time (for ages and expiry) in. What lives here:

- :func:`parse_cache_control`: a tolerant ``Cache-Control`` parser (never raises);
- :func:`request_facts`: the request side (``Cache-Control``, ``Pragma: no-cache``, credentials);
- :func:`why_not_storable`: RFC 9111 §3 storability for a private cache;
- :func:`make_entry` / :func:`freshen`: build a stored response and refresh it from a
  304 (§3.2, §4.3.4), with its freshness lifetime (§4.2.1) and age (§4.2.3) turned
  into absolute monotonic deadlines once, so a hit never re-parses anything;
- :func:`usable` and friends: may a stored response answer this request now;
- the cache key (:class:`KeyMaker`): method + URL, plus a keyed digest of the
  request's ``Authorization``/``Cookie`` and of the values of the headers named by
  the response's ``Vary``.

Deliberate choices (each documented where it is made):

- a private cache ignores ``s-maxage`` (RFC 9111 §5.2.2.10: it applies to shared
  caches only) and stores ``private`` responses;
- an unparseable ``max-age`` makes the response stale (the conservative reading);
  an unparseable ``Expires`` is "already expired" (RFC 9111 §5.3, a MUST); an
  unparseable ``Date`` or ``Age`` is absent;
- ``must-revalidate`` and a response ``no-cache`` forbid serving the entry stale,
  including for ``stale-if-error`` (RFC 9111 §4.2.4).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from .._policies import CachePolicy
from .headers import MAX_DELTA_SECONDS, fields, parse_delta_seconds, parse_http_date

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = [
    "EMPTY_DIRECTIVES",
    "ENTRY_OVERHEAD",
    "ERROR_STATUSES",
    "FIELD_OVERHEAD",
    "HTTPTypes",
    "SAFE_METHODS",
    "CacheControl",
    "CacheEntry",
    "KeyMaker",
    "RequestFacts",
    "VaryIndex",
    "conditional_headers",
    "entry_usable",
    "freshen",
    "invalidates",
    "make_entry",
    "parse_cache_control",
    "request_facts",
    "response_fields",
    "stale_if_error_ok",
    "stale_while_revalidate_ok",
    "why_not_storable",
]

#: RFC 9110 §9.2.1 safe methods: they never invalidate stored responses.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Statuses after which ``stale-if-error`` may serve a stale entry (RFC 5861 §4).
ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
#: Bytes charged to every stored record on top of its body, header and key bytes:
#: the Python objects that hold it (entry, stream, extensions, the store's
#: bookkeeping). Checked against tracemalloc in ``tests/core/test_cache_store.py``.
ENTRY_OVERHEAD: Final = 1024
#: Bytes charged per stored header field on top of its name and value: httpx keeps
#: a tuple of three ``bytes`` objects for each.
FIELD_OVERHEAD: Final = 192
#: How long past its freshness an entry that carries a validator (``ETag`` or
#: ``Last-Modified``) is kept for a cheap revalidation, at least; the byte and
#: entry bounds still evict it earlier under pressure.
VALIDATOR_RETENTION: Final = 600.0

# Fields never copied from a 304 into the stored response (RFC 9111 §3.1, §3.2):
# hop-by-hop fields, the framing of the stored body, and the coding it depends on.
_NOT_UPDATED: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"content-length",
        b"content-encoding",
        b"content-range",
    }
)
# Request fields that make the request conditional or partial: such a request is
# answered by the origin, never from the cache (its response may still be stored).
_PASS_THROUGH_FIELDS: Final = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"}
)
_CREDENTIAL_FIELDS: Final = frozenset({"authorization", "cookie"})
_KEY_DIGEST_SIZE: Final = 16


# -- Cache-Control -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives klayengo acts on; absent ones are ``False`` / ``None``.

    ``max_stale`` is ``MAX_DELTA_SECONDS`` when the directive has no value (any
    staleness accepted).
    """

    no_store: bool = False
    no_cache: bool = False
    must_revalidate: bool = False
    private: bool = False
    public: bool = False
    only_if_cached: bool = False
    immutable: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_if_error: int | None = None
    stale_while_revalidate: int | None = None


EMPTY_DIRECTIVES: Final = CacheControl()

_FLAGS: Final = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "must_revalidate",
    "private": "private",
    "public": "public",
    "only-if-cached": "only_if_cached",
    "immutable": "immutable",
}
_DELTAS: Final = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "max-stale": "max_stale",
    "min-fresh": "min_fresh",
    "stale-if-error": "stale_if_error",
    "stale-while-revalidate": "stale_while_revalidate",
}
#: Longest Cache-Control value parsed; the rest is ignored (hostile headers).
_MAX_CC_LENGTH: Final = 4096


def _split_directives(value: str) -> Iterable[str]:
    """Split on commas that are not inside a quoted-string."""
    if '"' not in value:
        yield from value.split(",")
        return
    start = 0
    quoted = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield value[start:i]
            start = i + 1
    yield value[start:]


#: Distinct short ``Cache-Control`` values whose parse is memoized (a server sends
#: the same few again and again); past it the memo starts over.
CC_MEMO_SIZE: Final = 512
#: Longest value set (in characters) that is memoized.
_CC_MEMO_MAX_LENGTH: Final = 256
_cc_memo: dict[tuple[str, ...], CacheControl] = {}


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse ``Cache-Control`` field values (several lines allowed); never raises.

    Names are case-insensitive; the first occurrence of a directive wins (RFC 9111
    §4.2.1); quoted arguments are accepted (§5.2). A malformed ``max-age`` becomes 0
    (the response is stale, the conservative reading); other malformed arguments
    are ignored; unknown directives are ignored. Results (immutable) of short values
    are memoized.
    """
    values = tuple(values)
    found = _cc_memo.get(values)
    if found is None:
        found = _parse_cache_control(values)
        if sum(map(len, values)) <= _CC_MEMO_MAX_LENGTH:
            if len(_cc_memo) >= CC_MEMO_SIZE:
                _cc_memo.clear()
            _cc_memo[values] = found
    return found


def _parse_cache_control(values: Iterable[str]) -> CacheControl:
    found: dict[str, object] = {}
    budget = _MAX_CC_LENGTH
    for value in values:
        if budget <= 0:
            break
        value = value[:budget]
        budget -= len(value)
        for part in _split_directives(value):
            name, eq, arg = part.partition("=")
            name = name.strip().lower()
            flag = _FLAGS.get(name)
            if flag is not None:
                # `no-cache="field"` / `private="field"` are treated as the
                # unqualified directive (allowed: it is the stricter reading).
                found.setdefault(flag, True)
                continue
            delta = _DELTAS.get(name)
            if delta is None or delta in found:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            seconds = parse_delta_seconds(arg) if eq else None
            if seconds is None:
                if delta == "max_stale" and not eq:
                    seconds = MAX_DELTA_SECONDS
                elif delta == "max_age":
                    seconds = 0
                else:
                    continue
            found[delta] = seconds
    if not found:
        return EMPTY_DIRECTIVES
    return CacheControl(**found)  # type: ignore[arg-type]


# -- what a request asks -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the cache needs from a request's headers, gathered in one pass.

    Attributes:
        directives: the request's ``Cache-Control`` (``Pragma: no-cache`` counts as
            ``no-cache`` when there is no ``Cache-Control``, RFC 9111 §5.4).
        credentials: ``Authorization``/``Cookie`` values, in order, or ``()``.
        pass_through: the request is conditional or partial: not answered from cache.
        has_directives: the request carries cache directives at all.
    """

    directives: CacheControl = EMPTY_DIRECTIVES
    credentials: tuple[str, ...] = ()
    pass_through: bool = False
    has_directives: bool = False


PLAIN_REQUEST: Final = RequestFacts()
_INTERESTING: Final = frozenset(
    name.encode()
    for name in (*_PASS_THROUGH_FIELDS, *_CREDENTIAL_FIELDS, "cache-control", "pragma")
)


def request_facts(headers: httpx.Headers) -> RequestFacts:
    """Gather the cache-relevant facts of a request's headers (never raises).

    Most requests carry none of the fields looked at; they get the shared
    ``PLAIN_REQUEST`` after one pass over the raw names, without decoding anything.
    """
    seen = None
    for _, name, _ in fields(headers):
        if name in _INTERESTING:
            if seen is None:
                seen = set()
            seen.add(name.decode("ascii"))
    if seen is None:
        return PLAIN_REQUEST
    cc = headers.get_list("cache-control") if "cache-control" in seen else []
    pragma_no_cache = (
        not cc
        and "pragma" in seen
        and any("no-cache" in value.lower() for value in headers.get_list("pragma"))
    )
    directives = parse_cache_control(cc) if cc else EMPTY_DIRECTIVES
    if pragma_no_cache:
        directives = CacheControl(no_cache=True)
    credentials = tuple(
        f"{name}:{value}" for name, value in headers.multi_items() if name in _CREDENTIAL_FIELDS
    )
    return RequestFacts(
        directives=directives,
        credentials=credentials,
        pass_through=not seen.isdisjoint(_PASS_THROUGH_FIELDS),
        has_directives=bool(cc) or pragma_no_cache,
    )


# -- keys ------------------------------------------------------------------------------
class KeyMaker:
    """Builds cache keys; digests are keyed with the store's ``salt``.

    The primary key is ``"METHOD URL"`` (fragment dropped). When the request carries
    credentials or the stored response varies, entries live under a secondary key:
    the primary key plus a keyed BLAKE2b digest of the credentials and of the values
    of the ``Vary``-named request headers. The salt is random per client in memory
    (digests useless outside the process); a shared store gives every process the
    same one, so they find each other's entries (see SECURITY.md for what that
    salt protects).
    """

    __slots__ = ("salt",)

    def __init__(self, salt: bytes) -> None:
        self.salt = salt

    @staticmethod
    def primary(method: str, url: httpx.URL) -> str:
        # httpx percent-encodes a "#" anywhere but before the fragment.
        return f"{method} {str(url).partition('#')[0]}"

    def secondary(
        self,
        primary: str,
        credentials: tuple[str, ...],
        vary: tuple[str, ...],
        headers: httpx.Headers,
    ) -> str:
        digest = hashlib.blake2b(key=self.salt, digest_size=_KEY_DIGEST_SIZE)
        for credential in credentials:
            digest.update(credential.encode("utf-8", "surrogateescape"))
            digest.update(b"\x00")
        digest.update(b"\x01")
        for name in vary:
            digest.update(name.encode("ascii", "replace"))
            digest.update(b"=")
            digest.update(",".join(headers.get_list(name)).encode("utf-8", "surrogateescape"))
            digest.update(b"\x00")
        return f"{primary}\n{digest.hexdigest()}"


# -- stored records ------------------------------------------------------------------
class HTTPTypes(Protocol):
    """The types of the HTTP library (the ``httpx`` or ``httpx2`` module) that a stored
    entry is made of; the core builds entries with them and never imports a library."""

    Headers: type[httpx.Headers]
    ByteStream: type[httpx.ByteStream]


@dataclass(slots=True, eq=False)
class CacheEntry:
    """A stored response, with every per-hit decision precomputed.

    Times are monotonic seconds (the clock the transport injects). ``headers`` is an
    ``httpx.Headers`` copied (not re-parsed) into each served response, and
    ``stream`` an immutable ``httpx.ByteStream`` shared by every served response.
    """

    key: str
    host: str
    status: int
    headers: httpx.Headers
    body: bytes
    stream: httpx.ByteStream
    extensions: dict[str, object]
    vary: tuple[str, ...]
    stored_at: float
    initial_age: float
    lifetime: float
    fresh_until: float
    #: No stale use at all (``must-revalidate``/``no-cache``), nor without revalidation.
    no_stale: bool
    #: Always revalidate before use (response ``no-cache``).
    no_cache: bool
    stale_if_error_until: float
    stale_while_revalidate_until: float
    keep_until: float
    etag: str | None
    last_modified: str | None
    size: int
    #: The body has no content coding: its raw bytes are its decoded content.
    plain: bool

    def age(self, now: float) -> float:
        """Current age (RFC 9111 §4.2.3) at monotonic ``now``."""
        return self.initial_age + max(0.0, now - self.stored_at)


@dataclass(slots=True, eq=False)
class VaryIndex:
    """Stored under a primary key whose responses live under secondary keys."""

    vary: tuple[str, ...]
    keep_until: float
    size: int = ENTRY_OVERHEAD


def _first(headers: httpx.Headers, name: str) -> str | None:
    values = headers.get_list(name)
    return values[0] if values else None


_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")


def vary_names(values: Iterable[str]) -> tuple[str, ...] | None:
    """The lower-cased, sorted field names of the ``Vary`` field ``values``; ``None``
    when the response cannot be matched to requests: ``Vary: *``, or a name that is
    not a field name."""
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name == "*" or not _TOKEN.match(name):
                return None
            names.add(name)
    return tuple(sorted(names))


def response_fields(
    headers: httpx.Headers,
) -> tuple[CacheControl, tuple[str, ...] | None, str | None]:
    """What storing a response depends on, in one pass over its raw fields.

    Returns:
        ``(Cache-Control directives, Vary names or None (see vary_names),
        the first Content-Length value or None)``. Never raises.
    """
    cc: list[str] = []
    vary: list[str] | None = None
    length: str | None = None
    for _, name, raw_value in fields(headers):
        if name == b"cache-control":
            cc.append(raw_value.decode("latin-1"))
        elif name == b"vary":
            if vary is None:
                vary = []
            vary.append(raw_value.decode("latin-1"))
        elif name == b"content-length" and length is None:
            length = raw_value.decode("latin-1")
    directives = parse_cache_control(cc) if cc else EMPTY_DIRECTIVES
    return directives, (vary_names(vary) if vary is not None else ()), length


def why_not_storable(
    method: str,
    status: int,
    request: RequestFacts,
    response: CacheControl,
    vary: tuple[str, ...] | None,
    policy: CachePolicy,
) -> str | None:
    """RFC 9111 §3 for a private cache: ``None`` when storable, else the reason.

    ``response`` is the response's ``Cache-Control`` and ``vary`` its
    :func:`vary_names`. ``no-store`` (request or response) is never stored, even with
    ``respect_cache_control=False``, nor is ``Vary: *``. ``private`` is storable
    (this is a private cache), and so are responses to requests with credentials:
    those are keyed by a digest of the credentials.
    """
    if method not in policy.methods:
        return "method"
    if status not in policy.cacheable_statuses:
        return "status"
    if request.directives.no_store or response.no_store:
        return "no-store"
    if vary is None:
        return "vary-star"  # or a Vary naming something that is not a field name
    return None


def _lifetime(
    directives: CacheControl, headers: httpx.Headers, response_wall: float, policy: CachePolicy
) -> float:
    """Freshness lifetime, RFC 9111 §4.2.1 (private cache: ``s-maxage`` ignored)."""
    if not policy.respect_cache_control:
        return float(policy.ttl)
    if directives.max_age is not None:
        return float(directives.max_age)
    expires_values = headers.get_list("expires")
    if expires_values:
        expires = parse_http_date(expires_values[0])
        if expires is None:
            return 0.0  # §5.3: an invalid Expires means "already expired"
        date_value = _first(headers, "date")
        date = parse_http_date(date_value) if date_value is not None else None
        return max(0.0, expires - (date if date is not None else response_wall))
    return float(policy.ttl)  # the heuristic freshness: the policy's ttl


def _initial_age(headers: httpx.Headers, request_wall: float, response_wall: float) -> float:
    """``corrected_initial_age`` of RFC 9111 §4.2.3."""
    age_value = _first(headers, "age")
    age = parse_delta_seconds(age_value) if age_value is not None else None
    date_value = _first(headers, "date")
    date = parse_http_date(date_value) if date_value is not None else None
    apparent_age = max(0.0, response_wall - date) if date is not None else 0.0
    response_delay = max(0.0, response_wall - request_wall)
    return max(apparent_age, (age or 0) + response_delay)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else float(MAX_DELTA_SECONDS)


def make_entry(
    *,
    key: str,
    host: str,
    status: int,
    headers: httpx.Headers,
    body: bytes,
    stream: httpx.ByteStream,
    extensions: Mapping[str, object],
    vary: tuple[str, ...],
    request_wall: float,
    response_wall: float,
    now: float,
    policy: CachePolicy,
) -> CacheEntry:
    """Build the stored form of a response received at monotonic ``now``.

    ``stream`` is ``body`` as the library's ``ByteStream``, shared by every served
    response. Freshness and the stale windows become absolute monotonic deadlines here, once.
    ``keep_until`` (when the store may drop it) is the latest moment the entry can
    still serve: freshness plus the longest stale window, and for an entry with a
    validator at least ``VALIDATOR_RETENTION`` more, for revalidation.
    """
    directives = parse_cache_control(headers.get_list("cache-control"))
    respect = policy.respect_cache_control
    lifetime = _finite(_lifetime(directives, headers, response_wall, policy))
    initial_age = _initial_age(headers, request_wall, response_wall) if respect else 0.0
    fresh_until = now + lifetime - initial_age
    no_cache = respect and directives.no_cache
    no_stale = respect and (directives.must_revalidate or directives.no_cache)
    sie = float(policy.stale_if_error)
    swr = 0.0
    if respect:
        if directives.stale_if_error is not None:
            sie = max(sie, float(directives.stale_if_error))
        if directives.stale_while_revalidate is not None:
            swr = float(directives.stale_while_revalidate)
    if no_stale:
        sie = swr = 0.0
    etag = _first(headers, "etag")
    last_modified = _first(headers, "last-modified")
    keep_until = fresh_until + max(sie, swr)
    if etag is not None or last_modified is not None:
        keep_until = max(keep_until, fresh_until + max(VALIDATOR_RETENTION, lifetime))
    extensions = {
        name: value
        for name, value in extensions.items()
        if name in ("http_version", "reason_phrase")
    }
    raw = headers.raw
    header_bytes = sum(len(k) + len(v) for k, v in raw) + FIELD_OVERHEAD * len(raw)
    return CacheEntry(
        key=key,
        host=host,
        status=status,
        headers=headers,
        body=body,
        stream=stream,
        extensions=extensions,
        vary=vary,
        stored_at=now,
        initial_age=initial_age,
        lifetime=lifetime,
        fresh_until=fresh_until,
        no_stale=no_stale,
        no_cache=no_cache,
        stale_if_error_until=fresh_until + sie,
        stale_while_revalidate_until=fresh_until + swr,
        keep_until=keep_until,
        etag=etag,
        last_modified=last_modified,
        size=len(body) + header_bytes + 2 * len(key) + ENTRY_OVERHEAD,
        plain=all(
            value.strip().lower() in ("", "identity")
            for value in headers.get_list("content-encoding")
        ),
    )


def freshen(
    entry: CacheEntry,
    not_modified: httpx.Headers,
    *,
    request_wall: float,
    response_wall: float,
    now: float,
    policy: CachePolicy,
) -> CacheEntry:
    """The stored response refreshed by a 304 (RFC 9111 §3.2, §4.3.4).

    Every field of the 304 replaces the stored ones of that name, except hop-by-hop
    fields, the body's framing (``Content-Length``, ``Content-Range``) and
    ``Content-Encoding`` (the stored body depends on it). Freshness is recomputed
    from the merged fields as of the 304.
    """
    updates: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for raw_name, value in not_modified.raw:
        name = raw_name.lower()
        if name not in _NOT_UPDATED:
            updates.setdefault(name, []).append((raw_name, value))
    replaced = set(updates)
    merged: list[tuple[bytes, bytes]] = []
    for raw_name, value in entry.headers.raw:
        name = raw_name.lower()
        if name not in replaced:
            merged.append((raw_name, value))
        elif name in updates:  # the new values take the place of the first old one
            merged.extend(updates.pop(name))
    for rest in updates.values():
        merged.extend(rest)
    return make_entry(
        key=entry.key,
        host=entry.host,
        status=entry.status,
        headers=type(entry.headers)(merged),
        body=entry.body,
        stream=entry.stream,
        extensions=entry.extensions,
        vary=entry.vary,
        request_wall=request_wall,
        response_wall=response_wall,
        now=now,
        policy=policy,
    )


def validator_matches(entry: CacheEntry, not_modified: httpx.Headers) -> bool:
    """May this 304 freshen ``entry``? (RFC 9111 §4.3.4, weak comparison.)

    A 304 without an ``ETag`` is taken to refer to the stored response; with one, it
    must equal the stored ``ETag`` once ``W/`` prefixes are dropped.
    """
    etag = _first(not_modified, "etag")
    if etag is None:
        return True
    if entry.etag is None:
        return False
    return etag.strip().removeprefix("W/") == entry.etag.strip().removeprefix("W/")


# -- using a stored response ---------------------------------------------------------
def entry_usable(entry: CacheEntry, now: float, directives: CacheControl) -> bool:
    """May ``entry`` answer a request with these directives, without contacting the origin?

    RFC 9111 §4.2 and §5.2.1: fresh (minus ``min-fresh``, within the request's
    ``max-age``), or stale within the request's ``max-stale`` unless the response
    forbids stale use. Request ``no-cache`` and ``max-age=0`` always revalidate.
    """
    if entry.no_cache or directives.no_cache:
        return False
    if directives is EMPTY_DIRECTIVES:
        return now < entry.fresh_until
    max_age = directives.max_age
    if max_age is not None and (max_age == 0 or entry.age(now) > max_age):
        return False  # `max-age=0` always revalidates (as browsers do), even at age 0
    remaining = entry.fresh_until - now
    if directives.min_fresh is not None and remaining < directives.min_fresh:
        return False
    if remaining > 0:
        return True
    return (
        directives.max_stale is not None
        and not entry.no_stale
        and -remaining <= directives.max_stale
    )


def stale_if_error_ok(
    entry: CacheEntry, now: float, directives: CacheControl = EMPTY_DIRECTIVES
) -> bool:
    """May ``entry`` be served because the layers below failed (RFC 5861 §4)?

    Within the entry's window (the policy's ``stale_if_error`` or the response's
    directive, whichever is longer), or within the current request's own
    ``stale-if-error``; never when the response forbids stale use.
    """
    if entry.no_stale:
        return False
    if now < entry.stale_if_error_until:
        return True
    asked = directives.stale_if_error
    return asked is not None and now < entry.fresh_until + asked


def stale_while_revalidate_ok(entry: CacheEntry, now: float) -> bool:
    """May ``entry`` be served while another request revalidates it (RFC 5861 §3)?"""
    return not entry.no_stale and now < entry.stale_while_revalidate_until


def conditional_headers(entry: CacheEntry) -> list[tuple[str, str]]:
    """The validators to send when revalidating ``entry`` (RFC 9111 §4.3.1)."""
    found: list[tuple[str, str]] = []
    etag = entry.etag
    if etag is not None and etag.isascii() and etag.isprintable():
        found.append(("If-None-Match", etag))
    modified = entry.last_modified
    if modified is not None and parse_http_date(modified) is not None:
        found.append(("If-Modified-Since", modified))
    return found


def invalidates(method: str, status: int) -> bool:
    """Does this exchange invalidate stored responses of its target (RFC 9111 §4.4)?"""
    return method not in SAFE_METHODS and 200 <= status < 400
