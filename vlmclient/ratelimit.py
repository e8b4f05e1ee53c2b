"""Requests/min and tokens/min pacing for one (provider, model), with no start burst.

Unlike a leaky bucket that starts empty (aiolimiter admits ``max_rate`` requests at once),
requests here are spaced on a schedule from the first one on. Two more rules:

* no 1-second window ever holds more than ``ceil(rpm / 60)`` requests, even when the
  schedule catches up after a late wake-up;
* ``pause(seconds)`` (a 429's Retry-After) holds back every task using this limiter.

Clock and sleep are injectable, so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from .providers.base import RateLimitHints

__all__ = ["RateLimiter"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Pace requests (and optionally tokens) per minute.

    >>> limiter = RateLimiter(rpm=600)          # one request every 0.1 s
    >>> await limiter.acquire(tokens=1200)      # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError("rpm and tpm must be positive")
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._next_request = -math.inf
        self._next_token = -math.inf
        self._paused_until = -math.inf
        self._recent: deque[float] = deque()
        self.rpm = rpm
        self.tpm = tpm
        self.pauses = 0

    @property
    def _per_second(self) -> int | None:
        return None if self.rpm is None else max(1, math.ceil(self.rpm / 60.0))

    def pause(self, seconds: float) -> None:
        """Hold every task for ``seconds`` from now (a 429 with Retry-After)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def update(self, hints: RateLimitHints) -> None:
        """Slow down on what the provider's headers say."""
        if hints.limit_requests is not None and hints.limit_requests > 0:
            self.rpm = min(self.rpm or math.inf, float(hints.limit_requests))
        if hints.limit_tokens is not None and hints.limit_tokens > 0:
            self.tpm = min(self.tpm or math.inf, float(hints.limit_tokens))
        if hints.remaining_requests is not None and hints.remaining_requests <= 0:
            self.pause(hints.reset_requests_s or 1.0)
        if hints.remaining_tokens is not None and hints.remaining_tokens <= 0:
            self.pause(hints.reset_tokens_s or 1.0)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait for this request's slot. Callers are served in arrival order."""
        async with self._lock:
            while True:
                now = self._clock()
                ready = max(self._next_request, self._next_token, self._paused_until)
                per_second = self._per_second
                if per_second is not None and len(self._recent) >= per_second:
                    ready = max(ready, self._recent[0] + 1.0)
                if ready <= now:
                    break
                await self._sleep(ready - now)
            self._admit(now, tokens)

    def _admit(self, now: float, tokens: int) -> None:
        if self.rpm is not None:
            interval = 60.0 / self.rpm
            # Keep the schedule (so wake-up latency does not lower the rate) but forgive
            # idle time: never bank more than one slot.
            slot = max(self._next_request, now - interval)
            self._next_request = slot + interval
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            per_second = self._per_second or 1
            while len(self._recent) > per_second:
                self._recent.popleft()
        if self.tpm is not None and tokens > 0:
            slot = max(self._next_token, now)
            self._next_token = slot + tokens * 60.0 / self.tpm
