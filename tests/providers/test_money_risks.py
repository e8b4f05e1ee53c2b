"""Issue 13's provider money risks: the reservation must cover what the provider bills.

Each test runs the real TeacherClient against a loopback server that bills the way the
provider is documented (or reported) to bill, and checks the reservation covered it
(``budget.overruns == 0``) and that what was charged is what was billed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.providers.conftest import image, nosleep
from tests.providers.loopback import loopback
from vlmclient import AnswerRequest, Budget, ConfigurationError, Price, TeacherClient, Usage
from vlmclient.prices import load_prices
from vlmclient.retry import RetryPolicy

PRICE = Price(usd_per_1m_input_tokens=Decimal("1.25"), usd_per_1m_output_tokens=Decimal("10"))


def openai_biller(image_tokens: int) -> Any:
    """Bills each image at ``image_tokens`` and the whole output allowance it was sent."""

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        out = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        n = body.get("n", 1)
        return 200, {
            "id": "chatcmpl-x",
            "choices": [
                {"index": i, "message": {"content": "seven"}, "finish_reason": "stop"}
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 20 + image_tokens, "completion_tokens": out * n},
        }

    return respond


def _client(url: str, teacher: str, **kw: Any) -> TeacherClient:
    kw.setdefault("price", PRICE)
    return TeacherClient(
        teacher,
        api_key="sk-test",
        base_url=url + "/v1",
        budget=Budget("1.00"),
        retry=RetryPolicy(max_attempts=1, sleep=nosleep),
        **kw,
    )


def _ask(max_tokens: int = 16) -> list[AnswerRequest]:
    return [
        AnswerRequest(image=image((64, 64)), prompt="Which digit?", max_output_tokens=max_tokens)
    ]


async def test_gpt5x_image_billed_at_1844_tokens_stays_within_the_reservation() -> None:
    """gpt-5.2 fell to the gpt-5 row (70 tokens); a 1,844-token image bill overran it."""
    with loopback(openai_biller(1844)) as server:
        async with _client(server.url, "openai:gpt-5.2") as client:
            [result] = await client.answer(_ask())
    assert client.budget.overruns == 0
    assert result.cost_usd == PRICE.cost(Usage(input_tokens=20 + 1844, output_tokens=16))


async def test_params_raising_max_completion_tokens_are_reserved() -> None:
    """params can override max_completion_tokens; the estimate read the item's 16."""
    with loopback(openai_biller(70)) as server:
        client = _client(
            server.url, "openai:gpt-5", params={"max_completion_tokens": 2000, "n": 2}
        )
        async with client:
            await client.answer(_ask(16))
    assert server.bodies[0]["max_completion_tokens"] == 2000
    assert client.budget.overruns == 0
    assert client.budget.spent == PRICE.cost(Usage(input_tokens=90, output_tokens=4000))


async def test_unknown_openai_model_is_refused_before_sending(tmp_path: Path) -> None:
    with loopback(openai_biller(85)) as server:
        client = _client(server.url, "openai:my-vllm-model")
        async with client:
            with pytest.raises(ConfigurationError, match="max_image_tokens"):
                await client.answer(_ask())
        assert server.requests == []

        prices = tmp_path / "prices.json"
        prices.write_text(
            json.dumps(
                {
                    "openai:my-vllm-model": {
                        "usd_per_1m_input_tokens": "1.25",
                        "usd_per_1m_output_tokens": "10",
                        "max_image_tokens": 600,
                    }
                }
            )
        )
        table = load_prices(prices)
        client = _client(server.url, "openai:my-vllm-model", price=None, prices=table)
        async with client:
            _, worst = client.plan("answer", _ask())
            await client.answer(_ask())
    assert len(server.requests) == 1
    assert worst == PRICE.cost(Usage(input_tokens=16 + 13 + 600, output_tokens=16))
    assert client.budget.overruns == 0
