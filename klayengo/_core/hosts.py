"""Host keys and per-host policy resolution.

Pure functions, no I/O. A *host key* is the one name klayengo uses for a host
everywhere (metrics labels, introspection, callbacks, exceptions): the lower-cased
ASCII (IDNA) host, ``[...]`` around IPv6 literals, plus ``:port`` when the port is
not the scheme's default. It never contains userinfo, a path, a query or a
fragment, and only characters of :data:`SAFE_CHARS`, at most :data:`MAX_HOST_KEY_LENGTH`
long.

Host patterns (``ResilientClient(hosts={pattern: HostPolicy(...)})``):

- ``example.com`` matches that host on any port;
- ``example.com:8443`` matches only that port (the scheme's default port counts:
  ``example.com:443`` matches ``https://example.com/``);
- ``*.example.com`` matches any subdomain of ``example.com``, not ``example.com`` itself.

The most specific pattern wins: ``host:port``, then ``host``, then the longest
``*.suffix``. Hosts compare case-insensitively after IDNA encoding.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from .._policies import (
    UNSET,
    CachePolicy,
    CircuitBreakerPolicy,
    HostPolicy,
    RateLimitPolicy,
    RetryPolicy,
)

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = [
    "HOST_MEMO_SIZE",
    "MAX_HOST_KEY_LENGTH",
    "SAFE_CHARS",
    "HostPatterns",
    "PolicyResolver",
    "ResolvedPolicies",
    "default_port",
    "host_key",
    "origin",
]

#: Longest host key; longer ones are truncated (DNS names stop at 253 characters).
MAX_HOST_KEY_LENGTH: Final = 128
#: Characters a host key may contain; anything else becomes ``_``.
SAFE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_:[]")
_UNSAFE = re.compile(r"[^a-z0-9.\-_:\[\]]")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: An origin: (scheme, ASCII host, effective port).
Origin = tuple[str, str, int | None]


def default_port(scheme: str) -> int | None:
    """The scheme's default port, or None for an unknown scheme."""
    return _DEFAULT_PORTS.get(scheme)


def _ascii_host(url: httpx.URL) -> str:
    try:
        host = url.raw_host.decode("ascii")
    except UnicodeDecodeError:  # pragma: no cover - httpx always IDNA-encodes
        host = url.raw_host.decode("latin-1")
    return host.lower()


def _sanitize(host: str, port: int | None) -> str:
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    host = _UNSAFE.sub("_", host.lower()) or "_"
    key = host if port is None else f"{host}:{port}"
    return key[:MAX_HOST_KEY_LENGTH]


#: Distinct (scheme, raw host, port) triples whose host key and origin are memoized;
#: past it the memo starts over, so hostile host churn costs time, never memory.
HOST_MEMO_SIZE: Final = 4096

# (scheme, raw_host, port) -> (host key, origin). Several layers name the host of
# every request (retry budget, cache, metrics, breaker, limiter); sanitizing it
# (IDNA bytes, lower case, a regex) each time cost ~0.5 µs per layer.
_memo: dict[tuple[str, bytes, int | None], tuple[str, Origin]] = {}
# The last URL object seen, and its entry: the layers of one request pass the same
# ``request.url`` down the stack. One tuple, replaced whole, so threads never see
# a URL paired with another URL's entry.
_last: tuple[httpx.URL | None, tuple[str, Origin]] = (None, ("", ("", "", None)))


def _names(url: httpx.URL) -> tuple[str, Origin]:
    """``(host_key(url), origin(url))``, memoized."""
    global _last
    last = _last
    if last[0] is url:
        return last[1]
    # httpx normalizes the scheme and host to lower case and a default port to None,
    # so this triple determines both names.
    scheme, port = url.scheme, url.port
    memo_key = (scheme, url.raw_host, port)
    found = _memo.get(memo_key)
    if found is None:
        default = _DEFAULT_PORTS.get(scheme)
        host = _ascii_host(url)
        key_port = None if port == default else port
        found = (
            _sanitize(host, key_port),
            (scheme, host, port if port is not None else default),
        )
        if len(_memo) >= HOST_MEMO_SIZE:
            _memo.clear()
        _memo[memo_key] = found
    _last = (url, found)
    return found


def host_key(url: httpx.URL) -> str:
    """The sanitized ``host[:port]`` key of ``url`` (port only when not the default)."""
    return _names(url)[0]


def origin(url: httpx.URL) -> Origin:
    """``(scheme, host, port)`` with the scheme's default port filled in."""
    return _names(url)[1]


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str  # "port" | "host" | "suffix"
    host: str
    port: int | None


_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _encode_host(raw: str, pattern: str) -> str:
    try:
        encoded = raw.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(
            f"hosts: invalid host pattern {pattern!r}: host is not valid IDNA"
        ) from None
    labels = encoded.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"hosts: invalid host pattern {pattern!r}: expected 'host', 'host:port' or '*.suffix'"
        )
    return encoded


