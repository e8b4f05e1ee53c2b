"""Retry policy: bounded, only for what time can fix, honouring Retry-After up to a cap."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from tests.conftest import FakeClock, FakeCohere, make_image_requests
from vlmclient import (
    APIStatusError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimiter,
    RateLimitError,
    RetryPolicy,
    TeacherClient,
    TextEmbeddingRequest,
)
from vlmclient.providers.wire import parse_retry_after
from vlmclient.retry import MAX_RETRY_AFTER


def json_fault(status: int, body: dict, headers: dict | None = None):  # type: ignore[no-untyped-def]
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers or {})

    return respond


async def run(fake: FakeCohere, clock: FakeClock, teacher: str = "local:hash", attempts: int = 4):  # type: ignore[no-untyped-def]
    async with TeacherClient(
        teacher,
        api_key="k",
        transport=fake.transport(),
        retry=RetryPolicy(max_attempts=attempts, sleep=clock.sleep),
        limiter=RateLimiter(clock=clock, sleep=clock.sleep),
    ) as client:
        return await client.embed_images(make_image_requests(1)), client


@pytest.mark.parametrize("status", [429, 500, 502, 503, 529])
async def test_retryable_statuses_are_retried(fake_clock: FakeClock, status: int) -> None:
    fake = FakeCohere()
    fake.faults = [status, status]
    out, client = await run(fake, fake_clock)
    assert len(out) == 1 and client.stats.retries == 2 and len(fake.requests) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, APIStatusError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (501, NotFoundError),  # not implemented: was retried like a 500 until 2026-12-06
    ],
)
async def test_client_errors_are_not_retried(
    fake_clock: FakeClock, status: int, error: type
) -> None:
    fake = FakeCohere()
    fake.faults = [status]
    with pytest.raises(error):
        await run(fake, fake_clock)
    assert len(fake.requests) == 1 and fake_clock.sleeps == []


async def test_insufficient_quota_429_is_not_retried(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [
        json_fault(
            429, {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}}
        )
    ]
    with pytest.raises(QuotaExceededError, match="insufficient_quota"):
        await run(fake, fake_clock)
    assert len(fake.requests) == 1


async def test_retries_are_bounded(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [500] * 10
    with pytest.raises(InternalServerError):
        await run(fake, fake_clock, attempts=3)
    assert len(fake.requests) == 3


async def test_retry_after_seconds_is_honoured(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [json_fault(429, {"message": "slow"}, {"Retry-After": "3"})]
    await run(fake, fake_clock)
    assert 3.0 in fake_clock.sleeps


async def test_retry_after_ms_wins(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [
        json_fault(429, {"message": "slow"}, {"retry-after-ms": "1500", "Retry-After": "9"})
    ]
    await run(fake, fake_clock)
    assert 1.5 in fake_clock.sleeps


async def test_retry_after_is_capped(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [json_fault(503, {"message": "busy"}, {"Retry-After": "100000"})]
    await run(fake, fake_clock)
    assert max(fake_clock.sleeps) == MAX_RETRY_AFTER


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = parse_retry_after(httpx.Headers({"Retry-After": when}))
    assert got is not None and 28 <= got <= 31
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy()
    waits = [policy.wait_seconds(n, InternalServerError("x", status_code=500)) for n in range(1, 9)]
    assert 0.375 <= waits[0] <= 0.5 and 0.75 <= waits[1] <= 1.0
    assert max(waits) <= policy.max_delay
    assert policy.wait_seconds(1, OverloadedError("x", status_code=529)) >= 0.75
    assert policy.wait_seconds(1, RateLimitError("x", status_code=429, retry_after=2.0)) == 2.0


async def test_timeouts_are_retried(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = ["timeout"]
    out, client = await run(fake, fake_clock)
    assert len(out) == 1 and client.stats.retries == 1


async def test_each_retry_waits_the_policy_backoff_for_its_attempt(fake_clock: FakeClock) -> None:
    # the first attempt runs outside tenacity, the retries inside it: the waits are
    # still those of attempts 1, 2 and 3, and every attempt is counted
    fake = FakeCohere()
    fake.faults = [500, 500, 500]
    out, client = await run(fake, fake_clock, attempts=4)
    assert len(out) == 1 and len(fake.requests) == 4
    assert client.stats.retries == 3 and client.stats.failures == 3
    first, second, third = fake_clock.sleeps
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0 and 1.5 <= third <= 2.0


async def test_one_attempt_means_no_retry(fake_clock: FakeClock) -> None:
    fake = FakeCohere()
    fake.faults = [503]
    with pytest.raises(OverloadedError):
        await run(fake, fake_clock, attempts=1)
    assert len(fake.requests) == 1 and fake_clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, "0"), (429, "-5"), (429, "Wed, 21 Oct 2015 07:28:00 GMT"), (503, "0")],
)
async def test_a_retry_after_of_zero_or_in_the_past_still_backs_off(
    status: int, retry_after: str
) -> None:
    """A provider (or a gateway, or a clock behind ours) saying 'Retry-After: 0', a
    negative value or a date already past made every retry go at once: four requests in
    the same instant, then the item failed. Such a value says nothing: back off."""
    from tests.providers.loopback import loopback

    def respond(path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        return status, {"message": "slow down"}, {"Retry-After": retry_after}

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with loopback(respond) as server:
        async with TeacherClient(
            "local:hash",
            api_key="tok-12345678",
            base_url=server.url,
            retry=RetryPolicy(sleep=sleep),
            limiter=RateLimiter(sleep=sleep),
        ) as client:
            with pytest.raises((RateLimitError, OverloadedError)):
                await client.embed_texts([TextEmbeddingRequest(text="a photo of a cat")])
    assert len(server.requests) == 4 and client.budget.spent == 0
    # the policy's backoff for attempts 1, 2 and 3 (503 waits twice as long)
    factor = 2.0 if status == 503 else 1.0
    assert len(sleeps) == 3
    for n, wait in enumerate(sleeps):
        assert 0.375 * 2**n * factor <= wait <= 0.5 * 2**n * factor
