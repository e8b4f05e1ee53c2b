"""Requests/min and tokens/min pacing for one (provider, model), with no start burst.

Unlike a leaky bucket that starts empty (aiolimiter admits ``max_rate`` requests at once),
requests here are spaced on a schedule from the first one on. Two more rules:

* no 1-second window ever holds more than ``ceil(rpm / 60)`` requests, even when the
  schedule catches up after a late wake-up;
* ``pause(seconds)`` (a 429's Retry-After) holds back every task using this limiter.

Tokens are paced against up to three limits: ``tpm`` (input + output tokens of a request,
OpenAI's kind and ``--tpm``), and ``input_tpm`` / ``output_tpm`` (Anthropic's separate
limits: each paces its own share of the request).

Clock and sleep are injectable, so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from .providers.base import RateLimitHints
from .retry import MAX_RETRY_AFTER

log = logging.getLogger(__name__)

__all__ = ["MIN_RATE", "RateLimiter"]

Clock = Callable[[], float]

# requests (or tokens) per minute, at the slowest: one an hour. A tinier rate paced the next
# request years away (1e-320: an infinite interval) and the caller waited for ever.
MIN_RATE = 1 / 60
MAX_PAUSE = MAX_RETRY_AFTER  # seconds; the same cap as the retry policy
LOUD_PAUSE = 5.0  # a pause at least this long is logged (a warning, once per pause)
CATCH_UP = 1.0  # intervals a late request may make up (the 1-s window cap still holds)
Sleep = Callable[[float], Awaitable[None]]


def _reset(seconds: float | None) -> float:
    """How long "none left" holds: the provider's reset, or 1 s when it gave none (or 0,
    a negative or NaN one, which paused for nothing)."""
    return seconds if seconds is not None and seconds > 0 else 1.0


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
        for name, rate in (("rpm", rpm), ("tpm", tpm)):
            if rate is not None and not rate >= MIN_RATE:  # NaN too
                raise ValueError(f"{name} must be >= {MIN_RATE:.4f} per minute, not {rate!r}")
        self._clock = clock
        self._sleep = sleep
        self._epoch = 0
        self._next_request = -math.inf
        # the token schedules of tpm, input_tpm and output_tpm (see _token_shares)
        self._next_token = [-math.inf] * 3
        self._paused_until = -math.inf
        # the schedule of the requests taken only (not of those still waiting): a pause
        # restarts the schedule, never before these allow
        self._last_taken = -math.inf
        self._taken_next_token = [-math.inf] * 3
        self._recent: deque[float] = deque()  # send times within the last second
        self.rpm = rpm
        self.tpm = tpm
        self.input_tpm: float | None = None
        self.output_tpm: float | None = None
        self.pauses = 0

    @property
    def _per_second(self) -> int | None:
        return None if self.rpm is None else max(1, math.ceil(self.rpm / 60.0))

    def pause(self, seconds: float) -> None:
        """Hold every task for ``seconds`` from now (a 429 with Retry-After).

        At most ``MAX_PAUSE`` seconds: the retry policy waits no longer than that either,
        and a provider's absurd or infinite value must not stall every task for good.
        """
        now = self._clock()
        wait = min(max(0.0, seconds), MAX_PAUSE)
        until = now + wait
        if wait >= LOUD_PAUSE and self._paused_until <= now:
            # said once per pause: a provider asking every request to wait minutes stalled
            # a harvest for 22 minutes with nothing on the console but "retries 30"
            asked = "" if wait == seconds else f" (it asked for {seconds:g} s)"
            log.warning("rate limited: every request waits %.0f s, as the provider asks%s",
                        wait, asked)
        if until > self._paused_until:
            self._paused_until = until
            # restart the schedule after the pause (slots reserved before it are taken
            # again behind it), but not before the requests already sent allow
            self._next_request = -math.inf
            self._next_token = [
                max(min(nxt, until), taken)
                for nxt, taken in zip(self._next_token, self._taken_next_token, strict=True)
            ]
            self._epoch += 1
            self.pauses += 1

    def update(self, hints: RateLimitHints) -> None:
        """Slow down on what the provider's headers say."""
        if hints.limit_requests is not None and hints.limit_requests > 0:
            self.rpm = min(self.rpm or math.inf, float(hints.limit_requests))
        if hints.limit_tokens is not None and hints.limit_tokens > 0:
            self.tpm = min(self.tpm or math.inf, float(hints.limit_tokens))
        if hints.limit_input_tokens is not None and hints.limit_input_tokens > 0:
            self.input_tpm = min(self.input_tpm or math.inf, float(hints.limit_input_tokens))
        if hints.limit_output_tokens is not None and hints.limit_output_tokens > 0:
            self.output_tpm = min(self.output_tpm or math.inf, float(hints.limit_output_tokens))
        if hints.remaining_requests is not None and hints.remaining_requests <= 0:
            self.pause(_reset(hints.reset_requests_s))
        if hints.remaining_tokens is not None and hints.remaining_tokens <= 0:
            self.pause(_reset(hints.reset_tokens_s))

    async def acquire(self, tokens: int = 0, output_tokens: int = 0) -> None:
        """Wait for this request's slot (``tokens`` in all, ``output_tokens`` of them
        output, the rest input).

        Each caller reserves its own slot on the schedule and sleeps until then, so
        wake-up latencies of many waiters do not add up. A pause (429) moves the
        schedule: callers that reserved before it reserve again behind it.
        """
        waiting = self.admit(tokens, output_tokens)
        if waiting is not None:
            await self.wait(waiting, tokens, output_tokens)

    def admit(self, tokens: int = 0, output_tokens: int = 0) -> tuple[int, float, float] | None:
        """The first step of :meth:`acquire`, which needs no await: reserve this request's
        slot and take it if it is due. None when taken; else what to hand :meth:`wait`.
        (A sender calls both itself: no coroutine for the usual request that does not
        wait, about 2 us of CPU.)"""
        epoch = self._epoch
        slot = self._reserve(self._clock(), tokens, output_tokens)
        now = self._clock()
        ready = max(slot, self._paused_until, self._window_ready())
        if ready > now:
            return epoch, slot, ready - now
        self._taken(now, slot, tokens, output_tokens)
        return None

    async def wait(
        self, waiting: tuple[int, float, float], tokens: int = 0, output_tokens: int = 0
    ) -> None:
        """Sleep until the slot :meth:`admit` reserved (``waiting``) is due, and take it."""
        epoch, slot, delay = waiting
        await self._sleep(delay)
        while True:
            now = self._clock()
            if self._epoch != epoch:  # paused meanwhile: queue again behind the pause
                epoch = self._epoch
                slot = self._reserve(now, tokens, output_tokens)
            ready = max(slot, self._paused_until, self._window_ready())
            if ready <= now:
                break
            await self._sleep(ready - now)
        self._taken(now, slot, tokens, output_tokens)

    def _token_shares(self, tokens: int, output_tokens: int) -> list[tuple[int, float]]:
        """(schedule index, seconds) each paced token limit needs for a request."""
        if tokens <= 0 or self.tpm is self.input_tpm is self.output_tpm is None:
            return []  # (the usual case: nothing to build for every request)
        shares = (tokens, tokens - output_tokens, output_tokens)
        rates = (self.tpm, self.input_tpm, self.output_tpm)
        return [
            (i, n * 60.0 / rate)
            for i, (rate, n) in enumerate(zip(rates, shares, strict=True))
            if rate is not None and n > 0
        ]

    def _taken(self, now: float, slot: float, tokens: int, output_tokens: int = 0) -> None:
        """A request reserved at ``slot`` is sent at ``now``."""
        if self.rpm is not None:  # the window only paces a request rate: unpaced, keep none
            self._recent.append(now)
            self._last_taken = now
        for i, seconds in self._token_shares(tokens, output_tokens):
            start = max(slot, self._taken_next_token[i])
            self._taken_next_token[i] = start + seconds

    def _window_ready(self) -> float:
        per_second = self._per_second
        if per_second is None or len(self._recent) < per_second:
            return -math.inf
        while len(self._recent) > per_second:
            self._recent.popleft()
        return self._recent[0] + 1.0

    def _reserve(self, now: float, tokens: int, output_tokens: int = 0) -> float:
        start = max(now, self._paused_until)
        slot = start
        if self.rpm is not None:
            interval = 60.0 / self.rpm
            # Keep the schedule, so that wake-up latency does not lower the rate, but
            # bank at most CATCH_UP intervals of idle time (and none at the start).
            if self._next_request == -math.inf:  # the start, or after a pause
                slot = max(start, self._last_taken + interval)
            else:
                slot = max(self._next_request, start - CATCH_UP * interval)
        shares = self._token_shares(tokens, output_tokens)
        for i, _ in shares:
            slot = max(slot, self._next_token[i])
        for i, seconds in shares:
            self._next_token[i] = slot + seconds
        if self.rpm is not None:
            self._next_request = slot + 60.0 / self.rpm
        return slot
