"""Per-request control: ``extensions={"klayengo": {...}}``.

Recognised keys (all optional):

========================  =================================================================
``"retry"``               a ``RetryPolicy`` for this request, or ``None``/``False`` for no retries
``"max_retries"``         an ``int`` >= 0 overriding the policy's ``max_retries``
``"deadline"``            seconds for the whole call (``None``: no deadline)
``"breaker"``             ``False``: neither checked nor counted by the circuit breaker
``"rate_limit"``          ``False``: not subject to the rate limiter
``"cache"``               ``False``: bypass the cache (reported as ``"bypass"``); or a
                          ``CachePolicy`` for this request
========================  =================================================================

Any other key raises ``TypeError`` naming it, as does a value of the wrong type. The
mapping itself is never modified, and it travels to the inner transport untouched
along with every other request extension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .._policies import UNSET, CachePolicy, RetryPolicy, _Unset

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = ["DEFAULT_OPTIONS", "EXTENSION_KEY", "RequestOptions", "request_options"]

#: The request/response extension key klayengo reads and writes.
EXTENSION_KEY: Final = "klayengo"

_KEYS: Final = ("breaker", "cache", "deadline", "max_retries", "rate_limit", "retry")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Parsed ``extensions["klayengo"]``; ``UNSET`` means "use the policy"."""

    retry: RetryPolicy | _Unset | None = UNSET
    max_retries: int | None = None
    deadline: float | _Unset | None = UNSET
    breaker: bool = True
    rate_limit: bool = True
    cache: CachePolicy | bool = True


DEFAULT_OPTIONS: Final = RequestOptions()


def _fail(key: str, expected: str, value: object) -> TypeError:
    return TypeError(f'extensions["klayengo"]["{key}"] must be {expected}, got {value!r}')


def parse_options(raw: object) -> RequestOptions:
    if not isinstance(raw, Mapping):
        raise TypeError(f'extensions["klayengo"] must be a dict, got {raw!r}')
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise TypeError(
            f'unknown key(s) in extensions["klayengo"]: {", ".join(map(repr, unknown))}; '
            f"expected some of {', '.join(map(repr, _KEYS))}"
        )
    retry: RetryPolicy | _Unset | None = UNSET
    if "retry" in raw:
        value = raw["retry"]
        if value is None or value is False:
            retry = None
        elif value is True:
            retry = UNSET
        elif isinstance(value, RetryPolicy):
            retry = value
        else:
            raise _fail("retry", "a RetryPolicy, None or a bool", value)
    max_retries = raw.get("max_retries")
    if max_retries is not None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise _fail("max_retries", "an int", max_retries)
        if max_retries < 0:
            raise ValueError(
                f'extensions["klayengo"]["max_retries"] must be >= 0, got {max_retries!r}'
            )
    deadline: float | _Unset | None = UNSET
    if "deadline" in raw:
        value = raw["deadline"]
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _fail("deadline", "a number or None", value)
            if math.isnan(value) or value <= 0:
                raise ValueError(f'extensions["klayengo"]["deadline"] must be > 0, got {value!r}')
            value = float(value)
        deadline = value
    flags = {}
    for key in ("breaker", "rate_limit"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise _fail(key, "a bool", value)
        flags[key] = value
    cache = raw.get("cache", True)
    if not isinstance(cache, bool | CachePolicy):
        raise _fail("cache", "a bool or a CachePolicy", cache)
    return RequestOptions(
        retry=retry,
        max_retries=max_retries,
        deadline=deadline,
        breaker=flags["breaker"],
        rate_limit=flags["rate_limit"],
        cache=cache,
    )


def request_options(request: httpx.Request) -> RequestOptions:
    """The klayengo options of ``request`` (validated; cheap when there are none)."""
    raw = request.extensions.get(EXTENSION_KEY)
    if raw is None:
        return DEFAULT_OPTIONS
    return parse_options(raw)
