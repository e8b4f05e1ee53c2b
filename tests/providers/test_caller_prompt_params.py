"""Text a library caller adds through ``params`` (a system prompt, tools, a response
schema) is billed as input tokens, so the reservation must hold it.

Before, each answer adapter estimated the image, the item's prompt and its framing only:
a ``TeacherClient(params={"system": <2,000-token instructions>})`` was billed far above
what it reserved, the first answer was an overrun and the run stopped. A loopback server
bills each request like the provider does: about one input token per four bytes of every
text it was sent.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.providers.conftest import anthropic_message, ask, loopback_client
from tests.providers.loopback import loopback
from vlmclient import Price, Usage
from vlmclient.providers.wire import params_tokens_upper_bound

PRICE = Price(usd_per_1m_input_tokens=Decimal("1"), usd_per_1m_output_tokens=Decimal("5"))
INSTRUCTIONS = "Look at the image and answer with the single digit it shows, nothing else. " * 100
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "digit",
        "schema": {
            "type": "object",
            "properties": {
                f"field_{i}": {"type": "string", "description": INSTRUCTIONS}
                for i in range(6)
            },
        },
    },
}


def billed_input(body: dict[str, Any]) -> int:
    """What a provider bills as input for this body: every text in it at ~4 bytes a token,
    the image data at a flat 100 tokens (a small image)."""
    text = json.dumps(body)
    for key in ("data", "url"):  # leave the base64 image out of the text count
        text = text.replace(json.dumps(_find(body, key) or ""), "")
    return 100 + len(text) // 4


def _find(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str) and len(v) > 200:
                return v
            found = _find(v, key)
            if found is not None:
                return found
    if isinstance(node, list):
        for v in node:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def anthropic(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, anthropic_message({"input_tokens": billed_input(body), "output_tokens": 2})


def openai(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"content": "7"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": billed_input(body), "completion_tokens": 2},
    }


def gemini(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {
        "candidates": [
            {"content": {"parts": [{"text": "7"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": billed_input(body), "candidatesTokenCount": 2},
    }


@pytest.mark.parametrize(
    ("teacher", "respond", "suffix", "params"),
    [
        ("anthropic:claude-haiku-5-5", anthropic, "", {"system": INSTRUCTIONS}),
        ("openai:gpt-4o-mini", openai, "/v1", {"response_format": SCHEMA}),
        (
            "gemini:gemini-3.8-flash",
            gemini,
            "",
            {"systemInstruction": {"parts": [{"text": INSTRUCTIONS}]}},
        ),
    ],
)
async def test_text_in_caller_params_is_reserved(
    teacher: str, respond: Any, suffix: str, params: dict[str, Any]
) -> None:
    with loopback(respond) as server:
        client = loopback_client(
            teacher, server, "sk-test-params", base_url=server.url + suffix, price=PRICE,
            params=params,
        )  # fmt: skip
        async with client:
            answers = await client.answer([ask()])
        assert answers[0].text == "7"
        billed = billed_input(server.bodies[0])
        assert billed > 1000  # the caller's text is most of the bill
        assert client.overrun is None
        assert client.budget.overruns == 0
        assert client.budget.spent == PRICE.cost(Usage(input_tokens=billed, output_tokens=2))


def test_the_bound_counts_every_byte_of_the_params() -> None:
    assert params_tokens_upper_bound({}) == 0
    text = "é" * 10  # 2 bytes each in UTF-8
    assert params_tokens_upper_bound({"system": text}) >= 20
    assert params_tokens_upper_bound({"system": INSTRUCTIONS}) > len(INSTRUCTIONS)
