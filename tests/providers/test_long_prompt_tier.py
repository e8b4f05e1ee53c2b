"""A long-prompt price tier (Claude Haiku 5.5: prompts over 100,000 tokens cost 5x): the
client reserves and charges a request at the tier its prompt falls in, through the real
``TeacherClient`` against a loopback server that bills like Anthropic."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from distill.cli import main
from tests.providers.conftest import anthropic_message, ask, loopback_client, nosleep
from tests.providers.loopback import loopback
from vlmclient.models import Price, Usage
from vlmclient.prices import PriceTable
from vlmclient.retry import RetryPolicy

M = Decimal(1_000_000)


def _respond_with(input_tokens: int) -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, anthropic_message({"input_tokens": input_tokens, "output_tokens": 4})

    return respond


@pytest.mark.parametrize(
    ("prompt", "billed_input", "rate_in", "rate_out"),
    [
        ("Which digit?", 30, Decimal("0.10"), Decimal("0.50")),
        ("x" * 120_000, 100_000, Decimal("0.10"), Decimal("0.50")),  # the limit is "up to"
        ("x" * 120_000, 100_001, Decimal("0.50"), Decimal("2.50")),
    ],
)
async def test_haiku_5_5_is_charged_at_its_prompts_tier(
    prompt: str, billed_input: int, rate_in: Decimal, rate_out: Decimal
) -> None:
    with loopback(_respond_with(billed_input)) as server:
        client = loopback_client(
            "anthropic:claude-haiku-5-5",  # the built-in price, tiers and all
            server,
            "sk-ant-test",
            retry=RetryPolicy(sleep=nosleep),
        )
        async with client:
            answers = await client.answer([ask(prompt)])
        assert answers[0].text == "7"
        assert client.overrun is None
        assert client.budget.spent == (billed_input * rate_in + 4 * rate_out) / M
    assert server.bodies[0]["model"] == "claude-haiku-5-5"


def test_a_tier_never_bills_below_the_base_rates() -> None:
    # a price file that gives the threshold but forgets the long rates must not make long
    # prompts cheaper (or free)
    price = Price(
        usd_per_1m_input_tokens=Decimal("1"),
        usd_per_1m_output_tokens=Decimal("2"),
        long_prompt_above_tokens=10,
    )
    assert price.cost(Usage(input_tokens=11, output_tokens=1)) == Decimal(13) / M


def test_providers_lists_the_long_prompt_tier(capsys: pytest.CaptureFixture[str]) -> None:
    assert PriceTable.default().prices["anthropic:claude-haiku-5-5"].long_prompt_above_tokens
    assert main(["providers", "--json"]) == 0
    out = capsys.readouterr().out
    assert "claude-haiku-5-5" in out
    assert "prompts over 100,000 tok: $0.50/M input + $2.50/M output" in out


# -- surcharges do not move a prompt into the long tier --------------------------------
# The tier is decided by the prompt's size ("for prompts up to 100,000 tokens"; ">272K input
# tokens"); US-only inference ("billed at 1.1x standard API rates") and cache writes (1.25x,
# 2x for an hour) are multipliers on the rates of the tier the prompt is in. The client
# folded them into the input tokens and then decided the tier on that count: a 92,000-token
# prompt run in the US was charged 5x (as if 101,200 tokens long), and the reservation too.


def haiku_bill(prompt: int, written_1h: int, geo: bool) -> Decimal:
    """What Anthropic bills Claude Haiku 5.5 for a prompt of ``prompt`` tokens of which
    ``written_1h`` are written to the 1-hour cache, and 4 output tokens."""
    long = prompt > 100_000
    rate_in, rate_out = (Decimal("0.50"), Decimal("2.50")) if long else (
        Decimal("0.10"), Decimal("0.50"))  # fmt: skip
    bill = ((prompt - written_1h) * rate_in + 2 * written_1h * rate_in + 4 * rate_out) / M
    return bill * Decimal("1.1") if geo else bill


@pytest.mark.parametrize(
    ("usage", "params", "prompt", "written_1h", "geo"),
    [
        ({"input_tokens": 92_000, "output_tokens": 4, "inference_geo": "us"},
         {"inference_geo": "us"}, 92_000, 0, True),
        ({"input_tokens": 10_000, "output_tokens": 4, "cache_creation_input_tokens": 60_000,
          "cache_creation": {"ephemeral_1h_input_tokens": 60_000}},
         {"system": [{"type": "text", "text": "Digits.", "cache_control": {"ttl": "1h"}}]},
         70_000, 60_000, False),
    ],
)  # fmt: skip
async def test_haiku_5_5_surcharges_keep_a_short_prompt_in_the_short_tier(
    usage: dict[str, Any], params: dict[str, Any], prompt: int, written_1h: int, geo: bool
) -> None:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, anthropic_message(usage)

    with loopback(respond) as server:
        client = loopback_client(
            "anthropic:claude-haiku-5-5", server, "sk-ant-test", params=params,
            retry=RetryPolicy(sleep=nosleep),
        )  # fmt: skip
        async with client:
            _, reserved = client.plan("answer", [ask("x" * prompt)])
            [answer] = await client.answer([ask("x" * prompt)])
    assert answer.text == "7"
    billed = haiku_bill(prompt, written_1h, geo)
    # each count rounded up to a whole token at most
    assert billed <= client.budget.spent < billed + Decimal("0.000002")
    assert reserved < 2 * billed  # reserved in the short tier too (the long one is 5x)
    assert client.overrun is None and client.budget.overruns == 0


async def test_luna_cache_write_surcharges_keep_a_short_prompt_in_the_short_tier() -> None:
    """gpt-5.6-luna: a 250,000-token prompt written to the cache (a caller's implicit
    caching) is billed at the standard rates, 1.25x on the written tokens; it was charged
    as a 312,500-token prompt, past the 272K line, at 2x input and 1.5x output."""
    from tests.providers.test_gpt56_luna import bill_like_luna, luna

    respond = bill_like_luna(250_000)
    with loopback(respond) as server:
        async with luna(server, {"prompt_cache_options": {"mode": "implicit"}}) as client:
            _, reserved = client.plan("answer", [ask("x" * 249_000)])
            await client.answer([ask("x" * 249_000)])
    billed = sum(respond.bills)
    assert billed <= client.budget.spent < billed + Decimal("0.000001")
    assert reserved < Decimal("1.5") * billed
    assert client.overrun is None and client.budget.overruns == 0
