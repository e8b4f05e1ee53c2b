"""Seeded fault draws and the server-side requests-per-minute limit."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum

from .config import Faults

__all__ = ["Fault", "FaultPlan", "SlidingWindowLimiter"]


class Fault(str, Enum):
    NONE = "none"
    FAIL_500 = "500"
    FAIL_503 = "503"
    FAIL_529 = "529"
    DROP = "drop"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    WRONG_DIM = "wrong_dim"


# Faults that answer before any work is done, so nothing is billed.
UNBILLED = frozenset({Fault.FAIL_500, Fault.FAIL_503, Fault.FAIL_529})


class FaultPlan:
    """One seeded uniform draw per request, mapped onto the configured fractions.

    >>> plan = FaultPlan(Faults(fail_500=1.0))
    >>> plan.draw()
    <Fault.FAIL_500: '500'>
    """

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(faults.seed)
        self._table = [
            (Fault.FAIL_500, faults.fail_500),
            (Fault.FAIL_503, faults.fail_503),
            (Fault.FAIL_529, faults.fail_529),
            (Fault.DROP, faults.drop),
            (Fault.TIMEOUT, faults.timeout),
            (Fault.MALFORMED, faults.malformed),
            (Fault.WRONG_DIM, faults.wrong_dim),
        ]
        self.active = any(frac > 0 for _, frac in self._table)

    def draw(self) -> Fault:
        if not self.active:
            return Fault.NONE
        with self._lock:
            u = self._rng.random()
        edge = 0.0
        for fault, frac in self._table:
            edge += frac
            if u < edge:
                return fault
        return Fault.NONE


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
