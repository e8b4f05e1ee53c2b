"""Gemini 3 ``thinkingLevel`` values a model does not accept never reach the wire.

Gemini 3 Pro accepts low and high; 3.1 Pro and Flash from 3.7 on (the built-in
gemini-3.8-flash) low, medium and high; any other level is a 400 (not billed), so a
``--reasoning minimal`` harvest on gemini-3.8-flash used to stop at its first answer. A
loopback server answers like Gemini: 400 INVALID_ARGUMENT for a level the model does not
take, else an answer billed by its usage.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import body_of, call_spec, image
from tests.providers.loopback import Loopback, loopback
from vlmclient import AnswerRequest, ConfigurationError, Price, TeacherClient, Usage
from vlmclient.providers import gemini

PRICE = Price(
    usd_per_1m_input_tokens=Decimal("1.50"),
    usd_per_1m_output_tokens=Decimal("7.50"),
    verified_on="2026-12-05",
)
ACCEPTS = {
    "gemini-3.8-flash": {"low", "medium", "high"},
    "gemini-3-pro-preview": {"low", "high"},
}
PROMPT_TOKENS, OUTPUT_TOKENS = 1300, 3


def bill_like_gemini(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    model = path.split("/models/")[1].split(":")[0]
    level = body["generationConfig"].get("thinkingConfig", {}).get("thinkingLevel")
    if level is not None and level not in ACCEPTS[model]:
        return 400, {
            "error": {
                "code": 400,
                "message": f"Thinking level {level} is not supported for this model.",
                "status": "INVALID_ARGUMENT",
            }
        }
    return 200, {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "7"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": OUTPUT_TOKENS,
            "totalTokenCount": PROMPT_TOKENS + OUTPUT_TOKENS,
        },
        "responseId": "r-1",
    }


def gemini_at(server: Loopback, model: str, reasoning: str) -> TeacherClient:
    return TeacherClient(
        f"gemini:{model}",
        api_key="secret-key-123",
        base_url=server.url,
        price=PRICE,
        params={"reasoning": reasoning},
    )


def ask() -> AnswerRequest:
    return AnswerRequest(image=image((64, 48)), prompt="Which digit?", max_output_tokens=8)


async def test_minimal_on_a_model_without_it_sends_low_and_is_billed_once() -> None:
    with loopback(bill_like_gemini) as server:
        async with gemini_at(server, "gemini-3.8-flash", "minimal") as client:
            [answer] = await client.answer([ask()])
    assert answer.text == "7"
    [body] = server.bodies
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "low"}
    billed = PRICE.cost(Usage(input_tokens=PROMPT_TOKENS, output_tokens=OUTPUT_TOKENS))
    assert client.budget.spent == billed


async def test_a_level_the_model_does_not_take_is_refused_before_anything_is_sent() -> None:
    with loopback(bill_like_gemini) as server:
        async with gemini_at(server, "gemini-3-pro-preview", "medium") as client:
            with pytest.raises(ConfigurationError, match="accepts reasoning low, high"):
                await client.answer([ask()])
    assert server.requests == []
    assert client.budget.spent == 0


@pytest.mark.parametrize(
    ("model", "level", "sent"),
    [
        ("gemini-3.8-flash", "minimal", "low"),
        ("gemini-3.8-flash", "medium", "medium"),
        ("gemini-3.7-flash", "minimal", "low"),
        ("gemini-flash-latest", "off", "low"),
        ("gemini-3.1-pro-preview", "medium", "medium"),
        ("gemini-3-pro-preview", "minimal", "low"),
        ("gemini-3-pro-preview", "high", "high"),
        ("gemini-3-flash-preview", "minimal", "minimal"),  # 3 Flash takes all four
        ("gemini-3.5-flash-lite", "minimal", "minimal"),
        ("gemini-3.6-flash", "minimal", "minimal"),
    ],
)
def test_level_sent_per_model(model: str, level: str, sent: str) -> None:
    spec = call_spec("gemini", "answer", model, [ask()], {"reasoning": level})
    config = body_of(gemini.build_request(spec))["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingLevel": sent}
