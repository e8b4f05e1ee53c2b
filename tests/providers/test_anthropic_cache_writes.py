"""Anthropic bills prompt-cache writes above the input rate: 1.25x for the 5-minute
cache, 2x for the 1-hour one (reads at 0.1x). A library caller who marks a system
prompt with ``cache_control`` gets ``cache_creation_input_tokens`` in the usage; they
were charged at 1x, so the ledger said less than the provider billed. A loopback server
reports usage like Anthropic (with and without the per-TTL breakdown)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import anthropic_message, ask, loopback_client
from tests.providers.loopback import Loopback, loopback
from vlmclient import Price, TeacherClient

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
M = Decimal(1_000_000)
SYSTEM = [
    {
        "type": "text",
        "text": "Answer with the single digit the image shows. " * 200,
        "cache_control": {"type": "ephemeral"},
    }
]


def usage_with(usage: dict[str, Any]) -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, anthropic_message(usage, id="msg_cached")

    return respond


def haiku(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client(
        "anthropic:claude-haiku-5-5", server, "sk-ant-cache", price=PRICE, params=params
    )


@pytest.mark.parametrize(
    ("usage", "billed_input"),
    [
        # a 5-minute write: 2,000 tokens at 1.25x
        (
            {"input_tokens": 50, "output_tokens": 2, "cache_creation_input_tokens": 2000,
             "cache_creation": {"ephemeral_5m_input_tokens": 2000,
                                "ephemeral_1h_input_tokens": 0}},
            Decimal(50) + Decimal(2000) * Decimal("1.25"),
        ),
        # a 1-hour write at 2x
        (
            {"input_tokens": 50, "output_tokens": 2, "cache_creation_input_tokens": 2000,
             "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                "ephemeral_1h_input_tokens": 2000}},
            Decimal(50) + Decimal(2000) * 2,
        ),
        # no breakdown: the dearer rate (it can only over-charge)
        (
            {"input_tokens": 50, "output_tokens": 2, "cache_creation_input_tokens": 2000},
            Decimal(50) + Decimal(2000) * 2,
        ),
        # a read of the cache: at most 1x (never less than billed)
        (
            {"input_tokens": 50, "output_tokens": 2, "cache_read_input_tokens": 2000},
            Decimal(50) + Decimal(2000),
        ),
    ],
)
async def test_cache_writes_are_charged_at_their_premium(
    usage: dict[str, Any], billed_input: Decimal
) -> None:
    with loopback(usage_with(usage)) as server:
        client = haiku(server, {"system": SYSTEM})
        async with client:
            [answer] = await client.answer([ask()])
    assert answer.text == "7"
    assert server.bodies[0]["system"] == SYSTEM
    billed = (billed_input * PRICE.usd_per_1m_input_tokens + 2 * PRICE.usd_per_1m_output_tokens) / M
    assert client.budget.spent >= billed
    assert client.budget.spent - billed < Decimal("0.000001")  # rounded up by a token at most
    assert client.overrun is None


def cache_the_whole_prompt(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Anthropic with a top-level ``cache_control`` (automatic caching: the whole prompt,
    image included, is written to the cache): the prompt's tokens, counted by the area rule
    the estimate also uses, are billed as a 1-hour cache write, at 2x."""
    from vlmclient.providers.anthropic import image_tokens as tokens_of

    written = tokens_of(1568, 1176) + 40
    usage = {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": written,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": written},
    }
    return 200, anthropic_message(usage, id="msg_auto")


async def test_a_cache_write_of_the_whole_prompt_is_reserved() -> None:
    """A caller's ``cache_control`` made the prompt, image included, a cache write billed at
    up to 2x the input rate, while the reservation counted it at 1x: an overrun on every
    large image."""
    with loopback(cache_the_whole_prompt) as server:
        client = haiku(server, {"cache_control": {"type": "ephemeral", "ttl": "1h"}})
        async with client:
            [answer] = await client.answer([ask("Digit?", size=(1568, 1176))])
    assert answer.text == "7"
    assert server.bodies[0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert client.overrun is None and client.budget.overruns == 0
