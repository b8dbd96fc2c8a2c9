"""Shared-state backends other than the in-memory default (see ``klayengo._core.backend``).

Nothing here imports a client library at import time: ``import klayengo`` works
without the ``redis`` extra, and ``RedisBackend`` imports redis-py when created.
"""

from __future__ import annotations

from .redis import RedisBackend, redact_url

__all__ = ["RedisBackend", "redact_url"]
