"""Metric label values: sanitized and bounded. Pure, no prometheus.

Every label value klayengo emits goes through one of these functions, so the rules of
DESIGN §3 (Metrics) live in one place:

- ``host``: a host key (:func:`klayengo._core.hosts.host_key`), re-checked against
  :data:`LABEL_SAFE_CHARS` and :data:`MAX_LABEL_LENGTH`; past a client's ``max_hosts``
  distinct hosts, :data:`OTHER_HOST` (see :class:`HostLabels`);
- ``method``: one of :data:`STANDARD_METHODS`, else :data:`OTHER_METHOD` (OpenTelemetry's
  rule for ``http.request.method``);
- ``status_code``: three digits, or :data:`ERROR_STATUS` when an exception was raised;
- ``type`` (errors), ``reason`` (retries), ``result`` (cache), ``to_state`` (breaker):
  closed sets; anything else (never produced by klayengo's own layers) is folded into
  :data:`OTHER_VALUE` so a bug can never mint new series;
- ``client``: the client's name, restricted to the safe set and length.
"""

from __future__ import annotations

import re
import threading
from typing import Final

from .errors import error_names
from .hosts import MAX_HOST_KEY_LENGTH

__all__ = [
    "BREAKER_STATES",
    "CACHE_RESULTS",
    "ERROR_STATUS",
    "ERROR_TYPES",
    "LABEL_SAFE_CHARS",
    "MAX_LABEL_LENGTH",
    "OTHER_HOST",
    "OTHER_METHOD",
    "OTHER_VALUE",
    "RETRY_REASONS",
    "STANDARD_METHODS",
    "HostLabels",
    "breaker_state_value",
    "cache_result_label",
    "client_label",
    "error_type",
    "method_label",
    "retry_reason_label",
    "safe_label",
    "status_label",
    "to_state_label",
]

#: Longest label value; longer values are truncated.
MAX_LABEL_LENGTH: Final = MAX_HOST_KEY_LENGTH
#: Characters a label value may contain; anything else becomes ``_``.
LABEL_SAFE_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:[]-"
)
_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9._:\[\]\-]")

#: The ``host`` label of every host past a client's ``max_hosts``.
OTHER_HOST: Final = "_other"
#: The ``method`` label of a non-standard method (OpenTelemetry's ``_OTHER``).
OTHER_METHOD: Final = "_OTHER"
#: The ``status_code`` label of a request that raised instead of returning a response.
ERROR_STATUS: Final = "error"
#: What an unknown value of a closed label set is reported as.
OTHER_VALUE: Final = "other"

#: RFC 9110 §9 methods plus PATCH (RFC 5789): OpenTelemetry's known set.
STANDARD_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_METHOD_LABELS: Final = {m: m for m in STANDARD_METHODS}

#: ``klayengo_errors_total{type}`` values.
ERROR_TYPES: Final = (
    "connect",
    "timeout",
    "network",
    "protocol",
    "circuit_open",
    "rate_limited",
    "other",
)
#: ``klayengo_retries_total{reason}`` values.
RETRY_REASONS: Final = frozenset({"status", "connect", "timeout", "network"})
#: ``klayengo_cache_requests_total{result}`` values.
CACHE_RESULTS: Final = frozenset({"hit", "miss", "stale", "revalidated", "bypass"})
#: ``klayengo_circuit_breaker_state`` values by state; also the ``to_state`` label set.
BREAKER_STATES: Final = {"closed": 0, "open": 1, "half_open": 2}

# Status codes are three digits (RFC 9110 §15); built once, looked up per request.
_STATUS_LABELS: Final = {code: str(code) for code in range(100, 1000)}


def safe_label(value: str) -> str:
    """``value`` restricted to :data:`LABEL_SAFE_CHARS` and :data:`MAX_LABEL_LENGTH`."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_LENGTH]) or "_"


def client_label(name: str) -> str:
    """The ``client`` label of a client named ``name``."""
    return safe_label(name)


def method_label(method: str) -> str:
    """A standard method as is; anything else (including lower case) is ``_OTHER``."""
    return _METHOD_LABELS.get(method, OTHER_METHOD)


def status_label(status_code: int) -> str:
    """Three digits; a value that is not a three-digit status (only a broken custom
    transport can produce one) is reported as :data:`ERROR_STATUS`."""
    return _STATUS_LABELS.get(status_code, ERROR_STATUS)


#: ``type`` labels by the httpx/httpx2/klayengo class names an exception has, first match wins.
_ERROR_TYPES: Final = (
    (frozenset({"CircuitOpenError"}), "circuit_open"),
    (frozenset({"RateLimitExceeded"}), "rate_limited"),
    (frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "ProxyError"}), "connect"),
    (frozenset({"TimeoutException"}), "timeout"),
    (frozenset({"NetworkError"}), "network"),
    (frozenset({"ProtocolError", "DecodingError"}), "protocol"),
)


def error_type(exc: BaseException) -> str:
    """The ``type`` label of an exception raised by a request.

    ``connect`` groups the failures where nothing was sent (as the retry layer does):
    ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ProxyError``. Other
    timeouts are ``timeout``, other network errors ``network``, HTTP protocol
    violations ``protocol``; the two resilience refusals have their own values;
    everything else (including cancellation) is ``other``.
    """
    names = error_names(type(exc))
    if not names:
        return OTHER_VALUE  # the common case of a foreign exception: one lookup
    for kind, label in _ERROR_TYPES:
        if not names.isdisjoint(kind):
            return label
    return OTHER_VALUE


def retry_reason_label(reason: str) -> str:
    """A retry ``reason`` from the closed set, else ``other``."""
    return reason if reason in RETRY_REASONS else OTHER_VALUE


def cache_result_label(result: str) -> str:
    """A cache ``result`` from the closed set, else ``other``."""
    return result if result in CACHE_RESULTS else OTHER_VALUE


def to_state_label(state: str) -> str:
    """A breaker state from the closed set, else ``other``."""
    return state if state in BREAKER_STATES else OTHER_VALUE


def breaker_state_value(state: str) -> int | None:
    """The state gauge's value (0 closed, 1 open, 2 half-open); None for an unknown state."""
    return BREAKER_STATES.get(state)


class HostLabels:
    """The ``host`` label values of one client: at most ``max_hosts`` plus ``_other``.

    The first ``max_hosts`` distinct host keys seen keep their own (re-sanitized)
    label; every later one is :data:`OTHER_HOST`. Slots are never given back, so the
    number of distinct values a client ever emits is bounded by ``max_hosts + 1``
    however the hosts churn, and the memory held is bounded by ``max_hosts`` entries.
    Thread-safe: lookups take no lock, admissions take a short one.
    """

    __slots__ = ("_labels", "_lock", "max_hosts")

    def __init__(self, max_hosts: int) -> None:
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts!r}")
        self.max_hosts = max_hosts
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._labels)

    def label(self, host: str) -> str:
        """The label of ``host`` (a host key), admitting it while slots remain."""
        found = self._labels.get(host)
        if found is not None:
            return found
        if len(self._labels) >= self.max_hosts:
            return OTHER_HOST  # full, and slots are never given back: no lock needed
        with self._lock:
            found = self._labels.get(host)
            if found is not None:
                return found
            if len(self._labels) >= self.max_hosts:
                return OTHER_HOST
            found = safe_label(str(host).lower())
            self._labels[host] = found
            return found
