"""``response.extensions["klayengo"]``: what each layer did.

The report is a plain ``dict`` with these keys:

- ``attempts``: network attempts made for this response (``0`` when served from the cache);
- ``cache``: ``"hit" | "miss" | "stale" | "revalidated" | "bypass"``, or ``None`` when no
  cache applies;
- ``breaker``: the host's breaker state after the call, or ``None`` when no breaker applies;
- ``wait``: seconds spent waiting in the rate limiter, over all attempts.

Each layer fills in its own key as the response travels outwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import EXTENSION_KEY

if TYPE_CHECKING:
    from .._flavour import httpx

__all__ = ["report"]


def report(response: httpx.Response) -> dict[str, Any]:
    """The report dict of ``response``, created with its defaults on first use."""
    extensions = response.extensions
    found = extensions.get(EXTENSION_KEY)
    if found is None:
        found = {"attempts": 1, "cache": None, "breaker": None, "wait": 0.0}
        try:
            extensions[EXTENSION_KEY] = found
        except TypeError:  # an immutable mapping from an unusual transport
            response.extensions = {**extensions, EXTENSION_KEY: found}
    return found
