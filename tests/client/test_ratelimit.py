"""Rate limiter: paced from the start, exact over time, no 1-second window above target."""

from __future__ import annotations

import asyncio
import itertools
import logging

import httpx
import pytest

from tests.conftest import FakeClock, FakeCohere, make_image_requests
from vlmclient import RateLimiter, RetryPolicy, TeacherClient
from vlmclient.providers.base import RateLimitHints


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window + 1e-9:  # float noise of the fake clock
            j += 1
        best = max(best, i - j + 1)
    return best


async def run_workers(limiter: RateLimiter, clock: FakeClock, n: int, workers: int) -> list[float]:
    stamps: list[float] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            queue.pop()
            await limiter.acquire()
            stamps.append(clock())

    await asyncio.gather(*(worker() for _ in range(workers)))
    return stamps


@pytest.mark.parametrize("rpm", [60, 600, 3000, 90])
async def test_rate_within_2_percent_and_no_window_above(fake_clock: FakeClock, rpm: int) -> None:
    limiter = RateLimiter(rpm=rpm, clock=fake_clock, sleep=fake_clock.sleep)
    n = max(200, rpm // 2)
    stamps = await run_workers(limiter, fake_clock, n, workers=64)
    duration = stamps[-1] - stamps[0]
    achieved = (n - 1) / duration * 60
    assert abs(achieved - rpm) / rpm <= 0.02
    per_second = -(-rpm // 60)
    assert max_in_window(stamps) <= per_second
    # no burst at start: the second request waits a full interval
    assert stamps[1] - stamps[0] == pytest.approx(60 / rpm)


async def test_default_clock_and_sleep_are_the_real_ones() -> None:
    """Without injected ones the limiter paces on time.monotonic and asyncio.sleep.

    Only that it works: the pace on the real clock is measured by
    benchmarks/client_throughput.py (achieved / limit), not asserted here.
    """
    limiter = RateLimiter(rpm=6000)  # one request every 10 ms
    for _ in range(3):
        await asyncio.wait_for(limiter.acquire(), timeout=30)  # a guard against a hang


async def test_tokens_per_minute(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(tpm=60_000, clock=fake_clock, sleep=fake_clock.sleep)
    start = fake_clock()
    for _ in range(11):
        await limiter.acquire(tokens=1000)  # 1,000 tokens/s allowed
    assert fake_clock() - start == pytest.approx(10.0)


async def test_pause_holds_every_task(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=6000, clock=fake_clock, sleep=fake_clock.sleep)
    await limiter.acquire()
    limiter.pause(30)
    t0 = fake_clock()
    stamps = await run_workers(limiter, fake_clock, 5, workers=5)
    assert min(stamps) >= t0 + 30


async def test_a_long_pause_is_said_once_with_what_the_provider_asked(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a provider answering 429 with Retry-After: 86400 stalled a harvest for 22
    minutes with nothing said but the retry count."""
    limiter = RateLimiter(rpm=6000, clock=fake_clock, sleep=fake_clock.sleep)
    with caplog.at_level(logging.WARNING, logger="vlmclient.ratelimit"):
        limiter.pause(86400)
        limiter.pause(86400)  # the same pause: not said again
        limiter.pause(1)  # short: not said
    said = [r.getMessage() for r in caplog.records]
    assert said == ["rate limited: every request waits 120 s, as the provider asks "
                    "(it asked for 86400 s)"]
    fake_clock.now += 121
    with caplog.at_level(logging.WARNING, logger="vlmclient.ratelimit"):
        limiter.pause(30)  # a new pause after the first ended
    assert caplog.records[-1].getMessage().startswith("rate limited: every request waits 30 s")


async def test_headers_slow_it_down(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=6000, clock=fake_clock, sleep=fake_clock.sleep)
    limiter.update(RateLimitHints(limit_requests=600, remaining_requests=0, reset_requests_s=2.0))
    assert limiter.rpm == 600
    t0 = fake_clock()
    await limiter.acquire()
    assert fake_clock() >= t0 + 2.0


async def test_429_retry_after_pauses_all_tasks_of_the_client(fake_clock: FakeClock) -> None:
    """One 429 with Retry-After: every other task waits too, not only the one that got it."""
    fake = FakeCohere()
    stamps: list[float] = []

    def too_many(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"})

    async def record(request: httpx.Request) -> httpx.Response:
        stamps.append(fake_clock())
        return await fake.handler(request)

    fake.faults = [too_many]
    limiter = RateLimiter(rpm=6000, clock=fake_clock, sleep=fake_clock.sleep)
    async with TeacherClient(
        "local:hash",
        api_key="k",
        transport=httpx.MockTransport(record),
        limiter=limiter,
        retry=RetryPolicy(sleep=fake_clock.sleep),
        concurrency=1,
    ) as client:
        reqs = make_image_requests(4)
        await asyncio.gather(*(client.embed_images([r]) for r in reqs))
    first = stamps[0]
    assert all(t >= first + 7 for t in stamps[1:])
    assert limiter.pauses == 1


@pytest.mark.parametrize("tpm", [None, 10**12])
async def test_an_unpaced_limiter_holds_no_memory_per_request(tpm: float | None) -> None:
    """Without a request rate the limiter kept every send time it had ever seen (one float
    per request, for the life of the client: about 3 MB per 100,000 requests)."""
    import tracemalloc

    limiter = RateLimiter(tpm=tpm)  # the real clock: a fake one records every sleep
    for _ in range(1_000):  # warm: first-call allocations are not growth
        await limiter.acquire(tokens=1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            await limiter.acquire(tokens=1)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes kept after 50,000 requests"


@pytest.mark.parametrize("limit", ["rpm", "tpm"])
async def test_a_short_429_pause_does_not_let_requests_past_the_rate(
    fake_clock: FakeClock, limit: str
) -> None:
    """rpm=6 (or a tpm allowing one such request every 10 s), and the provider answers a
    429 with Retry-After: 1. The pause restarted the schedule at its end, so the retry
    went 1 s after the request it retried: two requests in a second under a limit of one
    every 10 s (and a 429 sped the client up). A pause only ever holds requests back."""
    from tests.providers.loopback import loopback
    from vlmclient import TextEmbeddingRequest

    stamps: list[float] = []

    def respond(
        path: str, body: dict[str, list[str]]
    ) -> tuple[int, dict[str, object], dict[str, str]]:
        stamps.append(fake_clock())
        if len(stamps) == 2:
            return 429, {"message": "slow down"}, {"Retry-After": "1"}
        n = len(body["texts"])
        return 200, {"id": "r", "embeddings": {"float": [[1.0, 0.0]] * n},
                     "meta": {"billed_units": {"input_tokens": n}}}, {}  # fmt: skip

    texts = [TextEmbeddingRequest(text=t) for t in ("a cat", "a dog", "a cow")]
    tokens = 6  # what the hash teacher reserves for each of these texts (bytes + 1)
    rate = {"rpm": 6.0} if limit == "rpm" else {"tpm": tokens * 6.0}
    limiter = RateLimiter(**rate, clock=fake_clock, sleep=fake_clock.sleep)  # type: ignore[arg-type]
    with loopback(respond) as server:
        async with TeacherClient(
            "local:hash", api_key="tok-12345678", base_url=server.url, batch_size=1,
            concurrency=1, limiter=limiter, retry=RetryPolicy(sleep=fake_clock.sleep),
        ) as client:  # fmt: skip
            for text in texts:
                await client.embed_texts([text])
    assert len(stamps) == 4 and limiter.pauses == 1
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 10.0 - 1e-6, gaps


@pytest.mark.parametrize("reset", ["-5", "nan", "-inf"])
async def test_none_remaining_pauses_even_when_the_reset_is_nonsense(
    fake_clock: FakeClock, reset: str
) -> None:
    """A 200 saying x-ratelimit-remaining-requests: 0 with a reset of -5, nan or -inf
    (parsed as seconds) paused for 0 s: the provider's "none left" was ignored and the
    next request went at once, into a 429. Such a reset says nothing: wait 1 s."""
    from tests.providers.loopback import loopback
    from vlmclient import TextEmbeddingRequest

    stamps: list[float] = []

    def respond(
        path: str, body: dict[str, list[str]]
    ) -> tuple[int, dict[str, object], dict[str, str]]:
        stamps.append(fake_clock())
        n = len(body["texts"])
        return 200, {"id": "r", "embeddings": {"float": [[1.0, 0.0]] * n},
                     "meta": {"billed_units": {"input_tokens": n}}}, {
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset,
        }  # fmt: skip

    limiter = RateLimiter(clock=fake_clock, sleep=fake_clock.sleep)
    with loopback(respond) as server:
        async with TeacherClient(
            "local:hash", api_key="tok-12345678", base_url=server.url, concurrency=1,
            limiter=limiter, retry=RetryPolicy(sleep=fake_clock.sleep),
        ) as client:  # fmt: skip
            for text in ("a cat", "a dog"):
                await client.embed_texts([TextEmbeddingRequest(text=text)])
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 1.0