def parse_pattern(pattern: object) -> _Pattern:
    """Validate and normalize one host pattern; ``ValueError`` on unknown syntax."""
    if not isinstance(pattern, str):
        raise TypeError(f"hosts: keys must be host pattern strings, got {pattern!r}")
    text = pattern.strip()
    bad = ValueError(
        f"hosts: invalid host pattern {pattern!r}: expected 'host', 'host:port' or '*.suffix'"
    )
    if not text or text != pattern or any(c in text for c in "/?#@ \t\r\n"):
        raise bad
    if text.startswith("*."):
        suffix = text[2:]
        if "*" in suffix or ":" in suffix or not suffix:
            raise bad
        return _Pattern("suffix", _encode_host(suffix, pattern), None)
    if "*" in text:
        raise bad
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end == -1:
            raise bad
        host, rest = text[1:end].lower(), text[end + 1 :]
        try:
            import ipaddress

            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
        if not rest:
            return _Pattern("host", host, None)
        if not rest.startswith(":"):
            raise bad
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = _encode_host(host, pattern)
    elif ":" in text:
        raise bad
    else:
        return _Pattern("host", _encode_host(text, pattern), None)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"hosts: invalid port in host pattern {pattern!r}")
    return _Pattern("port", host, int(port_text))


T = TypeVar("T")


class HostPatterns(Generic[T]):
    """A validated ``{pattern: value}`` table with most-specific-wins lookup."""

    __slots__ = ("_hosts", "_ports", "_suffixes")

    def __init__(self, table: Mapping[str, T] | None) -> None:
        self._ports: dict[tuple[str, int], T] = {}
        self._hosts: dict[str, T] = {}
        self._suffixes: list[tuple[str, T]] = []
        if table is None:
            return
        if not isinstance(table, Mapping):
            raise TypeError(f"hosts must be a mapping of pattern -> HostPolicy, got {table!r}")
        for raw, value in table.items():
            p = parse_pattern(raw)
            if p.kind == "port":
                assert p.port is not None
                self._ports[(p.host, p.port)] = value
            elif p.kind == "host":
                self._hosts[p.host] = value
            else:
                self._suffixes.append(("." + p.host, value))
        # Longest suffix first, so the first match is the most specific.
        self._suffixes.sort(key=lambda item: len(item[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._ports or self._hosts or self._suffixes)

    def values(self) -> list[T]:
        return [*self._ports.values(), *self._hosts.values(), *(v for _, v in self._suffixes)]

    def lookup(self, host: str, port: int | None) -> T | None:
        if port is not None:
            found = self._ports.get((host, port))
            if found is not None:
                return found
        found = self._hosts.get(host)
        if found is not None:
            return found
        for suffix, value in self._suffixes:
            if host.endswith(suffix):
                return value
        return None


@dataclass(frozen=True, slots=True)
class ResolvedPolicies:
    """The policies in force for one host (``None``: that layer is off for it)."""

    retry: RetryPolicy | None
    breaker: CircuitBreakerPolicy | None
    rate_limit: RateLimitPolicy | None
    cache: CachePolicy | None


_RESOLVE_CACHE_SIZE: Final = 4096


class PolicyResolver:
    """Resolves the client's policies and its ``hosts=`` overrides for a URL.

    Results are memoized per (host, port); the memo is bounded and simply starts over
    when full, so hostile host churn costs time, never memory.
    """

    __slots__ = ("_lock", "_memo", "_uniform", "default", "patterns")

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreakerPolicy | None = None,
        rate_limit: RateLimitPolicy | None = None,
        cache: CachePolicy | None = None,
        hosts: Mapping[str, HostPolicy] | None = None,
    ) -> None:
        self.default = ResolvedPolicies(retry, breaker, rate_limit, cache)
        self.patterns: HostPatterns[HostPolicy] = HostPatterns(hosts)
        for value in self.patterns.values():
            if not isinstance(value, HostPolicy):
                raise TypeError(f"hosts: values must be HostPolicy instances, got {value!r}")
        # No patterns: every host gets the defaults (each layer asks on every request).
        self._uniform = not self.patterns
        self._memo: dict[tuple[str, int | None], ResolvedPolicies] = {}
        self._lock = threading.Lock()

    def any(self, layer: str) -> bool:
        """True when ``layer`` is on for the client or for at least one host pattern."""
        if getattr(self.default, layer) is not None:
            return True
        return any(
            getattr(hp, layer) is not UNSET and getattr(hp, layer) is not None
            for hp in self.patterns.values()
        )

    def resolve(self, url: httpx.URL) -> ResolvedPolicies:
        if self._uniform:
            return self.default
        host = _ascii_host(url)
        port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme)
        key = (host, port)
        found = self._memo.get(key)
        if found is not None:
            return found
        hp = self.patterns.lookup(host, port)
        if hp is None:
            result = self.default
        else:
            changes = {
                name: getattr(hp, name)
                for name in ("retry", "breaker", "rate_limit", "cache")
                if getattr(hp, name) is not UNSET
            }
            result = dataclasses.replace(self.default, **changes)
        with self._lock:
            if len(self._memo) >= _RESOLVE_CACHE_SIZE:
                self._memo.clear()
            self._memo[key] = result
        return result
