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
