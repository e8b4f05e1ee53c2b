"""The retry policy: bounded, only for errors that time can fix, honouring Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from .errors import (
    APIConnectionError,
    InternalServerError,
    OverloadedError,
    RateLimitError,
    RequestTimeoutError,
    TruncatedAnswerError,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "RetryPolicy",
    "is_retryable",
]

DEFAULT_MAX_ATTEMPTS = 4  # one try and three retries
INITIAL_RETRY_DELAY = 0.5  # seconds, doubled per retry
MAX_RETRY_DELAY = 8.0  # cap of the exponential backoff
MAX_RETRY_AFTER = 120.0  # cap on a provider's Retry-After / retryDelay
OVERLOAD_FACTOR = 2.0  # 503/529 wait twice as long as other 5xx

_RETRYABLE = (
    APIConnectionError,  # includes timeouts
    RateLimitError,
    OverloadedError,
    InternalServerError,
    RequestTimeoutError,
)


def is_retryable(exc: BaseException) -> bool:
    """By status only: timeouts (a 408 too), connection errors, rate-limit 429s, 5xx/529.

    Never: 400/401/403/404/413/501, quota-exhausted 429s, Jina's 402, budget errors, and
    never a 200 we could not use (``ResponseValidationError``, including an answer cut
    empty at the token limit): it was billed, and the same request would most likely be
    answered, and billed, the same way again.
    """
    if isinstance(exc, TruncatedAnswerError):
        return False
    return isinstance(exc, _RETRYABLE)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``sleep`` is injectable for tests."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    jitter: float = 0.25  # fraction of the backoff removed at random
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        """Delay before retry number ``attempt`` (1-based) after ``exc``."""
        retry_after = getattr(exc, "retry_after", None)
        # A Retry-After of 0, below 0 or a date already past (a gateway's "0", a clock
        # behind ours) says nothing: taken as it was, every retry went at once
        if retry_after is not None and float(retry_after) > 0:
            return min(float(retry_after), self.max_retry_after)
        delay: float = min(self.initial_delay * 2.0 ** (attempt - 1), self.max_delay)
        if isinstance(exc, OverloadedError):
            delay = min(delay * OVERLOAD_FACTOR, self.max_delay * OVERLOAD_FACTOR)
        return delay * (1.0 - self.jitter * random.random())

    def retrying(self, *, attempts_made: int = 0) -> AsyncRetrying:
        """The tenacity loop of the attempts left after ``attempts_made`` (made by the
        caller, which also waited after the last of them): at most ``max_attempts`` in
        all, each wait as if the loop had made every attempt."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.wait_seconds(state.attempt_number + attempts_made, exc)

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts - attempts_made),
            retry=retry_if_exception(is_retryable),
            wait=wait,
            sleep=self.sleep,
            reraise=True,
        )
