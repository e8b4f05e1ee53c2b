"""Anthropic limits input and output tokens per minute separately
(``anthropic-ratelimit-input-tokens-*``, ``-output-tokens-*``; its ``-tokens-*`` window
repeats the most restrictive limit in effect). The client folded them into one figure,
the smallest (often the output limit: 8,000/min at tier 1), and paced input + output
tokens against it: image prompts, which are nearly all input, went 3-5x slower than the
limits allow. A loopback server answers with Anthropic's headers; the limiter runs on a
fake clock, so the schedule it computes is read, not timed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import FakeClock
from tests.providers.conftest import image, loopback_client
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Price
from vlmclient.providers import anthropic
from vlmclient.providers.anthropic import ANTHROPIC
from vlmclient.providers.base import CallSpec
from vlmclient.ratelimit import RateLimiter

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
INPUT_LIMIT, OUTPUT_LIMIT = 40_000, 8_000
HEADERS = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-input-tokens-limit": str(INPUT_LIMIT),
    "anthropic-ratelimit-input-tokens-remaining": "39000",
    "anthropic-ratelimit-output-tokens-limit": str(OUTPUT_LIMIT),
    "anthropic-ratelimit-output-tokens-remaining": "7990",
    # the most restrictive limit in effect: the output one
    "anthropic-ratelimit-tokens-limit": str(OUTPUT_LIMIT),
    "anthropic-ratelimit-tokens-remaining": "7990",
}


def ask(n: int, max_output_tokens: int = 16) -> AnswerRequest:
    return AnswerRequest(
        image=image((1568, 1176), seed=n),
        prompt="Which digit?",
        max_output_tokens=max_output_tokens,
    )


def estimate(item: AnswerRequest) -> tuple[int, int]:
    """(input, output) tokens the client reserves and paces for ``item``."""
    prepared = item.model_copy(update={"image": ANTHROPIC.prepare_image(item.image)})
    spec = CallSpec("answer", "claude-haiku-4-5", [prepared], base_url="", api_key=SecretStr("x"))
    usage = ANTHROPIC.estimate_usage(spec)
    return usage.input_tokens + usage.image_tokens, usage.output_tokens


def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    return (
        200,
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "7"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1600, "output_tokens": 2},
        },
        HEADERS,
    )


async def paced(items: list[AnswerRequest]) -> tuple[list[float], RateLimiter]:
    """The waits the limiter computed for ``items`` sent one after another."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    with loopback(respond) as server:
        async with loopback_client(
            "anthropic:claude-haiku-4-5",
            server,
            "sk-ant-limits",
            price=PRICE,
            concurrency=1,
            limiter=limiter,
        ) as client:
            answers = await client.answer(items)
    assert [a.text for a in answers] == ["7"] * len(items)
    return clock.sleeps, limiter


async def test_input_heavy_requests_are_paced_by_the_input_limit() -> None:
    """Before: paced at 8,000 tokens/min for input + output (18.8 s between these
    requests); now input at 40,000/min and output at 8,000/min, each its own share
    (3.7 s)."""
    items = [ask(n) for n in range(3)]
    sleeps, limiter = await paced(items)
    tokens_in, tokens_out = estimate(items[0])
    assert tokens_in > 10 * tokens_out  # an image prompt: nearly all input
    # the first request taught the limits; the second went at once; the third waits for
    # the second's input tokens at the input limit (its output share is due sooner)
    assert sleeps == [pytest.approx(tokens_in * 60 / INPUT_LIMIT)]
    assert sleeps[0] < (tokens_in + tokens_out) * 60 / OUTPUT_LIMIT / 3  # was that
    assert (limiter.input_tpm, limiter.output_tpm, limiter.tpm) == (INPUT_LIMIT, OUTPUT_LIMIT, None)


async def test_output_tokens_are_paced_by_the_output_limit() -> None:
    """A request reserving many output tokens waits for them at the output limit."""
    items = [ask(n, max_output_tokens=4000) for n in range(3)]
    sleeps, _ = await paced(items)
    tokens_in, tokens_out = estimate(items[0])
    assert tokens_out * 60 / OUTPUT_LIMIT > tokens_in * 60 / INPUT_LIMIT
    assert sleeps == [pytest.approx(tokens_out * 60 / OUTPUT_LIMIT)]


def hints(headers: dict[str, str]) -> Any:
    return anthropic.rate_limit_hints(httpx.Headers(headers))


def test_a_missing_window_keeps_the_conservative_combined_limit() -> None:
    """Without the output (or input) limit, the smallest limit given paces input +
    output, as before; a tokens limit below both split ones still paces them together."""
    no_output = {k: v for k, v in HEADERS.items() if "output" not in k}
    h = hints(no_output)
    assert (h.limit_tokens, h.limit_input_tokens, h.limit_output_tokens) == (
        OUTPUT_LIMIT,
        None,
        None,  # the tokens window's 8,000 (input + output)
    )
    only_input = {k: v for k, v in no_output.items() if "-tokens-" not in k or "input" in k}
    h = hints(only_input)
    assert (h.limit_tokens, h.limit_input_tokens, h.limit_output_tokens) == (
        INPUT_LIMIT,
        None,
        None,
    )
    tighter = {**HEADERS, "anthropic-ratelimit-tokens-limit": "5000"}
    h = hints(tighter)
    assert (h.limit_tokens, h.limit_input_tokens, h.limit_output_tokens) == (
        5000,
        INPUT_LIMIT,
        OUTPUT_LIMIT,
    )
