"""The server's requests-per-minute limit and the spellings of its rate-limit headers."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindowLimiter", "go_duration", "retry_after_header"]


class SlidingWindowLimiter:
    """At most ``limit`` admitted requests in any ``window_s`` seconds (a sliding log).

    Refused requests do not count, as at real providers. ``try_acquire`` returns None
    when admitted, else the seconds until a slot frees up.

    >>> lim = SlidingWindowLimiter(1, clock=lambda: 0.0)
    >>> lim.try_acquire() is None, lim.try_acquire()
    (True, 60.0)
    """

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._admitted and self._admitted[0] <= now - self.window_s:
            self._admitted.popleft()

    def try_acquire(self) -> float | None:
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._admitted) < self.limit:
                self._admitted.append(now)
                return None
            return self._admitted[0] + self.window_s - now

    def remaining(self) -> tuple[int, float]:
        """(requests left in the window, seconds until the oldest admitted one expires)."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            reset = self._admitted[0] + self.window_s - now if self._admitted else 0.0
            return self.limit - len(self._admitted), reset

    def reset(self) -> None:
        with self._lock:
            self._admitted.clear()


def retry_after_header(seconds: float) -> str:
    """Integer seconds, rounded up and at least 1 (``Retry-After: 0`` invites a hot loop)."""
    return str(max(1, math.ceil(seconds)))


def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` spelling: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs}s"
