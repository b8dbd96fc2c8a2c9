"""When to try Redis: always while it works, once per cooldown while it does not."""

from __future__ import annotations

import threading
import time

__all__ = ["NORMAL", "SKIP", "TRIAL", "Health"]

SKIP, NORMAL, TRIAL = 0, 1, 2


class Health:
    """Whether to try Redis now: always while it works; after a failure, one caller
    per ``cooldown`` (a *trial*) tries again while the others use local state."""

    __slots__ = ("_cooldown", "_down", "_lock", "_retry_at")

    def __init__(self, cooldown: float) -> None:
        self._cooldown = cooldown
        self._down = False
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def should_try(self) -> int:
        """``NORMAL`` (no outage), ``TRIAL`` (this caller probes Redis) or ``SKIP``."""
        if not self._down:
            return NORMAL
        now = time.monotonic()
        with self._lock:
            if not self._down:
                return NORMAL
            if now < self._retry_at:
                return SKIP
            self._retry_at = now + self._cooldown
            return TRIAL

    def failed(self) -> bool:
        """Record a failure; True when it starts an outage."""
        with self._lock:
            started = not self._down
            self._down = True
            self._retry_at = time.monotonic() + self._cooldown
            return started

    def succeeded(self, mode: int) -> bool:
        """Record a success; True when it ends an outage. Only a trial ends one: a
        call sent before the outage began and answered late proves nothing."""
        if not self._down or mode != TRIAL:
            return False
        with self._lock:
            ended = self._down
            self._down = False
            return ended
