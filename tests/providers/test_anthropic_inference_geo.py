"""US-only inference at Anthropic is billed at 1.1x the standard rates (Opus 4.6, Sonnet
4.6 and later; support.claude.com "Enable US-only inference": "billed at 1.1x standard
API rates"), asked per request with ``inference_geo: "us"`` or set as a workspace's
default; the response's ``usage.inference_geo`` says where it ran, with the same token
counts. The client charged the standard rates: the ledger recorded about 9% less than
Anthropic billed, and a caller's ``inference_geo`` was not in the reservation. A
loopback server bills like Anthropic.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from tests.providers.conftest import anthropic_message, ask, loopback_client
from tests.providers.loopback import Loopback, loopback
from vlmclient import Price, TeacherClient
from vlmclient.providers.anthropic import ANTHROPIC
from vlmclient.providers.base import CallSpec

PRICE = Price(usd_per_1m_input_tokens=Decimal("2"), usd_per_1m_output_tokens=Decimal("10"))
M = Decimal(1_000_000)
BIG = (1568, 1176)  # the largest image sent without downscaling (long edge 1568 px)


def worst_case() -> tuple[int, int]:
    """(input, output) tokens of the estimate without inference_geo: the most a request
    can bill at the standard rates."""
    item = ask(size=BIG)
    prepared = item.model_copy(update={"image": ANTHROPIC.prepare_image(item.image)})
    spec = CallSpec("answer", "claude-sonnet-5-5", [prepared], base_url="", api_key=SecretStr("x"))
    usage = ANTHROPIC.estimate_usage(spec)
    return usage.input_tokens, usage.output_tokens


def bill_in(geo: str, tokens: tuple[int, int]) -> Any:
    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        usage = {"input_tokens": tokens[0], "output_tokens": tokens[1], "inference_geo": geo}
        return 200, anthropic_message(usage, id="msg_geo")

    return respond


def client_with(server: Loopback, params: dict[str, Any]) -> TeacherClient:
    return loopback_client(
        "anthropic:claude-sonnet-5-5", server, "sk-ant-geo", price=PRICE, params=params
    )


def standard(tokens: tuple[int, int]) -> Decimal:
    return (
        tokens[0] * PRICE.usd_per_1m_input_tokens + tokens[1] * PRICE.usd_per_1m_output_tokens
    ) / M


@pytest.mark.parametrize("params", [{"inference_geo": "us"}, {}])  # asked, or the workspace's
async def test_us_only_inference_is_charged_at_its_rate(params: dict[str, Any]) -> None:
    tokens = (1_500, 16)
    with loopback(bill_in("us", tokens)) as server:
        async with client_with(server, params) as client:
            [answer] = await client.answer([ask(size=BIG)])
    assert answer.text == "7"
    billed = standard(tokens) * Decimal("1.1")
    assert billed <= client.budget.spent < billed + Decimal("0.00002")  # a token up at most
    assert client.overrun is None


async def test_a_callers_inference_geo_is_reserved_at_its_rate() -> None:
    """A request billed at the estimate's own worst case, run in the US: no overrun."""
    tokens = worst_case()
    with loopback(bill_in("us", tokens)) as server:
        async with client_with(server, {"inference_geo": "us"}) as client:
            await client.answer([ask(size=BIG)])
    assert server.bodies[0]["inference_geo"] == "us"
    assert client.overrun is None and client.budget.overruns == 0


async def test_global_inference_is_charged_the_standard_rates() -> None:
    tokens = (1_500, 16)
    with loopback(bill_in("global", tokens)) as server:
        async with client_with(server, {}) as client:
            await client.answer([ask(size=BIG)])
    assert client.budget.spent == standard(tokens)
